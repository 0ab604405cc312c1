"""The watch configuration: ``chainpush.toml`` parsed into frozen dataclasses.

Sections this module reads (others, e.g. ``[push]``, belong to other components and are ignored)::

    [node]                     # where the chain is; several endpoints = failover, in this order
    urls = ["/tmp/anvil.ipc", "ws://127.0.0.1:8545"]   # any of http(s)://, ws(s)://, IPC paths
    rpc = "http://127.0.0.1:8545"                       # also: ws = …, ipc = … (str or list)
    poll_interval_s = 1.0      # head polling over HTTP; safety net under subscriptions
    timeout_s = 10.0
    chain_id = 31337           # optional: refuse a node on another chain

    [watch]
    name = "demo"              # checkpoint id is "<chain id>:<name>"
    confirmations = 0          # default per contract: 0 = pending at once, K = confirmed K deep
    start_block = 0            # default: the lowest deployment block, else 0
    max_range = 2000           # largest eth_getLogs span; shrinks on provider refusals
    reorg_window = 64          # blocks kept to detect and undo reorgs (> every confirmations)
    finality_depth = 12        # K = 0 contracts: `confirmed` follows `pending` this many blocks
                               # deep (1 … reorg_window - 1; no "off": every pending record is
                               # confirmed at the latest when its block leaves the window);
                               # default 12, or reorg_window - 1 when that is smaller
    finality = "depth"         # or "tag": K = 0 records are confirmed once the node's
                               # `finalized` block reaches them (finality_depth only on a node
                               # without the tag); keep reorg_window above the finality lag
    abi_dir = "abi"            # or a list; default ["abi", "out", "artifacts"]: chainpush
                               # compile's, Foundry's and Hardhat's outputs (watcher.artifacts)
    deployments = "deployments"   # a directory of <chain_id>.json, or one such file
    ignition = "ignition/deployments"  # Hardhat Ignition: chain-<id>/deployed_addresses.json
    lease_s = 3.0              # one active watcher per name: a standby takes over after this
    lease_renew_s = 1.0        # the leader renews this often (default lease_s / 3)
    metrics_port = 9464        # /metrics and /healthz on 127.0.0.1 (default: not served)
    wallet_activity = ["erc20", "erc721", "erc1155"]   # standard transfers of any contract
                               # from/to a wallet with a `user:` subscriber (default: none)

    [[contracts]]
    name = "DemoToken"
    abi = "DemoToken"          # abi_dir/<abi>.abi, .json or **/<File>.sol/<abi>.json; or
                               # "<File>.sol:<Name>"; default: name
    address = "0x…"            # default: the deployments file entry named `deployment` or
                               # `name`, else the Ignition future of that id / name
    events = ["Transfer", "Message"]   # or "all" (default)
    confirmations = 2
    [contracts.filters.Transfer]       # keep only matching args (any of the listed values)
    to = ["0x…"]
    factory = {contract = "Factory", event = "PairCreated", arg = "pair"}
                               # a template instead of address: every child the factory's
                               # event announces (docs/watcher.md, Factory-created contracts)
    [[contracts.state]]                 # view calls; a state record is emitted on change
    function = "balanceOf"
    args = ["0x…"]
    on = "block"               # or a list of this contract's event names

    [stores]                   # shared with collect
    mongo_uri = "mongodb://127.0.0.1:27017/?directConnection=true"
    database = "chainpush"

Relative paths are relative to the configuration file. Every error names the file and key.
Environment variables are applied by the CLI (``watcher.cli``), not here.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from chainpush.logs import redact_url
from chainpush.watcher.artifacts import DEFAULT_ABI_DIRS, DEFAULT_IGNITION_DIR
from chainpush.watcher.errors import ConfigError
from chainpush.watcher.wallets import STANDARDS, check_standards

DEFAULT_MONGO_URI = "mongodb://127.0.0.1:27018/?directConnection=true"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6390/0"
DEFAULT_NODE_URL = "http://127.0.0.1:8545"


def _where(source: str, key: str) -> str:
    return f"{source}: {key}"


def _check_keys(data: Mapping[str, Any], allowed: set[str], source: str, section: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)} in {section} "
            f"(expected: {', '.join(sorted(allowed))})"
        )


def _standards(value: Any) -> tuple[str, ...]:
    """``[watch] wallet_activity``: a list of standard names (checked by ``WatchConfig``)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[watch] wallet_activity must be a list of some of "
                          f"{', '.join(map(repr, STANDARDS))}, got {value!r}")
    return tuple(value)


