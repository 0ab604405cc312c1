"""Bind a ``Config`` to one chain: ABIs loaded, addresses resolved, names checked.

Everything a typo can break is checked here, before the watcher touches the node's logs, and
reported as a ``ConfigError`` naming the configuration file and key: a broken ABI file, an event
or function name the ABI lacks, a filter on an argument the event lacks, a contract with no
address and no deployments entry. (That the address holds code needs the node: ``Watcher``.)

Where things come from (``watcher.artifacts``): a contract's address is ``[[contracts]]
address``, else the entry ``deployment`` (default ``name``) of ``[watch] deployments``
(``<chain id>.json``, what ``chainpush deploy`` writes), else that future of the Hardhat Ignition
deployment of the chain (``[watch] ignition``). Its ABI is ``[[contracts]] abi`` (default
``name``) in the first ``[watch] abi_dir`` that has it (chainpush, Foundry or Hardhat layout),
else the artifact Ignition stored for the future the address came from.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from chainpush.watcher.abi import ContractABI, load_abi
from chainpush.watcher.artifacts import (
    ArtifactNotFound,
    IgnitionDeployment,
    find_artifact,
    ignition_dirs,
    read_ignition,
)
from chainpush.watcher.calls import ViewCall
from chainpush.watcher.config import Config, ContractConfig, deployments_file, read_deployments
from chainpush.watcher.decode import ContractSpec, LogDecoder, checksum, normalize_filter_value
from chainpush.watcher.errors import ConfigError, InvalidABI
from chainpush.watcher.factory import Template


@dataclass(frozen=True, slots=True)
class Bound:
    """The watch configuration bound to chain ``chain_id``."""

    chain_id: int
    specs: tuple[ContractSpec, ...]
    confirmations: Mapping[str, int]
    calls: tuple[ViewCall, ...]
    start_block: int
    #: per contract: ``[watch] start_block`` if set, else its deployment block, else 0 (where a
    #: contract added after the checkpoint is caught up from)
    start_blocks: Mapping[str, int]
    #: factory templates (``[[contracts]] factory``): watched at the addresses their factory
    #: announces (``watcher.factory``)
    templates: tuple[Template, ...] = ()

    def decoder(self) -> LogDecoder:
        return LogDecoder(self.chain_id, self.specs, [t.spec for t in self.templates])

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.specs]

    def only(self, names: Collection[str]) -> Bound:
        """The same binding restricted to the contracts ``names``."""
        return replace(self, specs=tuple(s for s in self.specs if s.name in names),
                       calls=tuple(c for c in self.calls if c.contract in names),
                       templates=tuple(t for t in self.templates if t.name in names))

    def coverage(self) -> list[dict[str, str]]:
        """What a checkpoint covers, one entry per contract (``coverage_entry``); a template's
        address is its factory's (``factory:<address>:<event>:<arg>``)."""
        out = [coverage_entry(s) for s in self.specs]
        addresses = {s.name: s.address for s in self.specs}
        for t in self.templates:
            entry = coverage_entry(t.spec)
            entry["address"] = f"factory:{addresses.get(t.factory)}:{t.event}:{t.arg}"
            out.append(entry)
        return out

    def log_filter(self) -> dict[str, object]:
        """The address (and, when every contract names its events, topic0) part of every
        ``eth_getLogs`` filter."""
        flt: dict[str, object] = {"address": self.addresses}
        topics = self.decoder().topics_filter()
        if topics is not None:
            flt["topics"] = topics
        return flt


def coverage_entry(spec: ContractSpec) -> dict[str, str]:
    """(name, address, event selection) of one contract, as the checkpoint records it: a
    contract of the config whose entry the checkpoint lacks was not followed up to its block.
    The selection (events and argument filters) is canonical JSON in a string: filter values
    may be integers beyond MongoDB's 64 bits."""
    selection = {
        "events": sorted(spec.events) if spec.events is not None else None,
        "filters": {ev: {arg: sorted(str(v) for v in values) for arg, values in args.items()}
                    for ev, args in spec.filters.items()},
    }
    return {"name": spec.name, "address": spec.address,
            "selection": json.dumps(selection, sort_keys=True, separators=(",", ":"))}


