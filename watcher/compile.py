"""Compile ``contracts/*.sol`` into ``abi/``: the geth tutorial's first step (DESIGN-NOTES §1).

For each contract two files are written, both deterministic (sorted keys, two-space indent,
trailing newline, no timestamps, no absolute paths), so they can be committed and checked in CI:

* ``abi/<Name>.abi``: the ABI JSON array alone, like the tutorial's ``calldemo.abi``; this is what
  the watcher loads to decode events.
* ``abi/<Name>.json``: ``contractName``, ``sourceName``, ``abi``, ``bytecode``,
  ``deployedBytecode`` (``0x`` hex), ``compiler`` (``version`` and the ``settings`` that determine
  the bytecode) and ``sourceHash`` (sha256 of the source file), read by the deploy script.

Bytecode is reproducible: the settings are fixed here (and repeated in ``hardhat.config.js``),
source unit names are relative (``contracts/CallDemo.sol``), and ``metadata.bytecodeHash`` is
``"none"`` so the bytecode does not embed a hash of the metadata (which would change with file
paths and comments). The CBOR tail then only carries the compiler version.

The compiler is driven through its standard-JSON interface. Which ``solc`` runs is chosen by
:func:`find_solc`, in this order: an explicit path (``--solc``), a native solc of
:data:`SOLC_VERSION` (installed by ``solcx.install_solc`` or on ``PATH``), else :data:`SHIM`, a
``solc``-compatible script over the npm ``solc`` wasm build of the *project* (``node_modules/solc``
in the directory above ``contracts/`` or higher: ``npm install`` in the project; no native solc
is installable on machines without internet, ENVIRONMENT.md). Native binaries run through
py-solc-x; the shim ships inside this package and runs as ``node SHIM`` with
``CHAINPUSH_SOLC_JS`` naming the project's ``node_modules/solc``, so neither its file mode nor
where chainpush is installed matters.

``chainpush compile`` writes the files; ``chainpush compile --check`` exits 1 naming every file in
``abi/`` that is missing, stale or extra compared with what compiling would produce.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import solcx
import solcx.install
import solcx.wrapper
from solcx.exceptions import SolcError, SolcInstallationError, UnknownOption, UnknownValue

from chainpush.project import find_project, layout, node_package
from chainpush.watcher.artifacts import ArtifactNotFound, find_artifact, read_artifact, split_name
from chainpush.watcher.errors import CompileError, ConfigError, InvalidABI

logger = logging.getLogger(__name__)

#: ``solc`` over the project's npm package (``node_modules/solc``), shipped as package data;
#: see its header.
SHIM: Final = Path(__file__).resolve().parent / "tools" / "solc"
#: The compiler the committed ``abi/`` files were produced with (package.json pins npm solc to it).
#: A native solc of another version is passed over: its bytecode would differ from ``abi/``.
SOLC_VERSION: Final = "0.8.37"

#: Everything in the settings that changes the bytecode. ``hardhat.config.js`` repeats these.
#: ``cancun``: every node we target (anvil, hardhat, eth-tester/py-evm) runs it; solc 0.8.37's
#: default (osaka) may emit opcodes older nodes reject.
COMPILER_SETTINGS: Final[Mapping[str, Any]] = {
    "evmVersion": "cancun",
    "metadata": {"bytecodeHash": "none"},
    "optimizer": {"enabled": True, "runs": 200},
}
OUTPUT_SELECTION: Final[Mapping[str, Any]] = {
    "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]},
}
#: Files in the output directory this module owns (others are left alone).
OUTPUT_SUFFIXES: Final = (".abi", ".json")


@dataclass(frozen=True, slots=True)
class Source:
    """One Solidity file: its source unit name (``contracts/CallDemo.sol``) and text."""

    unit_name: str
    content: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Artifact:
    """A compiled contract, as written to ``abi/<contract_name>.abi`` and ``.json``."""

    contract_name: str
    source_name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    settings: dict[str, Any]
    source_hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "contractName": self.contract_name,
            "sourceName": self.source_name,
            "abi": self.abi,
            "bytecode": self.bytecode,
            "deployedBytecode": self.deployed_bytecode,
            "compiler": {"version": self.compiler_version, "settings": self.settings},
            "sourceHash": self.source_hash,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, where: str) -> Artifact:
        """Inverse of :meth:`to_json`; raises :class:`InvalidABI` naming ``where``."""
        try:
            compiler = data["compiler"]
            artifact = cls(
                contract_name=data["contractName"],
                source_name=data["sourceName"],
                abi=data["abi"],
                bytecode=data["bytecode"],
                deployed_bytecode=data["deployedBytecode"],
                compiler_version=compiler["version"],
                settings=compiler["settings"],
                source_hash=data["sourceHash"],
            )
        except (KeyError, TypeError) as exc:
            raise InvalidABI(f"{where}: not a chainpush artifact (missing or bad {exc})") from exc
        if not isinstance(artifact.abi, list) or not all(isinstance(e, dict) for e in artifact.abi):
            raise InvalidABI(f"{where}: 'abi' must be a list of objects")
        for key in ("bytecode", "deployed_bytecode"):
            value = getattr(artifact, key)
            if not isinstance(value, str) or not value.startswith("0x"):
                raise InvalidABI(f"{where}: {key} must be a 0x-prefixed hex string, got {value!r}")
        return artifact


def dumps(value: Any) -> str:
    """The one serialization of every output file: sorted keys, indent 2, trailing newline."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render(artifacts: Mapping[str, Artifact]) -> dict[str, str]:
    """File name (``CallDemo.abi``, ``CallDemo.json``) → exact file text, for every artifact."""
    files: dict[str, str] = {}
    for name in sorted(artifacts):
        files[f"{name}.abi"] = dumps(artifacts[name].abi)
        files[f"{name}.json"] = dumps(artifacts[name].to_json())
    return files


