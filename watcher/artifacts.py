"""Where a contract's ABI and bytecode are: the build outputs teams already have.

Three layouts are recognised in every ABI directory (``[watch] abi_dir``), tried in this order:

* chainpush's own (``chainpush compile``): ``<dir>/<Name>.abi`` (the ABI list) or
  ``<dir>/<Name>.json`` (ABI + bytecode + compiler record);
* Foundry's ``out/`` (``forge build``): ``<dir>/<File>.sol/<Name>.json`` with ``abi``,
  ``bytecode.object``, ``deployedBytecode.object`` and ``metadata``;
* Hardhat's ``artifacts/`` (``npx hardhat compile``): ``<dir>/contracts/…/<File>.sol/<Name>.json``
  with ``_format`` ``hh-sol-artifact-1``, ``sourceName``, ``abi``, ``bytecode`` (a string).

Foundry and Hardhat share the ``<File>.sol/<Name>.json`` shape (at any depth below the directory;
``build-info/`` and Hardhat's ``*.dbg.json`` are not artifacts); what a file holds is read from its
content, not its place. A name may be qualified by its source file, as the compilers print it
(``"src/Tokens.sol:Vault"``, ``"Tokens.sol:Vault"``), when two files define contracts of one name.

Hardhat Ignition (``npx hardhat ignition deploy``) keeps one directory per deployment,
``ignition/deployments/chain-<chain id>/``: ``deployed_addresses.json`` maps future ids
(``"<Module>#<Future>"``, the future id defaulting to the contract name) to addresses, and
``artifacts/<Module>#<Future>.json`` holds each one's Hardhat artifact. It records no deployment
block (only its journal, an internal format, does).

Pure apart from reading files: no node, no network. Errors are :class:`InvalidABI` /
:class:`ConfigError` naming every place looked at.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from chainpush.watcher.errors import ConfigError, InvalidABI

Layout = Literal["chainpush", "foundry", "hardhat", "ignition"]

#: the directories searched when ``[watch] abi_dir`` is not set: chainpush compile's output,
#: Foundry's and Hardhat's defaults (``foundry.toml`` ``out``, ``hardhat.config.js``
#: ``paths.artifacts``)
DEFAULT_ABI_DIRS = ("abi", "out", "artifacts")
#: where Hardhat Ignition keeps its deployments, relative to the project
DEFAULT_IGNITION_DIR = Path("ignition") / "deployments"
IGNITION_ADDRESSES = "deployed_addresses.json"
#: build-info files (Foundry ``out/build-info``, Hardhat ``artifacts/build-info``) are whole
#: compiler inputs and outputs, not per-contract artifacts
_NOT_ARTIFACTS = {"build-info", "cache"}


class ArtifactNotFound(InvalidABI):
    """No directory searched has the contract; the message names every place looked at."""


@dataclass(frozen=True, slots=True)
class ContractArtifact:
    """One contract's build output, whatever tool wrote it."""

    path: Path
    layout: Layout
    contract_name: str
    source_name: str | None  # ``contracts/Vault.sol`` when the file says so
    abi: list[dict[str, Any]]
    bytecode: str | None  # ``0x`` hex (unlinked); None when the file carries only an ABI
    deployed_bytecode: str | None
    compiler_version: str | None
    document: Mapping[str, Any]  # the file's whole JSON object (empty for a bare ABI list)


def split_name(name: str) -> tuple[str | None, str]:
    """``"src/Tokens.sol:Vault"`` → ``("src/Tokens.sol", "Vault")``; ``"Vault"`` → ``(None, …)``."""
    source, sep, contract = name.rpartition(":")
    if not sep:
        return None, name
    if not source or not contract:
        raise InvalidABI(f"abi {name!r}: expected <Name> or <File>.sol:<Name>")
    return source, contract


def _tree_candidates(directory: Path, contract: str) -> list[Path]:
    """``<directory>/**/<File>.sol/<contract>.json``, build-info and caches left out."""
    found = []
    for path in directory.rglob(f"{contract}.json"):
        rel = path.relative_to(directory)
        if path.parent.name.endswith(".sol") and not _NOT_ARTIFACTS & set(rel.parts[:-1]):
            found.append(path)
    return sorted(found)