def _as_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{key} must be a string or a list of strings, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    urls: tuple[str, ...]
    poll_interval_s: float = 1.0
    timeout_s: float = 10.0
    chain_id: int | None = None

    def __post_init__(self) -> None:
        if not self.urls:
            raise ConfigError("[node] needs at least one of urls, rpc, ws, ipc")
        if self.poll_interval_s <= 0:
            raise ConfigError(f"[node] poll_interval_s must be > 0, got {self.poll_interval_s}")
        if self.timeout_s <= 0:
            raise ConfigError(f"[node] timeout_s must be > 0, got {self.timeout_s}")
        if self.chain_id is not None and self.chain_id < 1:
            raise ConfigError(f"[node] chain_id must be >= 1, got {self.chain_id}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: Path) -> NodeConfig:
        urls: list[str] = []
        for key in ("urls", "ipc", "ws", "rpc"):
            for spec in _as_list(data.get(key), f"[node] {key}"):
                if key in ("urls", "ipc") and not spec.startswith(("http", "ws", "ipc://")):
                    spec = str((base / spec).resolve()) if not spec.startswith("/") else spec
                urls.append(spec)
        if not any(key in data for key in ("urls", "ipc", "ws", "rpc")):
            # no endpoint configured: the documented default (CHAINPUSH_RPC/WS/IPC, applied at
            # the entry point, still replace it)
            urls.append(DEFAULT_NODE_URL)
        return cls(
            urls=tuple(urls), poll_interval_s=float(data.get("poll_interval_s", 1.0)),
            timeout_s=float(data.get("timeout_s", 10.0)),
            chain_id=int(data["chain_id"]) if data.get("chain_id") is not None else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchConfig:
    name: str = "default"
    confirmations: int = 0
    start_block: int | None = None
    max_range: int = 2000
    reorg_window: int = 64
    #: K = 0 contracts: ``confirmed`` follows ``pending`` once the block is this many blocks
    #: deep. Always on (1 … reorg_window - 1): a block leaving the window is final anyway.
    finality_depth: int = 12
    #: "depth": final = ``finality_depth`` deep; "tag": final = at or below the node's
    #: ``finalized`` block (by depth on a node without that tag)
    finality: Literal["depth", "tag"] = "depth"
    #: where ABIs are looked up, in order (``watcher.artifacts.find_artifact``)
    abi_dirs: tuple[Path, ...] = tuple(Path(d) for d in DEFAULT_ABI_DIRS)
    deployments: Path | None = None
    #: Hardhat Ignition's deployments (``chain-<id>/deployed_addresses.json``), or one
    #: deployment directory; None: not read
    ignition: Path | None = None
    #: ``ignition`` was set in the file: its absence is an error, not "no Ignition here"
    ignition_required: bool = False
    live_batch_blocks: int = 100
    progress_interval_s: float = 5.0
    #: the lease of the checkpoint key (``watcher.lease``): a standby takes over a leader not
    #: heard of for this long (takeover within about lease_s + lease_renew_s of its death)
    lease_s: float = 3.0
    #: how often the leader renews the lease (at most lease_s / 2; default lease_s / 3)
    lease_renew_s: float = 1.0
    #: serve ``/metrics`` and ``/healthz`` on 127.0.0.1:<port> (None: not served)
    metrics_port: int | None = None
    #: follow the lifecycle of transactions someone subscribed to (``tx:<hash>``,
    #: ``watcher.txs``): needs the push nodes' Redis registry (``[stores] redis_url``)
    tx_lifecycle: bool = False
    #: at most this many subscribed hashes followed at once (the rest wait for a place)
    max_tracked_txs: int = 10_000
    #: token standards whose transfers of *any* contract from or to a wallet with a ``user:``
    #: subscriber are recorded (``watcher.wallets``); empty: off
    wallet_activity: tuple[str, ...] = ()

    @property
    def abi_dir(self) -> Path:
        """The first ABI directory: where ``chainpush compile`` writes."""
        return self.abi_dirs[0]

    def __post_init__(self) -> None:
        if not self.abi_dirs:
            raise ConfigError("[watch] abi_dir must name at least one directory")
        if not self.name or ":" in self.name:
            raise ConfigError(f"[watch] name must be non-empty without ':', got {self.name!r}")
        if self.confirmations < 0:
            raise ConfigError(f"[watch] confirmations must be >= 0, got {self.confirmations}")
        if self.start_block is not None and self.start_block < 0:
            raise ConfigError(f"[watch] start_block must be >= 0, got {self.start_block}")
        if self.max_range < 1:
            raise ConfigError(f"[watch] max_range must be >= 1, got {self.max_range}")
        if self.reorg_window < 2:
            raise ConfigError(f"[watch] reorg_window must be >= 2, got {self.reorg_window}")
        if not 1 <= self.finality_depth < self.reorg_window:
            raise ConfigError(
                f"[watch] finality_depth must be >= 1 and below [watch] reorg_window "
                f"({self.reorg_window}), got {self.finality_depth}"
            )
        if self.finality not in ("depth", "tag"):
            raise ConfigError(f"[watch] finality must be \"depth\" or \"tag\", got "
                              f"{self.finality!r}")
        if self.live_batch_blocks < 1:
            raise ConfigError(
                f"[watch] live_batch_blocks must be >= 1, got {self.live_batch_blocks}"
            )
        if self.progress_interval_s <= 0:
            raise ConfigError(
                f"[watch] progress_interval_s must be > 0, got {self.progress_interval_s}"
            )
        if not self.lease_s > 0:
            raise ConfigError(f"[watch] lease_s must be > 0, got {self.lease_s}")
        if not 0 < self.lease_renew_s <= self.lease_s / 2:
            raise ConfigError(
                f"[watch] lease_renew_s must be > 0 and at most [watch] lease_s / 2 "
                f"({self.lease_s / 2:g}), got {self.lease_renew_s}"
            )
        if not isinstance(self.tx_lifecycle, bool):
            raise ConfigError(f"[watch] tx_lifecycle must be true or false, got "
                              f"{self.tx_lifecycle!r}")
        if isinstance(self.max_tracked_txs, bool) or not isinstance(
                self.max_tracked_txs, int) or self.max_tracked_txs < 1:
            raise ConfigError(f"[watch] max_tracked_txs must be an integer >= 1, got "
                              f"{self.max_tracked_txs!r}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(
                f"[watch] metrics_port must be 0 … 65535 (0: any free port), got "
                f"{self.metrics_port}"
            )
        check_standards(self.wallet_activity, "[watch] wallet_activity")


Trigger = Literal["block"] | tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StateReadConfig:
    function: str
    args: tuple[Any, ...] = ()
    on: Trigger = "block"


@dataclass(frozen=True, slots=True, kw_only=True)
class FactoryConfig:
    """``[[contracts]] factory``: the children of this template are the addresses in argument
    ``arg`` of event ``event`` of the ``[[contracts]]`` named ``contract``."""

    contract: str
    event: str
    arg: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractConfig:
    name: str
    abi: str
    address: str | None = None
    deployment: str | None = None
    events: tuple[str, ...] | None = None
    confirmations: int | None = None
    filters: Mapping[str, Mapping[str, tuple[Any, ...]]] = field(default_factory=dict)
    state: tuple[StateReadConfig, ...] = ()
    #: a template: watched at every address the factory's event announces (docs/watcher.md)
    factory: FactoryConfig | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("[[contracts]] name must not be empty")
        if self.factory is not None:
            for key, value in (("address", self.address), ("deployment", self.deployment)):
                if value is not None:
                    raise ConfigError(
                        f"[[contracts]] {self.name}: {key} and factory exclude each other (a "
                        f"template's addresses are the children its factory creates)")
            if self.state:
                raise ConfigError(f"[[contracts]] {self.name}.state: not supported on a "
                                  f"factory template")
        if self.confirmations is not None and self.confirmations < 0:
            raise ConfigError(
                f"[[contracts]] {self.name}.confirmations must be >= 0, got {self.confirmations}"
            )
        if self.address is not None:
            a = self.address
            if not (a.startswith("0x") and len(a) == 42 and _is_hex(a[2:])):
                raise ConfigError(
                    f"[[contracts]] {self.name}.address must be 0x + 40 hex digits, got {a!r}"
                )


def _is_hex(s: str) -> bool:
    try:
        int(s, 16)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class StoresConfig:
    mongo_uri: str = DEFAULT_MONGO_URI
    database: str = "chainpush"
    #: where collect tells push nodes about new messages (``--sink collect``); push nodes also
    #: reconcile from MongoDB, so Redis being away delays delivery but loses nothing
    redis_url: str = DEFAULT_REDIS_URL
    namespace: str = "cp"

    def __post_init__(self) -> None:
        if not self.mongo_uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ConfigError(
                f"[stores] mongo_uri must start with mongodb://, got {self.mongo_uri!r}"
            )
        if not self.database:
            raise ConfigError("[stores] database must not be empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    source: str
    node: NodeConfig
    watch: WatchConfig
    contracts: tuple[ContractConfig, ...]
    stores: StoresConfig

    def __post_init__(self) -> None:
        if not self.contracts:
            raise ConfigError("no [[contracts]] to watch")
        names = [c.name for c in self.contracts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"[[contracts]] names must be unique, repeated: {', '.join(dupes)}")
        # reserved whether or not this file turns wallet activity on: another chain's watcher
        # of the same deployment may, and topics are not qualified by chain (seams §3)
        clash = sorted(set(names) & set(STANDARDS))
        if clash:
            raise ConfigError(
                f"[[contracts]] name {clash[0]!r} is taken by [watch] wallet_activity (its "
                f"records are contract {clash[0]!r}, on every chain of the deployment): "
                "rename the contract")
        for c in self.contracts:
            k = self.confirmations(c)
            if k >= self.watch.reorg_window:
                raise ConfigError(
                    f"[[contracts]] {c.name}.confirmations ({k}) must be below "
                    f"[watch] reorg_window ({self.watch.reorg_window})"
                )
            if c.factory is not None:
                parent = next((p for p in self.contracts if p.name == c.factory.contract), None)
                if parent is None:
                    raise ConfigError(
                        f"[[contracts]] {c.name}.factory.contract: no [[contracts]] named "
                        f"{c.factory.contract!r} (contracts: {', '.join(names)})")
                if parent.factory is not None:
                    raise ConfigError(
                        f"[[contracts]] {c.name}.factory.contract: {parent.name} is a factory "
                        f"template itself (a factory needs an address of its own)")
                if parent.events is not None and c.factory.event not in parent.events:
                    raise ConfigError(
                        f"[[contracts]] {c.name}.factory.event: {c.factory.event!r} is not "
                        f"selected by [[contracts]] {parent.name}.events "
                        f"({', '.join(parent.events)})")

    def confirmations(self, contract: ContractConfig) -> int:
        if contract.confirmations is not None:
            return contract.confirmations
        return self.watch.confirmations

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str, base: Path) -> Config:
        """Build from parsed TOML; ``source`` (the file) prefixes every error message."""
        try:
            return cls._from_mapping(data, source=source, base=base)
        except ConfigError as exc:
            if str(exc).startswith(source):
                raise
            raise ConfigError(f"{source}: {exc}") from exc
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    @classmethod
    def _from_mapping(cls, data: Mapping[str, Any], *, source: str, base: Path) -> Config:
        node_raw = _table(data, "node", source)
        _check_keys(node_raw, {"urls", "rpc", "ws", "ipc", "poll_interval_s", "timeout_s",
                               "chain_id"}, source, "[node]")
        watch_raw = _table(data, "watch", source)
        _check_keys(watch_raw, {"name", "confirmations", "start_block", "max_range",
                                "reorg_window", "finality_depth", "finality", "abi_dir",
                                "deployments", "ignition", "live_batch_blocks",
                                "progress_interval_s", "lease_s", "lease_renew_s",
                                "metrics_port", "wallet_activity", "tx_lifecycle",
                                "max_tracked_txs"},
                    source, "[watch]")
        reorg_window = int(watch_raw.get("reorg_window", 64))
        lease_s = float(watch_raw.get("lease_s", 3.0))
        watch = WatchConfig(
            name=str(watch_raw.get("name", "default")),
            confirmations=int(watch_raw.get("confirmations", 0)),
            start_block=int(watch_raw["start_block"]) if "start_block" in watch_raw else None,
            max_range=int(watch_raw.get("max_range", 2000)),
            reorg_window=reorg_window,
            # unset: 12, or what a small window allows (set explicitly, it is validated)
            finality_depth=int(watch_raw.get("finality_depth", min(12, reorg_window - 1))),
            finality=watch_raw.get("finality", "depth"),
            abi_dirs=tuple(base / d for d in _as_list(
                watch_raw.get("abi_dir", list(DEFAULT_ABI_DIRS)), "[watch] abi_dir")),
            deployments=(base / str(watch_raw["deployments"])) if "deployments" in watch_raw
            else base / "deployments",
            ignition=base / str(watch_raw.get("ignition", DEFAULT_IGNITION_DIR)),
            ignition_required="ignition" in watch_raw,
            live_batch_blocks=int(watch_raw.get("live_batch_blocks", 100)),
            progress_interval_s=float(watch_raw.get("progress_interval_s", 5.0)),
            lease_s=lease_s,
            lease_renew_s=float(watch_raw.get("lease_renew_s", lease_s / 3)),
            metrics_port=(int(watch_raw["metrics_port"]) if "metrics_port" in watch_raw
                          else None),
            tx_lifecycle=watch_raw.get("tx_lifecycle", False),
            max_tracked_txs=watch_raw.get("max_tracked_txs", 10_000),
            wallet_activity=_standards(watch_raw.get("wallet_activity", [])),
        )
        contracts_raw = data.get("contracts", [])
        if not isinstance(contracts_raw, list):
            raise ConfigError("contracts must be an array of tables ([[contracts]])")
        contracts = tuple(_contract(c, i, source) for i, c in enumerate(contracts_raw))
        stores_raw = _table(data, "stores", source)
        return cls(
            source=source, node=NodeConfig.from_mapping(node_raw, base), watch=watch,
            contracts=contracts,
            stores=StoresConfig(
                mongo_uri=str(stores_raw.get("mongo_uri", DEFAULT_MONGO_URI)),
                database=str(stores_raw.get("database", "chainpush")),
                redis_url=str(stores_raw.get("redis_url", DEFAULT_REDIS_URL)),
                namespace=str(stores_raw.get("namespace", "cp")),
            ),
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-safe view for ``--print-config``."""
        return {
            "source": self.source,
            "node": {"urls": [redact_url(u) for u in self.node.urls],
                     "poll_interval_s": self.node.poll_interval_s,
                     "timeout_s": self.node.timeout_s, "chain_id": self.node.chain_id},
            "watch": {
                "name": self.watch.name, "confirmations": self.watch.confirmations,
                "start_block": self.watch.start_block, "max_range": self.watch.max_range,
                "reorg_window": self.watch.reorg_window,
                "finality_depth": self.watch.finality_depth, "finality": self.watch.finality,
                "abi_dir": [str(d) for d in self.watch.abi_dirs],
                "deployments": str(self.watch.deployments),
                "ignition": str(self.watch.ignition) if self.watch.ignition else None,
                "lease_s": self.watch.lease_s, "lease_renew_s": self.watch.lease_renew_s,
                "metrics_port": self.watch.metrics_port,
                "wallet_activity": list(self.watch.wallet_activity),
            },
            "contracts": [
                {"name": c.name, "abi": c.abi, "address": c.address, "deployment": c.deployment,
                 "events": list(c.events) if c.events is not None else "all",
                 "confirmations": self.confirmations(c),
                 "filters": {e: {a: list(v) for a, v in f.items()} for e, f in c.filters.items()},
                 "state": [{"function": s.function, "args": list(s.args),
                            "on": s.on if s.on == "block" else list(s.on)} for s in c.state],
                 "factory": None if c.factory is None else {
                     "contract": c.factory.contract, "event": c.factory.event,
                     "arg": c.factory.arg}}
                for c in self.contracts
            ],
            "stores": {"mongo_uri": _redact(self.stores.mongo_uri),
                       "database": self.stores.database},
        }


def _redact(uri: str) -> str:
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def _table(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: [{key}] must be a table, got {type(value).__name__}")
    return value


def _contract(raw: Any, i: int, source: str) -> ContractConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: contracts[{i}] must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: contracts[{i}].name must be a non-empty string")
    _check_keys(raw, {"name", "abi", "address", "deployment", "events", "confirmations",
                      "filters", "state", "factory"}, source, f"[[contracts]] {name}")
    factory: FactoryConfig | None = None
    if "factory" in raw:
        f_raw = raw["factory"]
        key = f"[[contracts]] {name}.factory"
        if not isinstance(f_raw, Mapping):
            raise ConfigError(f"{source}: {key} must be a table {{contract = \"…\", event = "
                              f"\"…\", arg = \"…\"}}, got {f_raw!r}")
        _check_keys(f_raw, {"contract", "event", "arg"}, source, key)
        for part in ("contract", "event", "arg"):
            if not isinstance(f_raw.get(part), str) or not f_raw[part]:
                raise ConfigError(f"{source}: {key}.{part} must be a non-empty string, got "
                                  f"{f_raw.get(part)!r}")
        factory = FactoryConfig(contract=f_raw["contract"], event=f_raw["event"],
                                arg=f_raw["arg"])
    events_raw = raw.get("events", "all")
    events: tuple[str, ...] | None
    if events_raw == "all":
        events = None
    elif isinstance(events_raw, list) and events_raw and all(
        isinstance(e, str) for e in events_raw
    ):
        events = tuple(events_raw)
    else:
        raise ConfigError(
            f"{source}: [[contracts]] {name}.events must be \"all\" or a non-empty list of "
            f"event names, got {events_raw!r}"
        )
    filters: dict[str, dict[str, tuple[Any, ...]]] = {}
    for ev, args in dict(raw.get("filters", {})).items():
        if not isinstance(args, Mapping):
            raise ConfigError(f"{source}: [[contracts]] {name}.filters.{ev} must be a table")
        filters[ev] = {a: tuple(v) if isinstance(v, list) else (v,) for a, v in args.items()}
    state: list[StateReadConfig] = []
    for j, s in enumerate(raw.get("state", [])):
        key = f"[[contracts]] {name}.state[{j}]"
        if not isinstance(s, Mapping) or not isinstance(s.get("function"), str):
            raise ConfigError(f"{source}: {key} needs function = \"<view function name>\"")
        _check_keys(s, {"function", "args", "on"}, source, key)
        on_raw = s.get("on", "block")
        on: Trigger
        if on_raw == "block":
            on = "block"
        elif isinstance(on_raw, list) and on_raw and all(isinstance(e, str) for e in on_raw):
            on = tuple(on_raw)
        else:
            raise ConfigError(f"{source}: {key}.on must be \"block\" or a list of event names")
        args_raw = s.get("args", [])
        if not isinstance(args_raw, list):
            raise ConfigError(f"{source}: {key}.args must be a list")
        state.append(StateReadConfig(function=s["function"], args=tuple(args_raw), on=on))
    conf = raw.get("confirmations")
    return ContractConfig(
        name=name, abi=str(raw.get("abi", name)),
        address=str(raw["address"]) if "address" in raw else None,
        deployment=str(raw["deployment"]) if "deployment" in raw else None,
        events=events, confirmations=int(conf) if conf is not None else None,
        filters=filters, state=tuple(state), factory=factory,
    )


#: What ``chainpush watch`` watches when there is no ``chainpush.toml``: the demo contracts of
#: ``scripts/deploy.py`` on the dev stack's node, as a new user has them after the README's steps.
DEMO_CONFIG = """
[node]
rpc = "http://127.0.0.1:8545"

[watch]
name = "demo"
abi_dir = "abi"
deployments = "deployments"
tx_lifecycle = true

[[contracts]]
name = "DemoToken"

[[contracts]]
name = "CallDemo"
[[contracts.state]]
function = "get"
on = ["ValueChanged"]

[[contracts]]
name = "DemoFactory"

[[contracts]]
name = "DemoPair"                       # every pair DemoFactory creates, from its creation block
factory = {contract = "DemoFactory", event = "PairCreated", arg = "pair"}
"""


def demo_config(base: Path) -> Config:
    """``DEMO_CONFIG`` with paths relative to ``base`` (the project directory)."""
    return Config.from_mapping(tomllib.loads(DEMO_CONFIG), source="(built-in demo config)",
                               base=base)


def load_config(path: Path) -> Config:
    """Read and validate a TOML config file."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    return Config.from_mapping(data, source=str(path), base=path.resolve().parent)


def deployments_file(watch: WatchConfig, chain_id: int) -> Path | None:
    if watch.deployments is None:
        return None
    if watch.deployments.suffix == ".json":
        return watch.deployments
    return watch.deployments / f"{chain_id}.json"


def read_deployments(path: Path, chain_id: int, source: str) -> dict[str, dict[str, Any]]:
    """``{"chain_id": …, "contracts": {name: {"address", "block", "tx"}}}`` → contracts."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{source}: [watch] deployments {path} is unreadable ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("contracts"), dict):
        raise ConfigError(f"{source}: [watch] deployments {path} lacks a 'contracts' object")
    if doc.get("chain_id") not in (None, chain_id):
        raise ConfigError(
            f"{source}: [watch] deployments {path} is for chain {doc.get('chain_id')}, "
            f"the node serves {chain_id}"
        )
    return dict(doc["contracts"])


def check_several(configs: Sequence[Config]) -> None:
    """Several watch configs run in one process (``chainpush run --config A --config B``): one
    watcher per chain. Refuses what would clash before anything starts (``docs/watcher.md``,
    Several chains): a contract name in two files (names are unique per deployment: topics are
    not qualified by chain), and two files of one chain (the same ``[node] chain_id``) with the
    same ``[watch] name`` (one lease: the second would wait as a standby forever). Across
    processes the watchers' claims in MongoDB check the names (``watcher.claims``)."""
    owner: dict[str, Config] = {}
    for config in configs:
        for c in config.contracts:
            first = owner.setdefault(c.name, config)
            if first is not config:
                raise ConfigError(
                    f"{config.source}: [[contracts]] {c.name} is also in {first.source}: "
                    f"contract names are unique per deployment (topic contract:{c.name} carries "
                    f"one chain); rename one (name = \"{c.name}_<chain>\", abi = \"{c.abi}\")")
    keys: dict[tuple[int, str], Config] = {}
    for config in configs:
        if config.node.chain_id is None:
            continue
        first = keys.setdefault((config.node.chain_id, config.watch.name), config)
        if first is not config:
            raise ConfigError(
                f"{config.source}: [watch] name {config.watch.name!r} on chain "
                f"{config.node.chain_id} is also {first.source}'s: one lease and checkpoint "
                f"per (chain, name); merge the two files or give one another [watch] name")