def bind(config: Config, chain_id: int | None) -> Bound:
    """Resolve and check every contract. With ``chain_id`` None (no node yet), contracts that
    need the deployments file get a placeholder address: only ``--check-config`` does that."""
    src = config.source
    deployments: dict[str, dict[str, Any]] = {}
    dep_path = deployments_file(config.watch, chain_id) if chain_id is not None else None
    if dep_path is not None and chain_id is not None:
        deployments = read_deployments(dep_path, chain_id, src)
    ignition = _ignition(config, chain_id)
    specs: list[ContractSpec] = []
    calls: list[ViewCall] = []
    dep_blocks: list[int] = []
    starts: dict[str, int] = {}
    for c in config.contracts:
        if c.factory is not None:
            continue  # templates after every factory is bound (below)
        seen = len(dep_blocks)
        address, future = _address(config, c, deployments, dep_path, ignition, chain_id,
                                   dep_blocks)
        abi = _abi(config, c, ignition, future)
        own = dep_blocks[-1] if len(dep_blocks) > seen else 0
        starts[c.name] = config.watch.start_block if config.watch.start_block is not None else own
        events = _events(src, c, abi)
        filters = _filters(src, c, abi)
        specs.append(ContractSpec(c.name, address, abi, events, filters))
        for j, s in enumerate(c.state):
            where = f"{src}: [[contracts]] {c.name}.state[{j}]"
            try:
                fn = abi.function(s.function, len(s.args))
            except KeyError as exc:
                raise ConfigError(f"{where}.function: {exc.args[0]}") from exc
            if s.on != "block":
                for e in s.on:
                    if e not in {ev.name for ev in abi.events}:
                        raise ConfigError(f"{where}.on: no event {e!r} in {abi.source}")
            calls.append(ViewCall.bind(c.name, address, fn, s.args, s.on, where))
    by_name = {s.name: s for s in specs}
    templates: list[Template] = []
    for c in config.contracts:
        if c.factory is None:
            continue
        abi = _abi(config, c, ignition, None)
        spec = ContractSpec(c.name, "0x" + "00" * 20, abi, _events(src, c, abi),
                            _filters(src, c, abi))
        templates.append(_template(src, c, spec, by_name))
        starts[c.name] = starts[c.factory.contract]
    start = config.watch.start_block
    if start is None:
        start = min(dep_blocks) if dep_blocks and len(dep_blocks) == len(specs) else 0
    return Bound(
        chain_id=chain_id or 0, specs=tuple(specs),
        confirmations={c.name: config.confirmations(c) for c in config.contracts},
        calls=tuple(calls), start_block=start, start_blocks=starts,
        templates=tuple(templates),
    )


def _template(src: str, c: ContractConfig, spec: ContractSpec,
              factories: Mapping[str, ContractSpec]) -> Template:
    """Check ``c.factory`` against the factory's ABI (``Config`` checked the names)."""
    assert c.factory is not None
    f = c.factory
    key = f"{src}: [[contracts]] {c.name}.factory"
    factory = factories[f.contract]
    try:
        ev = factory.abi.event(f.event)
    except KeyError as exc:
        names = ", ".join(sorted({e.name for e in factory.abi.events})) or "none"
        raise ConfigError(f"{key}.event: no event {f.event!r} in {factory.abi.source} of "
                          f"[[contracts]] {f.contract} (events: {names})") from exc
    types = {p.name: p.type for p in ev.inputs}
    if f.arg not in types:
        raise ConfigError(f"{key}.arg: event {ev.signature} has no argument {f.arg!r} "
                          f"(arguments: {', '.join(n for n in types if n) or 'none'})")
    if types[f.arg] != "address":
        raise ConfigError(f"{key}.arg: {f.arg!r} of {ev.signature} is a {types[f.arg]}, not an "
                          "address")
    return Template(spec, f.contract, f.event, f.arg)


