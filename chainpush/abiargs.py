"""Command-line text ↔ ABI values, for ``chainpush deploy`` and ``chainpush call`` (pure).

Arguments are parsed by the ABI type of the parameter they fill, the way ``cast`` does:

* ``uint<N>`` / ``int<N>``: decimal or ``0x`` hex, ``_`` allowed (``1_000``), range-checked;
* ``address``: ``0x`` + 40 hex digits (a mixed-case address must carry a valid EIP-55 checksum);
* ``bool``: ``true`` / ``false`` (also ``1`` / ``0``);
* ``bytes`` / ``bytes<N>``: ``0x`` hex (exactly N bytes for ``bytes<N>``);
* ``string``: the text as is;
* arrays (``T[]``, ``T[k]``) and tuples: JSON (``'[1, 2]'``, ``'["0x…", true]'``); inside JSON a
  number may be a JSON number or a string, so big integers need no float precision.

Results are rendered for people and scripts: one scalar prints plainly (``2020``, ``true``,
``0x…``, the string itself); several values, arrays and tuples print as one JSON line.
Every error is an :class:`ArgumentError` naming the parameter, its type and the text given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from eth_utils.address import is_checksum_address, to_checksum_address

_ARRAY = re.compile(r"^(?P<inner>.+)\[(?P<size>\d*)\]$")
_INT = re.compile(r"^(?P<kind>u?int)(?P<bits>\d*)$")
_BYTES_N = re.compile(r"^bytes(?P<size>\d+)$")


class ArgumentError(ValueError):
    """A command-line argument does not fit its ABI parameter, or the function is unknown."""


def signature(entry: Mapping[str, Any]) -> str:
    """``name(type,…)`` of an ABI function, event or constructor (tuples expanded)."""
    types = ",".join(_canonical(p) for p in entry.get("inputs", []))
    return f"{entry.get('name', 'constructor')}({types})"


def _canonical(param: Mapping[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical(c) for c in param.get("components", []))
        return f"({inner}){kind[len('tuple'):]}"
    return kind


def describe_inputs(entry: Mapping[str, Any]) -> str:
    """``uint256 amount, address to`` (what a usage message shows)."""
    return ", ".join(f"{_canonical(p)} {p.get('name') or '_'}".strip()
                     for p in entry.get("inputs", [])) or "no arguments"


def select_function(abi: Sequence[Mapping[str, Any]], name: str, n_args: int) -> Mapping[str, Any]:
    """The ABI function called ``name`` (or given as ``name(types)``) taking ``n_args``."""
    functions = [e for e in abi if e.get("type") == "function"]
    if "(" in name:
        matches = [f for f in functions if signature(f) == name.replace(" ", "")]
    else:
        matches = [f for f in functions if f.get("name") == name]
    if not matches:
        known = ", ".join(sorted({signature(f) for f in functions})) or "none"
        raise ArgumentError(f"no function {name!r} in the ABI (functions: {known})")
    fitting = [f for f in matches if len(f.get("inputs", [])) == n_args]
    if len(fitting) == 1:
        return fitting[0]
    if not fitting:
        shapes = "; ".join(f"{signature(f)}: {describe_inputs(f)}" for f in matches)
        raise ArgumentError(f"{name} takes {_counts(matches)} argument(s), got {n_args} ({shapes})")
    sigs = ", ".join(signature(f) for f in fitting)
    raise ArgumentError(
        f"{name} is overloaded ({sigs}): name one by signature, e.g. {signature(fitting[0])!r}"
    )


def _counts(entries: Sequence[Mapping[str, Any]]) -> str:
    return " or ".join(sorted({str(len(e.get("inputs", []))) for e in entries}))


def constructor(abi: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The ABI constructor entry (an implicit one taking nothing if the ABI has none)."""
    for entry in abi:
        if entry.get("type") == "constructor":
            return entry
    return {"type": "constructor", "inputs": [], "stateMutability": "nonpayable"}


def is_view(entry: Mapping[str, Any]) -> bool:
    return entry.get("stateMutability") in ("view", "pure")


def parse_args(entry: Mapping[str, Any], texts: Sequence[str], *, what: str) -> list[Any]:
    """``texts`` (one per parameter of ``entry``) as ABI values; ``what`` names the call."""
    params = list(entry.get("inputs", []))
    if len(texts) != len(params):
        raise ArgumentError(
            f"{what} takes {len(params)} argument(s) ({describe_inputs(entry)}), "
            f"got {len(texts)}"
        )
    return [parse_param(p, t, what=what) for p, t in zip(params, texts, strict=True)]


