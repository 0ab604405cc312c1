"""Where a team's chainpush project is, and where its Node.js tools live.

A *project* is the directory holding ``chainpush.toml`` (what ``chainpush init`` creates), found
from the current directory upwards as git finds ``.git``; without one anywhere above, the
current directory itself. Everything chainpush writes for a project stays inside it:

* ``<project>/.chainpush/dev/``: the dev stack's state (``chainpush dev up``),
* ``<project>/abi/``: compiled contracts (``chainpush compile``),
* ``<project>/deployments/<chain id>.json``: addresses (``chainpush deploy``),

the last two moved by ``[watch] abi_dir`` / ``deployments`` in ``chainpush.toml`` (:func:`layout`).

Nothing here depends on where chainpush itself is installed (a wheel in site-packages, or this
repository's checkout): tools come from the project's ``node_modules`` (``npm install`` in the
project), resolved the way Node resolves ``require()`` — ``node_modules`` in the directory or
any directory above it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "chainpush.toml"
#: the dev stack's state, relative to the project directory
STATE_DIR = Path(".chainpush") / "dev"


def find_project(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (default: cwd) holding ``chainpush.toml``,
    else ``start`` itself (absolute)."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / CONFIG_FILE).is_file():
            return directory
    return here


def state_dir(project: Path | None = None) -> Path:
    """``<project>/.chainpush/dev``: where ``chainpush dev`` keeps its state."""
    return (project or find_project()) / STATE_DIR


def node_package(name: str, start: Path) -> Path | None:
    """The directory of npm package ``name`` as ``require()`` would find it from ``start``:
    ``<dir>/node_modules/<name>`` for ``start`` and each directory above it; None if absent."""
    here = start.resolve()
    for directory in (here, *here.parents):
        candidate = directory / "node_modules" / name
        if (candidate / "package.json").is_file():
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a project keeps compiled contracts and deployment records."""

    abi_dir: Path  # where `chainpush compile` writes: the first of abi_dirs
    deployments: Path  # a directory of <chain id>.json, or one such file
    #: every directory the watcher looks for ABIs in, in order (``[watch] abi_dir``)
    abi_dirs: tuple[Path, ...] = ()

    def deployments_file(self, chain_id: int) -> Path:
        if self.deployments.suffix == ".json":
            return self.deployments
        return self.deployments / f"{chain_id}.json"


def layout(root: Path) -> Layout:
    """``[watch] abi_dir`` and ``[watch] deployments`` of ``root/chainpush.toml`` (relative to
    it), else ``root/abi`` (then ``out``, ``artifacts``) and ``root/deployments``: the places
    the watcher reads. ``abi_dir`` may be a list: compile writes into its first entry.

    Raises :class:`ValueError` naming the file when it is not valid TOML.
    """
    watch: Mapping[str, Any] = {}
    config = root / CONFIG_FILE
    if config.is_file():
        try:
            watch = tomllib.loads(config.read_text()).get("watch", {})
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{config}: not valid TOML ({exc})") from exc
    dirs = watch.get("abi_dir", ["abi", "out", "artifacts"])
    if isinstance(dirs, str):
        dirs = [dirs]
    if not isinstance(dirs, list) or not dirs or not all(isinstance(d, str) for d in dirs):
        raise ValueError(f"{config}: [watch] abi_dir must be a string or a non-empty list of "
                         f"strings, got {dirs!r}")
    abi_dirs = tuple(root / d for d in dirs)
    return Layout(abi_dir=abi_dirs[0], abi_dirs=abi_dirs,
                  deployments=root / str(watch.get("deployments", "deployments")))


def find_config(explicit: Path | None = None, start: Path | None = None) -> Path | None:
    """The configuration file a command uses: ``explicit`` (``--config``) as given, else
    ``chainpush.toml`` of the project (:func:`find_project`: at or above ``start``, default
    cwd), else None."""
    if explicit is not None:
        return explicit
    candidate = find_project(start) / CONFIG_FILE
    return candidate if candidate.is_file() else None