def _ignition(config: Config, chain_id: int | None) -> list[IgnitionDeployment]:
    """The Ignition deployments of ``chain_id`` (every one when it is None: no node yet)."""
    root = config.watch.ignition
    if root is None:
        return []
    if config.watch.ignition_required and not root.exists():
        raise ConfigError(f"{config.source}: [watch] ignition {root}: no such directory "
                          "(npx hardhat ignition deploy writes ignition/deployments/)")
    return [read_ignition(d, where=config.source) for d in ignition_dirs(root, chain_id)]


def _abi(config: Config, c: ContractConfig, ignition: list[IgnitionDeployment],
         future: str | None) -> ContractABI:
    """``c.abi`` from ``[watch] abi_dir``, else the Ignition artifact of its future."""
    try:
        return load_abi(find_artifact(config.watch.abi_dirs, c.abi))
    except ArtifactNotFound as exc:
        missing = exc
    except InvalidABI as exc:
        raise InvalidABI(f"{config.source}: [[contracts]] {c.name}.abi: {exc}") from exc
    candidates = [d.artifact(future) for d in ignition if future is not None]
    if future is None:  # no node yet, or an explicit address: the future of this name
        for d in ignition:
            key = d.lookup(c.deployment or c.name, where=config.source)
            if key is not None:
                candidates.append(d.artifact(key))
    for path in candidates:
        if path.is_file():
            return load_abi(path)
    extra = f" (nor {', '.join(str(p) for p in candidates)})" if candidates else ""
    raise ArtifactNotFound(f"{config.source}: [[contracts]] {c.name}.abi: {missing}{extra}")


def _address(
    config: Config, c: ContractConfig, deployments: Mapping[str, Mapping[str, Any]],
    dep_path: object, ignition: list[IgnitionDeployment], chain_id: int | None,
    dep_blocks: list[int],
) -> tuple[str, str | None]:
    """The contract's address, and the Ignition future id it came from (if it did)."""
    if c.address is not None:
        return checksum(c.address), None
    entry = c.deployment or c.name
    if chain_id is None:
        return "0x" + "00" * 20, None  # resolved once the node tells the chain id
    found = deployments.get(entry)
    if isinstance(found, Mapping) and isinstance(found.get("address"), str):
        if isinstance(found.get("block"), int):
            dep_blocks.append(int(found["block"]))
        return checksum(str(found["address"])), None
    for deployment in ignition:
        future = deployment.lookup(entry, where=config.source)
        if future is not None:
            try:
                return checksum(deployment.addresses[future]), future
            except ValueError as exc:
                raise ConfigError(f"{config.source}: {deployment.addresses_file} {future}: "
                                  f"{exc}") from exc
    nor = "".join(f", nor a future {entry!r} in {d.addresses_file}" for d in ignition)
    raise ConfigError(
        f"{config.source}: [[contracts]] {c.name} has no address and {dep_path} has no "
        f"entry {entry!r} for chain {chain_id}{nor} (set address, or deploy it: "
        f"chainpush deploy {entry})"
    )


def _events(src: str, c: ContractConfig, abi: ContractABI) -> frozenset[str] | None:
    if c.events is None:
        return None
    names = {e.name for e in abi.events}
    for e in c.events:
        if e not in names:
            raise ConfigError(
                f"{src}: [[contracts]] {c.name}.events: no event {e!r} in {abi.source} "
                f"(events: {', '.join(sorted(names)) or 'none'})"
            )
    return frozenset(c.events)


def _filters(
    src: str, c: ContractConfig, abi: ContractABI
) -> dict[str, dict[str, frozenset[Any]]]:
    out: dict[str, dict[str, frozenset[Any]]] = {}
    for ev_name, args in c.filters.items():
        key = f"{src}: [[contracts]] {c.name}.filters.{ev_name}"
        try:
            ev = abi.event(ev_name)
        except KeyError as exc:
            raise ConfigError(f"{key}: {exc.args[0]}") from exc
        types = {p.name: p.type for p in ev.inputs}
        out[ev_name] = {}
        for arg, values in args.items():
            if arg not in types:
                raise ConfigError(f"{key}.{arg}: event {ev.signature} has no argument {arg!r}")
            try:
                out[ev_name][arg] = frozenset(normalize_filter_value(types[arg], v) for v in values)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{key}.{arg}: bad value for {types[arg]}: {exc}") from exc
    return out