# --- standard JSON in and out (pure) ---


def standard_json_input(sources: Sequence[Source]) -> dict[str, Any]:
    """The solc standard-JSON input compiling ``sources`` with :data:`COMPILER_SETTINGS`."""
    return {
        "language": "Solidity",
        "sources": {s.unit_name: {"content": s.content} for s in sorted(sources, key=_unit)},
        "settings": {
            **copy.deepcopy(dict(COMPILER_SETTINGS)),
            "outputSelection": copy.deepcopy(dict(OUTPUT_SELECTION)),
        },
    }


def _unit(source: Source) -> str:
    return source.unit_name


def format_errors(errors: Sequence[Mapping[str, Any]], *, severity: str = "error") -> str:
    """The compiler's formatted messages (``file:line:col`` and a code excerpt) of ``severity``."""
    parts = []
    for error in errors:
        if error.get("severity") != severity:
            continue
        text = error.get("formattedMessage") or f"{error.get('type')}: {error.get('message')}"
        parts.append(str(text).rstrip())
    return "\n\n".join(parts)


def artifacts_from_output(
    output: Mapping[str, Any], sources: Sequence[Source], compiler_version: str
) -> dict[str, Artifact]:
    """Turn solc's standard-JSON output into artifacts keyed by contract name.

    Raises :class:`CompileError` if the output carries errors or two source files define
    contracts of the same name (``abi/`` is keyed by name).
    """
    errors = output.get("errors", [])
    if any(e.get("severity") == "error" for e in errors):
        raise CompileError(f"solc rejected the sources:\n{format_errors(errors)}")
    by_unit = {s.unit_name: s for s in sources}
    artifacts: dict[str, Artifact] = {}
    for unit_name in sorted(output.get("contracts", {})):
        if unit_name not in by_unit:
            continue  # an imported file from outside the contracts directory
        for name, compiled in sorted(output["contracts"][unit_name].items()):
            if name in artifacts:
                raise CompileError(
                    f"contract {name} is defined in both {artifacts[name].source_name} and "
                    f"{unit_name}: abi/ needs unique contract names"
                )
            evm = compiled.get("evm", {})
            artifacts[name] = Artifact(
                contract_name=name,
                source_name=unit_name,
                abi=compiled.get("abi", []),
                bytecode="0x" + evm.get("bytecode", {}).get("object", ""),
                deployed_bytecode="0x" + evm.get("deployedBytecode", {}).get("object", ""),
                compiler_version=compiler_version,
                settings=copy.deepcopy(dict(COMPILER_SETTINGS)),
                source_hash=by_unit[unit_name].sha256,
            )
    return artifacts


# --- comparing abi/ with what compiling produces (pure) ---

Problem = Literal["missing", "stale", "extra"]