def parse_param(param: Mapping[str, Any], text: str, *, what: str = "argument") -> Any:
    """One command-line argument as the value of ABI parameter ``param``."""
    label = f"{what}: {param.get('name') or 'argument'} ({_canonical(param)})"
    kind = str(param["type"])
    if _ARRAY.match(kind) or kind.startswith("tuple"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArgumentError(f"{label} must be JSON, e.g. '[1, 2]'; got {text!r} ({exc})") \
                from exc
        return _from_json(param, kind, value, label)
    return _scalar(kind, text, label)


def _from_json(param: Mapping[str, Any], kind: str, value: Any, label: str) -> Any:
    array = _ARRAY.match(kind)
    if array:
        if not isinstance(value, list):
            raise ArgumentError(f"{label} must be a JSON array, got {value!r}")
        size = array["size"]
        if size and len(value) != int(size):
            raise ArgumentError(f"{label} needs exactly {size} element(s), got {len(value)}")
        return [_from_json(param, array["inner"], v, label) for v in value]
    if kind == "tuple":
        components = list(param.get("components", []))
        if isinstance(value, dict):
            missing = [c["name"] for c in components if c.get("name") not in value]
            if missing:
                raise ArgumentError(f"{label} lacks {', '.join(missing)}")
            value = [value[c["name"]] for c in components]
        if not isinstance(value, list) or len(value) != len(components):
            raise ArgumentError(
                f"{label} must be a JSON array of {len(components)} value(s) or an object"
            )
        return tuple(_from_json(c, str(c["type"]), v, f"{label}.{c.get('name') or i}")
                     for i, (c, v) in enumerate(zip(components, value, strict=True)))
    if isinstance(value, bool):
        if kind != "bool":
            raise ArgumentError(f"{label}: {value!r} is not a {kind}")
        return value
    if isinstance(value, int) and _INT.match(kind):
        return _scalar(kind, str(value), label)
    if not isinstance(value, str):
        raise ArgumentError(f"{label}: expected a {kind} (a JSON string or number), got {value!r}")
    return _scalar(kind, value, label)


def _scalar(kind: str, text: str, label: str) -> Any:
    integer = _INT.match(kind)
    if integer:
        bits = int(integer["bits"] or 256)
        digits = text.strip()
        try:
            value = int(digits, 16 if digits.lower().startswith(("0x", "-0x")) else 10)
        except ValueError as exc:
            raise ArgumentError(f"{label} must be an integer (decimal or 0x hex), got {text!r}") \
                from exc
        low, high = (0, 2**bits - 1) if integer["kind"] == "uint" else \
            (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if not low <= value <= high:
            raise ArgumentError(f"{label}: {value} is out of range {low}..{high}")
        return value
    if kind == "address":
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", text):
            raise ArgumentError(f"{label} must be 0x + 40 hex digits, got {text!r}")
        mixed = text[2:] != text[2:].lower() and text[2:] != text[2:].upper()
        if mixed and not is_checksum_address(text):
            raise ArgumentError(f"{label}: {text} has a wrong EIP-55 checksum (typo?)")
        return to_checksum_address(text)
    if kind == "bool":
        lowered = text.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise ArgumentError(f"{label} must be true or false, got {text!r}")
    if kind == "string":
        return text
    if kind == "bytes" or _BYTES_N.match(kind):
        if not re.fullmatch(r"0x([0-9a-fA-F]{2})*", text):
            raise ArgumentError(f"{label} must be 0x + an even number of hex digits, got {text!r}")
        raw = bytes.fromhex(text[2:])
        sized = _BYTES_N.match(kind)
        if sized and len(raw) != int(sized["size"]):
            raise ArgumentError(f"{label} must be exactly {sized['size']} byte(s), got {len(raw)}")
        return raw
    raise ArgumentError(f"{label}: type {kind} is not supported on the command line")


def to_json(value: Any) -> Any:
    """A decoded ABI value made JSON-safe: bytes → ``0x`` hex, tuples → lists."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def render_result(outputs: Sequence[Mapping[str, Any]], value: Any) -> str:
    """What ``chainpush call`` prints for a view call's decoded ``value`` (one line)."""
    values = list(value) if len(outputs) > 1 else [value]
    if len(outputs) == 1 and not isinstance(values[0], list | tuple):
        scalar = to_json(values[0])
        if isinstance(scalar, bool):
            return "true" if scalar else "false"
        return str(scalar)
    if not outputs:
        return "(no return value)"
    return json.dumps(to_json(values if len(outputs) > 1 else values[0]))
