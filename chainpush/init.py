"""``chainpush init DIR``: scaffold a team's own chainpush project.

Writes, from the templates shipped in this package (``chainpush/templates/project``):

* ``chainpush.toml``: ``[node]`` and ``[watch]`` for the dev stack, every other section as
  comments, and no active ``[[contracts]]`` entry (one that names an undeployed contract would
  fail ``chainpush watch``): the commented example becomes valid once ``chainpush deploy`` ran;
* ``contracts/Counter.sol``: a small example contract, the team's to replace;
* ``abi/`` (``chainpush compile`` fills it), ``package.json`` (anvil and solc from npm, pinned
  to the versions chainpush is tested with) and ``.gitignore``;

then runs ``npm install`` in DIR when ``npm`` is on PATH (``--no-install`` skips it) and prints
the next steps. Existing files are kept, never overwritten; a DIR that already has a
``chainpush.toml`` is refused.
"""

from __future__ import annotations

import argparse
import importlib.resources
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from chainpush import procs, project
from chainpush.watcher.compile import SOLC_VERSION

#: template file → where it goes in the project (dotfiles are stored without the dot, which
#: some packaging tools drop)
TEMPLATE_FILES = {
    "chainpush.toml": "chainpush.toml",
    "contracts/Counter.sol": "contracts/Counter.sol",
    "package.json": "package.json",
    "gitignore": ".gitignore",
}
EMPTY_DIRS = ("abi",)


class InitError(RuntimeError):
    """The project cannot be created (message names the path and the way out)."""


@dataclass(frozen=True, slots=True)
class Scaffold:
    root: Path
    written: tuple[str, ...]
    kept: tuple[str, ...]


def project_name(directory: Path) -> str:
    """A name for ``[watch] name`` and package.json from the directory name: lower case,
    ``[a-z0-9._-]`` only (npm's rule; no ``:``, which a checkpoint id reserves)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", directory.resolve().name.lower()).strip("-._")
    return name or "app"


def templates() -> Traversable:
    return importlib.resources.files("chainpush") / "templates" / "project"


def render(text: str, name: str) -> str:
    return (text.replace("{{name}}", name)
            .replace("{{anvil_version}}", procs.ANVIL_VERSION)
            .replace("{{solc_version}}", SOLC_VERSION))


def scaffold(root: Path) -> Scaffold:
    """Write the project files into ``root`` (created if needed); existing files are kept."""
    if (root / project.CONFIG_FILE).exists():
        raise InitError(f"{root / project.CONFIG_FILE} exists: {root} is already a chainpush "
                        f"project; edit it, or pick another directory: chainpush init OTHER_DIR")
    if root.exists() and not root.is_dir():
        raise InitError(f"{root} exists and is not a directory: chainpush init OTHER_DIR")
    name = project_name(root)
    written, kept = [], []
    for source, target in TEMPLATE_FILES.items():
        path = root / target
        if path.exists():
            kept.append(target)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(templates().joinpath(source).read_text("utf-8"), name), "utf-8")
        written.append(target)
    for directory in EMPTY_DIRS:
        (root / directory).mkdir(parents=True, exist_ok=True)
    return Scaffold(root=root, written=tuple(written), kept=tuple(kept))


def npm_install(root: Path) -> int:
    """``npm install`` in ``root``, its output passed through; the exit code."""
    npm = shutil.which("npm")
    if npm is None:
        return 127
    print(f"==> npm install in {root} (anvil and solc; a minute the first time)", flush=True)
    try:
        return subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=root,
                              check=False).returncode
    except OSError as exc:
        print(f"chainpush init: cannot run npm: {exc}", file=sys.stderr)
        return 126


def next_steps(root: Path, *, installed: bool) -> str:
    where = str(root) if root.is_absolute() else f"./{root}"
    steps = [f"cd {where}"]
    if not installed:
        steps.append("npm install                  # anvil + solc (or put a native solc/anvil "
                     "on PATH)")
    steps += [
        "chainpush compile            # contracts/*.sol → abi/",
        "chainpush dev up             # anvil, redis, MongoDB-protocol server in ./.chainpush",
        'eval "$(chainpush dev env)"  # point watch/run at it (deploy and call find it anyway)',
        "chainpush deploy Counter     # records deployments/31337.json",
        "chainpush call Counter count # a view call: 0",
        "chainpush call Counter increment 5 --send",
        "# uncomment [[contracts]] name = \"Counter\" in chainpush.toml, then:",
        "chainpush run                # watcher + push nodes + page on http://127.0.0.1:8700",
        "chainpush dev down",
    ]
    return "next steps:\n" + "\n".join(f"  {s}" for s in steps)


def run(args: argparse.Namespace) -> int:
    root = Path(args.directory)
    try:
        done = scaffold(root)
    except (InitError, OSError) as exc:
        print(f"chainpush init: {exc}", file=sys.stderr)
        return 1
    print(f"created chainpush project {project_name(root)} in {root}")
    for target in done.written:
        print(f"  wrote {target}")
    for target in done.kept:
        print(f"  kept  {target} (already there)")
    installed, code = False, 0
    if args.no_install:
        pass
    elif shutil.which("npm") is None:
        print("npm is not on PATH: install Node.js 20+ and run `npm install` in the project, or "
              "put a native solc and anvil on PATH")
    else:
        status = npm_install(root)
        installed = status == 0
        if not installed:
            print(f"chainpush init: npm install failed in {root} (exit {status}); run it again: "
                  f"cd {root} && npm install", file=sys.stderr)
            code = 1
    print(next_steps(root, installed=installed))
    return code


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "init", help="create a chainpush project (chainpush.toml, contracts/, package.json)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog="examples:\n  chainpush init app            # then: cd app\n"
        "  chainpush init . --no-install # here, without running npm",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", metavar="DIR", help="the project directory (created)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not run `npm install` (default: run it when npm is on PATH)")
    parser.set_defaults(func=run)