@dataclass(frozen=True, slots=True)
class Difference:
    """One file of the output directory that does not match compilation."""

    file_name: str
    problem: Problem
    detail: str

    def describe(self, out_dir: str | Path) -> str:
        return f"{Path(out_dir) / self.file_name}: {self.problem} ({self.detail})"


def diff_outputs(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[Difference]:
    """Files of ``actual`` (name → text) that are missing, stale or extra versus ``expected``.

    Byte-exact: any difference is stale; the detail names what differs (ABI, bytecode,
    sourceHash, ...) so a reviewer knows whether a source change or a compiler change caused it.
    """
    diffs: list[Difference] = []
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            diffs.append(Difference(name, "missing", "compiling produces it"))
        elif name not in expected:
            diffs.append(Difference(name, "extra", "no contract in the sources produces it"))
        elif expected[name] != actual[name]:
            diffs.append(Difference(name, "stale", _what_differs(expected[name], actual[name])))
    return diffs


def _what_differs(expected: str, actual: str) -> str:
    try:
        old = json.loads(actual)
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc}"
    new = json.loads(expected)
    if old == new:
        return "formatting differs"
    if not isinstance(new, dict) or not isinstance(old, dict):
        return "ABI differs"
    keys = sorted(k for k in new.keys() | old.keys() if new.get(k) != old.get(k))
    return ", ".join(keys) + (" differs" if len(keys) == 1 else " differ")


# --- I/O ---


def read_sources(contracts_dir: Path) -> list[Source]:
    """Every ``*.sol`` under ``contracts_dir``, named ``<dir name>/<relative path>``."""
    base = contracts_dir.resolve()
    if not base.is_dir():
        raise CompileError(f"contracts directory {contracts_dir} does not exist: put your .sol "
                           "files there, or start a project: chainpush init DIR")
    sources = [
        Source(f"{base.name}/{path.relative_to(base).as_posix()}", path.read_text("utf-8"))
        for path in sorted(base.rglob("*.sol"))
    ]
    if not sources:
        raise CompileError(f"no .sol files in {contracts_dir}: add your contracts there")
    return sources


def read_outputs(out_dir: Path) -> dict[str, str]:
    """The files of ``out_dir`` this module owns (``*.abi``, ``*.json``), name → text."""
    if not out_dir.is_dir():
        return {}
    return {
        p.name: p.read_text("utf-8")
        for p in sorted(out_dir.iterdir())
        if p.is_file() and p.suffix in OUTPUT_SUFFIXES
    }