def _ends_with(path: str, suffix: str) -> bool:
    parts, want = Path(path).parts, Path(suffix).parts
    return len(want) <= len(parts) and parts[len(parts) - len(want):] == want


def find_artifact(dirs: Sequence[Path], name: str, *, what: str = "ABI") -> Path:
    """The file of contract ``name`` (``Vault`` or ``<File>.sol:Vault``): in the first of
    ``dirs`` that has it, chainpush's ``<Name>.abi`` / ``<Name>.json``, else a Foundry or Hardhat
    ``<File>.sol/<Name>.json``.

    Raises :class:`InvalidABI` naming every place looked at when none has it, and naming the
    candidates (and how to qualify the name) when one directory has several.
    """
    source, contract = split_name(name)
    looked: list[str] = []
    for directory in dirs:
        if not directory.is_dir():
            looked.append(f"{directory}/ (no such directory)")
            continue
        if source is None:
            for suffix in (".abi", ".json"):
                if (directory / f"{contract}{suffix}").is_file():
                    return directory / f"{contract}{suffix}"
        tree = _tree_candidates(directory, contract)
        if source is not None:
            tree = [p for p in tree if _ends_with(_source_of(p, directory), source)]
        if len(tree) == 1:
            return tree[0]
        if len(tree) > 1:
            options = ", ".join(f'"{_source_of(p, directory)}:{contract}"' for p in tree)
            raise InvalidABI(
                f"{len(tree)} artifacts of {contract} in {directory}: "
                + ", ".join(str(p.relative_to(directory)) for p in tree)
                + f"; say which with [[contracts]] abi = one of {options}"
            )
        flat = "" if source is not None else f"{contract}.abi, {contract}.json, "
        looked.append(f"{directory}/ ({flat}**/{source or '<File>.sol'}/{contract}.json)")
    raise ArtifactNotFound(
        f"no {what} for {name}: looked in " + "; ".join(looked)
        + ". Build it (chainpush compile, forge build or npx hardhat compile), or point "
        "[watch] abi_dir at the build output"
    )


def _source_of(path: Path, directory: Path) -> str:
    """The source unit of a ``<File>.sol/<Name>.json`` artifact: what the file records
    (Hardhat ``sourceName``, Foundry ``metadata.settings.compilationTarget``), else its folder
    relative to ``directory``."""
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        doc = None
    if isinstance(doc, dict):
        recorded = _recorded_source(doc)
        if recorded:
            return recorded
    return path.parent.relative_to(directory).as_posix()


def _recorded_source(doc: Mapping[str, Any]) -> str | None:
    if isinstance(doc.get("sourceName"), str):
        return str(doc["sourceName"])
    metadata = _metadata(doc)
    target = metadata.get("settings", {}).get("compilationTarget") if metadata else None
    if isinstance(target, dict) and len(target) == 1:
        return str(next(iter(target)))
    return None


