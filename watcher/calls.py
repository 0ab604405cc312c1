"""View calls for state reads: encode the call, decode the result JSON-safe. Pure.

A ``ViewCall`` is one configured ``[[contracts.state]]`` entry bound to the contract's ABI:
``calldata`` goes into ``eth_call`` (at a block hash, EIP-1898, so the value belongs to exactly
the block the records are tied to), ``decode`` turns the returned hex into the record's value:
the single output's JSON-safe value, or an object keyed by output name (a list when unnamed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError, EncodingError

from chainpush.watcher.abi import FunctionABI
from chainpush.watcher.decode import converter, normalize_filter_value
from chainpush.watcher.errors import ConfigError, DecodeError
from chainpush.watcher.record import state_key


def _encodable(type_str: str, value: Any) -> Any:
    if type_str.startswith(("uint", "int")) and isinstance(value, str):
        return int(value, 0)
    if type_str.startswith("bytes") and isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    return value


@dataclass(frozen=True, slots=True)
class ViewCall:
    contract: str
    address: str
    function: FunctionABI
    args: tuple[Any, ...]
    on: str | tuple[str, ...]  # "block" or event names of this contract
    calldata: str
    inputs: list[Any]  # JSON-safe args, as in the state record

    @classmethod
    def bind(
        cls, contract: str, address: str, fn: FunctionABI, args: Sequence[Any],
        on: str | tuple[str, ...], where: str,
    ) -> ViewCall:
        if fn.state_mutability not in ("view", "pure"):
            raise ConfigError(f"{where}: {fn.name} is {fn.state_mutability}, not a view function")
        if len(args) != len(fn.inputs):
            raise ConfigError(
                f"{where}: {fn.name} takes {len(fn.inputs)} argument(s), got {len(args)}"
            )
        types = [p.type for p in fn.inputs]
        try:
            values = [_encodable(t, a) for t, a in zip(types, args, strict=True)]
            data = fn.selector + abi_encode(types, values).hex()
        except (EncodingError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: cannot encode args {list(args)!r} for {fn.signature}: "
                              f"{exc}") from exc
        inputs = [normalize_filter_value(t, a) for t, a in zip(types, args, strict=True)]
        return cls(contract=contract, address=address, function=fn, args=tuple(args), on=on,
                   calldata=data, inputs=inputs)

    @property
    def key(self) -> str:
        return state_key(self.contract, self.function.name, self.inputs)

    def triggered_by(self, events: set[str]) -> bool:
        return self.on == "block" or bool(events.intersection(self.on))

    def decode(self, result: str) -> Any:
        outs = self.function.outputs
        try:
            values = abi_decode([p.type for p in outs], bytes.fromhex(result.removeprefix("0x")))
        except (DecodingError, ValueError) as exc:
            raise DecodeError(f"cannot decode {self.contract}.{self.function.signature} result "
                              f"{result[:80]!r}: {exc}") from exc
        conv = [converter(p)(v) for p, v in zip(outs, values, strict=True)]
        if len(conv) == 1:
            return conv[0]
        if all(p.name for p in outs):
            return {p.name: v for p, v in zip(outs, conv, strict=True)}
        return conv