def write_outputs(out_dir: Path, files: Mapping[str, str]) -> list[Path]:
    """Make ``out_dir`` hold exactly ``files`` (among ``*.abi``/``*.json``); return what changed.

    Unchanged files are not rewritten; files of ours that compilation no longer produces (a
    contract was renamed or removed) are deleted. Each write is atomic.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    current = read_outputs(out_dir)
    changed: list[Path] = []
    for name, text in sorted(files.items()):
        if current.get(name) == text:
            continue
        path = out_dir / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(text.encode("utf-8"))
        tmp.replace(path)
        changed.append(path)
    for name in sorted(current.keys() - files.keys()):
        (out_dir / name).unlink()
        logger.info("removed %s: no contract produces it any more", out_dir / name)
        changed.append(out_dir / name)
    return changed


def solc_version(solc_binary: Path, project: Path | None = None) -> str:
    """``X.Y.Z+commit.HASH`` of ``solc_binary`` (platform suffix dropped: same for wasm/native).

    For the shim, ``project`` says whose ``node_modules/solc`` it runs (default: cwd's).
    """
    try:
        st = solc_binary.resolve().stat()
    except OSError as exc:
        raise CompileError(f"cannot run solc at {solc_binary}: {exc}") from exc
    solc_js = _solc_js(solc_binary, project)
    # Asking the shim costs ~0.5 s (it loads the wasm compiler); ask once per binary.
    return _cached_version(solc_binary.resolve(), st.st_mtime_ns, st.st_size, solc_js)


@functools.lru_cache(maxsize=8)
def _cached_version(solc_binary: Path, mtime_ns: int, size: int, solc_js: Path | None) -> str:
    return parse_version(_banner(solc_binary, solc_js), where=str(solc_binary))


def parse_version(banner: str, *, where: str) -> str:
    """The version in ``solc --version`` output, matched the way py-solc-x matches it."""
    match = re.search(solcx.wrapper.VERSION_REGEX, banner)
    if match is None:
        raise CompileError(f"{where} --version printed no solc version: {banner.strip()!r}")
    return match.group(0)


def _solc_js(solc_binary: Path, project: Path | None) -> Path | None:
    """The npm solc the shim should load (None: ``solc_binary`` is not the shim)."""
    if solc_binary.resolve() != SHIM:
        return None
    return node_package("solc", project or Path.cwd())


def _command(solc_binary: Path, solc_js: Path | None) -> tuple[list[str], dict[str, str] | None]:
    """argv prefix and environment that run ``solc_binary`` (the shim through ``node``)."""
    if solc_binary.resolve() != SHIM:
        return [str(solc_binary)], None
    env = dict(os.environ)
    if solc_js is not None:
        env["CHAINPUSH_SOLC_JS"] = str(solc_js)
    return [shutil.which("node") or "node", str(SHIM)], env


def _banner(solc_binary: Path, solc_js: Path | None = None) -> str:
    argv, env = _command(solc_binary, solc_js)
    try:
        done = subprocess.run(
            [*argv, "--version"], capture_output=True, text=True, timeout=60, check=True, env=env,
        )
    except subprocess.CalledProcessError as exc:
        raise CompileError(
            f"cannot run solc at {solc_binary}: {str(exc.stderr or exc.stdout or exc).strip()}"
        ) from exc
    except (OSError, subprocess.SubprocessError) as exc:
        raise CompileError(f"cannot run solc at {solc_binary}: {exc}") from exc
    return str(done.stdout)


def missing_compiler_message(project: Path, *, have_node: bool, rejected: Sequence[str]) -> str:
    """The one message naming every way to get a compiler, ending with the likeliest fix."""
    lines = [f"no Solidity compiler for {project}. Any one of these works:"]
    lines.append(f"  - a native solc {SOLC_VERSION} on PATH, or installed by py-solc-x: "
                 f"python -c \"import solcx; solcx.install_solc('{SOLC_VERSION}')\"")
    lines.append(f"  - npm's wasm solc in the project: `npm install solc@{SOLC_VERSION}` in "
                 f"{project} (the package.json of `chainpush init` lists it: `npm install`)"
                 + ("" if have_node else "; this needs Node.js 20+ on PATH, which is missing"))
    lines.append("  - an explicit compiler: --solc PATH or CHAINPUSH_SOLC=PATH")
    if rejected:
        lines.append("  (passed over: " + "; ".join(rejected) + ")")
    lines.append(f"fix: cd {project} && npm install" if have_node
                 else "fix: install Node.js 20+, then `npm install` in the project")
    return "\n".join(lines)


def find_solc(explicit: str | Path | None = None, project: Path | None = None) -> Path:
    """The solc to use: ``explicit``, else a native solc of :data:`SOLC_VERSION`, else the shim.

    Native candidates are solcx's installs (``~/.solcx``) and ``solc`` on ``PATH`` unless that
    is our shim or another wasm wrapper. The shim needs ``node`` and ``node_modules/solc`` in
    ``project`` (default: cwd) or a directory above it. Raises :class:`CompileError` naming
    every option when none is there.
    """
    if explicit is not None:
        path = Path(shutil.which(explicit) or explicit)  # a bare name is looked up on PATH
        if not path.is_file() or not os.access(path, os.X_OK):
            raise CompileError(f"--solc {explicit}: not an executable file")
        return path
    candidates: list[Path] = []
    installed = []
    # solcx creates ~/.solcx when asked; a read-only `--check` should not touch $HOME
    solcx_dir = Path(os.environ.get("SOLCX_BINARY_PATH") or Path.home() / ".solcx")
    if solcx_dir.is_dir():
        try:
            installed = solcx.get_installed_solc_versions()
        except (OSError, SolcInstallationError) as exc:
            logger.info("ignoring py-solc-x installs in %s: %s", solcx_dir, exc)
    for installed_version in installed:
        if str(installed_version) == SOLC_VERSION:
            candidates.append(Path(solcx.install.get_executable(installed_version)))
    on_path = shutil.which("solc")
    if on_path is not None and Path(on_path).resolve() != SHIM.resolve():
        candidates.append(Path(on_path))
    rejected: list[str] = []
    for candidate in candidates:
        try:
            banner = _banner(candidate)
            version = parse_version(banner, where=str(candidate)).partition("+")[0]
        except CompileError as exc:
            logger.info("ignoring %s", exc)
            rejected.append(str(exc))
            continue
        if version != SOLC_VERSION:
            logger.info("ignoring solc %s at %s: abi/ is built with %s",
                        version, candidate, SOLC_VERSION)
            rejected.append(f"solc {version} at {candidate}: not {SOLC_VERSION}")
        elif "emscripten" in banner.lower():
            logger.debug("ignoring wasm solc wrapper at %s", candidate)
        else:
            return candidate
    where = (project or Path.cwd()).resolve()
    have_node = shutil.which("node") is not None
    if not have_node or node_package("solc", where) is None:
        raise CompileError(missing_compiler_message(where, have_node=have_node,
                                                    rejected=rejected))
    return SHIM


def _compile_with_shim(
    input_json: Mapping[str, Any], base_path: Path, solc_js: Path | None
) -> dict[str, Any]:
    """Standard JSON through ``node SHIM`` (py-solc-x cannot pass the environment it needs)."""
    argv, env = _command(SHIM, solc_js)
    try:
        done = subprocess.run(
            [*argv, "--standard-json", "--base-path", str(base_path)],
            input=json.dumps(input_json), capture_output=True, text=True, timeout=300, env=env,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise CompileError(f"solc at {SHIM} failed: {exc}") from exc
    if done.returncode != 0:
        raise CompileError(f"solc at {SHIM} failed: {done.stderr.strip()}")
    output = json.loads(done.stdout)
    if not isinstance(output, dict):
        raise CompileError(f"solc at {SHIM} printed {type(output).__name__}, not an object")
    return output


def compile_contracts(
    contracts_dir: str | Path, solc_binary: str | Path | None = None
) -> dict[str, Artifact]:
    """Compile every ``*.sol`` under ``contracts_dir``; contract name → :class:`Artifact`.

    Raises :class:`CompileError` with solc's ``file:line:col`` messages when a source is
    rejected, or when no usable compiler is found.
    """
    contracts_dir = Path(contracts_dir)
    sources = read_sources(contracts_dir)
    project = contracts_dir.resolve().parent  # imports resolve like the unit names
    binary = find_solc(solc_binary, project)
    version = solc_version(binary, project)
    logger.info("compiling %d source(s) in %s with solc %s (%s)",
                len(sources), contracts_dir, version, binary)
    try:
        if binary.resolve() == SHIM:
            output = _compile_with_shim(standard_json_input(sources), project,
                                        _solc_js(binary, project))
            if any(e.get("severity") == "error" for e in output.get("errors", [])):
                raise CompileError(
                    f"solc rejected the sources:\n{format_errors(output['errors'])}"
                )
        else:
            output = solcx.compile_standard(
                standard_json_input(sources), solc_binary=binary, base_path=project,
            )
    except SolcError as exc:
        errors = getattr(exc, "error_dict", None)
        if errors:
            raise CompileError(f"solc rejected the sources:\n{format_errors(errors)}") from exc
        raise CompileError(f"solc at {binary} failed: {exc}") from exc
    except (UnknownOption, UnknownValue) as exc:  # a solc too old for standard JSON options
        raise CompileError(f"solc at {binary} failed: {exc}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise CompileError(f"solc at {binary} gave no usable output: {exc}") from exc
    for message in format_errors(output.get("errors", []), severity="warning").split("\n\n"):
        if message:
            logger.warning("solc: %s", message)
    return artifacts_from_output(output, sources, version)


def check(
    contracts_dir: str | Path, out_dir: str | Path, solc_binary: str | Path | None = None
) -> list[Difference]:
    """What differs between ``out_dir`` and a fresh compilation (empty: up to date)."""
    expected = render(compile_contracts(contracts_dir, solc_binary))
    return diff_outputs(expected, read_outputs(Path(out_dir)))


def write(
    contracts_dir: str | Path, out_dir: str | Path, solc_binary: str | Path | None = None
) -> list[Path]:
    """Compile and bring ``out_dir`` up to date; returns the files written or removed."""
    return write_outputs(Path(out_dir), render(compile_contracts(contracts_dir, solc_binary)))


def load_artifact(abi_dir: str | Path, name: str) -> Artifact:
    """Contract ``name``'s ABI + bytecode in ``abi_dir``: ``<name>.json`` as written by
    ``chainpush compile``, else a Foundry ``out/`` or Hardhat ``artifacts/`` file
    ``**/<File>.sol/<name>.json`` (``name`` may be ``<File>.sol:<Name>``; see
    :mod:`watcher.artifacts`). Of those, ``compiler_version``, ``settings`` and ``source_hash``
    are what the file records (Foundry's metadata), else empty."""
    directory = Path(abi_dir)
    path = directory / f"{name}.json"
    if not path.is_file():
        try:
            path = find_artifact([directory], name, what="compiled artifact")
        except ArtifactNotFound as exc:
            raise ConfigError(
                f"no compiled artifact {path} (nor a Foundry or Hardhat "
                f"**/<File>.sol/{split_name(name)[1]}.json in {directory}): "
                "run `chainpush compile`"
            ) from exc
        if path.suffix == ".abi":
            raise ConfigError(f"{path} has the ABI but no bytecode: run `chainpush compile`")
    found = read_artifact(path)
    if not found.document:
        raise InvalidABI(f"{path}: expected a JSON object, got list")
    if found.layout == "chainpush":
        return Artifact.from_json(found.document, where=str(path))
    if found.bytecode is None:
        raise InvalidABI(f"{path}: no bytecode in this {found.layout} artifact")
    settings = found.document.get("metadata", {})
    settings = settings.get("settings", {}) if isinstance(settings, Mapping) else {}
    return Artifact(
        contract_name=found.contract_name, source_name=found.source_name or "",
        abi=found.abi, bytecode=found.bytecode,
        deployed_bytecode=found.deployed_bytecode or "0x",
        compiler_version=found.compiler_version or "",
        settings=dict(settings) if isinstance(settings, Mapping) else {}, source_hash="",
    )


# --- command line ---


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``chainpush compile``."""
    parser = subparsers.add_parser(
        "compile",
        help="compile contracts/ into abi/ (<Name>.abi and <Name>.json)",
        description="Compile the project's Solidity contracts (contracts/*.sol) into "
        "abi/<Name>.abi (the ABI, what the watcher decodes with) and abi/<Name>.json "
        "(ABI + bytecode, what `chainpush deploy` deploys). With --check, write nothing and "
        "exit 1 if abi/ is not what compiling would produce.\n\nThe compiler: --solc, else a "
        f"native solc {SOLC_VERSION} (PATH or py-solc-x), else the project's node_modules/solc "
        "(npm install).",
        epilog="examples:\n  chainpush compile                # in the project (where "
        "chainpush.toml is)\n  chainpush compile --check        # CI: fail if abi/ is stale\n"
        "  chainpush compile --contracts src --out build/abi",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--contracts", default=None, metavar="DIR",
                        help="directory of .sol files (default: <project>/contracts, the project "
                        "being the directory of the nearest chainpush.toml, else cwd)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output directory (default: [watch] abi_dir of chainpush.toml, "
                        "else <project>/abi)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 naming each missing, stale or extra file; write nothing")
    parser.add_argument("--solc", default=os.environ.get("CHAINPUSH_SOLC"), metavar="PATH",
                        help="solc executable (env CHAINPUSH_SOLC; default: a native solc "
                        f"{SOLC_VERSION} if installed, else the project's node_modules/solc)")
    parser.set_defaults(func=run)


def _relative(path: Path) -> Path:
    """``path`` relative to cwd when below it (shorter messages), else absolute."""
    try:
        return path.relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def run(args: argparse.Namespace) -> int:
    """``chainpush compile``: 0 on success, 1 on a compile error or (with --check) stale output."""
    project = find_project()
    try:
        abi_dir = layout(project).abi_dir  # [watch] abi_dir, where the watcher reads
    except ValueError as exc:
        print(f"chainpush compile: {exc}", file=sys.stderr)
        return 1
    args.contracts = args.contracts or str(_relative(project / "contracts"))
    args.out = args.out or str(_relative(abi_dir))
    try:
        if args.check:
            diffs = check(args.contracts, args.out, args.solc)
            if diffs:
                lines = [d.describe(args.out) for d in diffs]
                print(f"{args.out} is out of date with {args.contracts} "
                      "(run `chainpush compile`):\n  " + "\n  ".join(lines),
                      file=sys.stderr)
                return 1
            print(f"{args.out} is up to date with {args.contracts}")
            return 0
        changed = write(args.contracts, args.out, args.solc)
    except CompileError as exc:
        print(f"chainpush compile: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: {len(changed)} file(s) written or removed" if changed
          else f"{args.out} already up to date")
    return 0
