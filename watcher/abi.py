"""Load and validate contract ABIs: the events and view functions the watcher works with.

An ABI file is either a bare JSON list (``abi/<Name>.abi``, what solc's ``--abi`` writes) or an
artifact object with an ``"abi"`` key (``abi/<Name>.json``). Everything here is pure: it reads a
file and returns values; a malformed ABI raises ``InvalidABI`` naming the file and the entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi.exceptions import ABITypeError, ParseError
from eth_abi.grammar import parse as parse_type
from eth_utils.crypto import keccak

from chainpush.watcher.errors import InvalidABI


@dataclass(frozen=True, slots=True)
class Param:
    """One ABI input/output: ``type`` is canonical (tuples collapsed to ``(t1,t2)[]``)."""

    name: str
    type: str
    indexed: bool
    components: tuple[Param, ...] | None  # set for tuple types (and arrays of tuples)


@dataclass(frozen=True, slots=True)
class EventABI:
    name: str
    inputs: tuple[Param, ...]
    anonymous: bool

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(p.type for p in self.inputs)})"

    @property
    def topic0(self) -> str:
        """``0x`` + keccak-256 of the signature (the first topic of a non-anonymous log)."""
        return "0x" + keccak(text=self.signature).hex()

    @property
    def topic_count(self) -> int:
        return (0 if self.anonymous else 1) + sum(1 for p in self.inputs if p.indexed)


@dataclass(frozen=True, slots=True)
class FunctionABI:
    name: str
    inputs: tuple[Param, ...]
    outputs: tuple[Param, ...]
    state_mutability: str

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(p.type for p in self.inputs)})"

    @property
    def selector(self) -> str:
        return "0x" + keccak(text=self.signature)[:4].hex()


@dataclass(frozen=True, slots=True)
class ContractABI:
    """The parts of one contract's ABI the watcher uses, and where it came from."""

    source: str
    events: tuple[EventABI, ...]
    functions: tuple[FunctionABI, ...]

    def event(self, name: str) -> EventABI:
        for ev in self.events:
            if ev.name == name:
                return ev
        known = ", ".join(sorted({e.name for e in self.events})) or "none"
        raise KeyError(f"no event {name!r} in {self.source} (events: {known})")

    def function(self, name: str, n_inputs: int | None = None) -> FunctionABI:
        for fn in self.functions:
            if fn.name == name and (n_inputs is None or len(fn.inputs) == n_inputs):
                return fn
        known = ", ".join(sorted({f.name for f in self.functions})) or "none"
        raise KeyError(f"no function {name!r} in {self.source} (functions: {known})")


def _param(raw: object, where: str) -> Param:
    if not isinstance(raw, Mapping):
        raise InvalidABI(f"{where}: expected an object with 'type', got {raw!r}")
    typ = raw.get("type")
    if not isinstance(typ, str) or not typ:
        raise InvalidABI(f"{where}: 'type' must be a non-empty string, got {typ!r}")
    name = raw.get("name", "")
    if not isinstance(name, str):
        raise InvalidABI(f"{where}: 'name' must be a string, got {name!r}")
    components: tuple[Param, ...] | None = None
    if typ.startswith("tuple"):
        comps = raw.get("components")
        if not isinstance(comps, list):
            raise InvalidABI(f"{where}: tuple type {typ!r} needs a 'components' list")
        components = tuple(_param(c, f"{where}.components[{i}]") for i, c in enumerate(comps))
        typ = "(" + ",".join(c.type for c in components) + ")" + typ[len("tuple"):]
    try:
        parse_type(typ).validate()
    except (ParseError, ABITypeError) as exc:
        raise InvalidABI(f"{where}: {typ!r} is not a valid ABI type ({exc})") from exc
    return Param(name=name, type=typ, indexed=bool(raw.get("indexed", False)),
                 components=components)


def parse_abi(doc: object, source: str) -> ContractABI:
    """Validate an ABI document (list of entries); ``source`` names it in error messages."""
    if isinstance(doc, Mapping) and "abi" in doc:
        doc = doc["abi"]
    if not isinstance(doc, list):
        raise InvalidABI(f"{source}: expected a JSON list of ABI entries, got {type(doc).__name__}")
    events: list[EventABI] = []
    functions: list[FunctionABI] = []
    for i, entry in enumerate(doc):
        where = f"{source}: entry {i}"
        if not isinstance(entry, Mapping):
            raise InvalidABI(f"{where}: expected an object, got {entry!r}")
        kind = entry.get("type", "function")
        name = entry.get("name")
        if kind in ("event", "function") and (not isinstance(name, str) or not name):
            raise InvalidABI(f"{where}: {kind} needs a non-empty 'name', got {name!r}")
        assert isinstance(name, str) or kind not in ("event", "function")
        inputs = entry.get("inputs", [])
        if not isinstance(inputs, list):
            raise InvalidABI(f"{where} ({name}): 'inputs' must be a list")
        params = tuple(_param(p, f"{where} ({name}).inputs[{j}]") for j, p in enumerate(inputs))
        if kind == "event":
            ev = EventABI(name=str(name), inputs=params, anonymous=bool(entry.get("anonymous")))
            indexed = sum(1 for p in params if p.indexed)
            if indexed > (4 if ev.anonymous else 3):
                raise InvalidABI(f"{where} ({name}): {indexed} indexed inputs is too many")
            events.append(ev)
        elif kind == "function":
            outputs = entry.get("outputs", [])
            if not isinstance(outputs, list):
                raise InvalidABI(f"{where} ({name}): 'outputs' must be a list")
            outs = tuple(_param(p, f"{where} ({name}).outputs[{j}]") for j, p in enumerate(outputs))
            mut = entry.get("stateMutability")
            if mut is None:
                mut = "view" if entry.get("constant") else "nonpayable"
            functions.append(FunctionABI(name=str(name), inputs=params, outputs=outs,
                                         state_mutability=str(mut)))
        elif kind not in ("constructor", "fallback", "receive", "error"):
            raise InvalidABI(f"{where}: unknown entry type {kind!r}")
    return ContractABI(source=source, events=tuple(events), functions=tuple(functions))


def load_abi(path: Path) -> ContractABI:
    """Read and validate ``path`` (``.abi`` list or ``.json`` artifact with ``"abi"``)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidABI(f"{path}: cannot read ABI file ({exc.strerror or exc})") from exc
    try:
        doc: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidABI(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    return parse_abi(doc, str(path))


def find_abi(abi_dir: Path, name: str) -> Path:
    """``abi_dir/<name>.abi``, else ``abi_dir/<name>.json``; ``InvalidABI`` if neither exists."""
    for suffix in (".abi", ".json"):
        candidate = abi_dir / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    raise InvalidABI(f"{abi_dir}/{name}.abi: no such ABI file (nor {name}.json)")


def types_of(params: Sequence[Param]) -> list[str]:
    return [p.type for p in params]