def _metadata(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """Foundry's ``metadata`` object (or its ``rawMetadata`` string), else empty."""
    meta = doc.get("metadata")
    if isinstance(meta, str):
        meta = _loads(meta)
    if not isinstance(meta, dict) and isinstance(doc.get("rawMetadata"), str):
        meta = _loads(doc["rawMetadata"])
    return meta if isinstance(meta, dict) else {}


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _hex(value: Any, key: str, where: Path) -> str | None:
    """A bytecode field: ``"0x…"`` (chainpush, Hardhat) or ``{"object": "0x…"}`` (Foundry)."""
    if isinstance(value, Mapping):
        value = value.get("object")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidABI(f"{where}: {key} must be a hex string, got {type(value).__name__}")
    return value if value.startswith("0x") else "0x" + value


def read_artifact(path: Path, *, layout: Layout | None = None) -> ContractArtifact:
    """Read one artifact file of any of the layouts (told apart by content)."""
    try:
        doc: Any = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise InvalidABI(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise InvalidABI(f"{path} is not valid JSON: {exc}") from exc
    stem = path.stem if path.suffix in (".abi", ".json") else path.name
    if isinstance(doc, list):  # chainpush's <Name>.abi: the ABI alone
        return ContractArtifact(path, "chainpush", stem, None, doc, None, None, None, {})
    if not isinstance(doc, dict):
        raise InvalidABI(f"{path}: expected a JSON object, got {type(doc).__name__}")
    abi = doc.get("abi")
    if not isinstance(abi, list) or not all(isinstance(e, dict) for e in abi):
        raise InvalidABI(f"{path}: 'abi' must be a list of objects")
    if layout is None:
        if isinstance(doc.get("bytecode"), Mapping) or "methodIdentifiers" in doc:
            layout = "foundry"
        elif str(doc.get("_format", "")).startswith("hh"):
            layout = "hardhat"
        else:
            layout = "chainpush"
    metadata = _metadata(doc)
    compiler = doc.get("compiler")
    version = (compiler.get("version") if isinstance(compiler, Mapping)
               else metadata.get("compiler", {}).get("version"))
    name = doc.get("contractName")
    if not isinstance(name, str):
        target = metadata.get("settings", {}).get("compilationTarget")
        name = (str(next(iter(target.values()))) if isinstance(target, dict) and target
                else stem.rpartition("#")[2])
    return ContractArtifact(
        path=path, layout=layout, contract_name=name, source_name=_recorded_source(doc),
        abi=abi, bytecode=_hex(doc.get("bytecode"), "bytecode", path),
        deployed_bytecode=_hex(doc.get("deployedBytecode"), "deployedBytecode", path),
        compiler_version=str(version) if isinstance(version, str) else None, document=doc,
    )


# --- Hardhat Ignition -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IgnitionDeployment:
    """One Ignition deployment directory: its future ids and addresses."""

    directory: Path
    addresses: Mapping[str, str]  # "<Module>#<Future>" → address

    @property
    def addresses_file(self) -> Path:
        return self.directory / IGNITION_ADDRESSES

    def lookup(self, entry: str, *, where: str) -> str | None:
        """The future id for ``entry``: itself when it is one (``"VaultModule#Vault"``), else
        the one future named ``entry`` in any module; None if none. Several → ConfigError."""
        if entry in self.addresses:
            return entry
        if "#" in entry:
            return None
        matches = sorted(k for k in self.addresses if k.rpartition("#")[2] == entry)
        if len(matches) > 1:
            raise ConfigError(
                f"{where}: {self.addresses_file} has {len(matches)} futures named {entry} "
                f"({', '.join(matches)}): set deployment = one of them"
            )
        return matches[0] if matches else None

    def artifact(self, future_id: str) -> Path:
        """``artifacts/<future id>.json``: the Hardhat artifact Ignition stored for it."""
        return self.directory / "artifacts" / f"{future_id}.json"


def ignition_dirs(root: Path, chain_id: int | None) -> list[Path]:
    """The Ignition deployment directories of ``root`` for ``chain_id``.

    ``root`` is either one deployment directory (it holds ``deployed_addresses.json``: a
    custom ``--deployment-id``; trusted to be of the node's chain) or the deployments
    directory holding ``chain-<id>/``. With ``chain_id`` None (no node yet), every deployment
    directory below ``root``.
    """
    if (root / IGNITION_ADDRESSES).is_file():
        return [root]
    if chain_id is not None:
        one = root / f"chain-{chain_id}"
        return [one] if (one / IGNITION_ADDRESSES).is_file() else []
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / IGNITION_ADDRESSES).is_file())


def read_ignition(directory: Path, *, where: str) -> IgnitionDeployment:
    """``deployed_addresses.json`` of one deployment directory (a JSON object of strings)."""
    path = directory / IGNITION_ADDRESSES
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}: Ignition deployment {path} is unreadable ({exc})") from exc
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise ConfigError(f"{where}: Ignition deployment {path} must be a JSON object mapping "
                          "future ids (\"Module#Contract\") to addresses")
    return IgnitionDeployment(directory, dict(doc))
