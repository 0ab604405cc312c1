"""The local dev stack: a real node, a real Redis and a MongoDB-protocol server, on loopback.

Everything it writes stays in the project (the directory of the nearest ``chainpush.toml``,
else the current directory): state, logs, the chain and the stores' data live in
``<project>/.chainpush/dev`` (``--state-dir`` to move it); anvil comes from ``PATH`` or the
project's ``node_modules`` (``chainpush.procs.find_anvil``).

``chainpush dev up`` starts (idempotently) anvil (HTTP + WS on one port, plus an IPC socket;
its chain persists in ``<state dir>/chain-state.json`` so it stays consistent with the stores),
redis-server and nx-27017, waits until each answers, and records what runs in
``<state dir>/stack.json``; ``status`` health-checks it; ``down`` stops every process group it
started, leaving nothing behind; ``down --wipe`` also deletes the chain and the stores' data.
``MONGO_URI`` (or ``CHAINPUSH_MONGO_URI``) pointing at a real
MongoDB replaces nx-27017; ``CHAINPUSH_REDIS_URL`` pointing at a running Redis replaces ours.

Ports: the configured ones (defaults 8545 / 6390 / 27018) when free; a free port otherwise, which
``stack.json`` and ``chainpush dev env`` report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chainpush import procs, project
from chainpush.logs import redact_credentials

logger = logging.getLogger(__name__)

STATE_FILE = "stack.json"
#: the defaults of ``chainpush dev up``, also shown in ``dev --help``
DEFAULT_NODE_PORT = 8545
DEFAULT_REDIS_PORT = 6390
DEFAULT_MONGO_PORT = 27018
DEFAULT_BLOCK_TIME_S = 1.0


@dataclass(frozen=True, slots=True)
class DevStackConfig:
    """What ``dev up`` starts. Ports are preferences: a taken port is replaced by a free one.

    ``project``: where tools (anvil in ``node_modules``) are looked up; default: the project
    around cwd. ``state_dir`` default: ``<that project>/.chainpush/dev``.
    """

    state_dir: Path = field(default_factory=project.state_dir)
    node_port: int = DEFAULT_NODE_PORT
    redis_port: int = DEFAULT_REDIS_PORT
    mongo_port: int = DEFAULT_MONGO_PORT
    block_time_s: float | None = DEFAULT_BLOCK_TIME_S
    external_mongo_uri: str | None = None
    external_redis_url: str | None = None
    project: Path | None = None

    def __post_init__(self) -> None:
        for name in ("node_port", "redis_port", "mongo_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ValueError(f"{name} must be in 1..65535, got {port}")
        if self.block_time_s is not None and self.block_time_s <= 0:
            raise ValueError(
                f"block_time_s must be > 0 or None (automine), got {self.block_time_s}"
            )


@dataclass(frozen=True, slots=True)
class ServiceState:
    name: str
    pid: int | None  # None: an external service we did not start
    url: str
    log: str | None


@dataclass(frozen=True, slots=True)
class StackState:
    """The contents of ``stack.json``: how to reach each running service."""

    node: ServiceState
    ws_url: str
    ipc_path: str
    redis: ServiceState
    mongo: ServiceState

    @property
    def services(self) -> tuple[ServiceState, ServiceState, ServiceState]:
        return (self.node, self.redis, self.mongo)

    def env(self) -> dict[str, str]:
        """Environment variables that point every chainpush command at this stack."""
        return {
            "CHAINPUSH_RPC": self.node.url,
            "CHAINPUSH_WS": self.ws_url,
            "CHAINPUSH_IPC": self.ipc_path,
            "CHAINPUSH_REDIS_URL": self.redis.url,
            "CHAINPUSH_MONGO_URI": self.mongo.url,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StackState:
        return cls(
            node=ServiceState(**raw["node"]), ws_url=raw["ws_url"], ipc_path=raw["ipc_path"],
            redis=ServiceState(**raw["redis"]), mongo=ServiceState(**raw["mongo"]),
        )


def load_state(state_dir: Path | None = None) -> StackState | None:
    """The recorded stack, or None when ``dev up`` has not run (or ``down`` since).

    ``state_dir`` default: ``<project around cwd>/.chainpush/dev``.
    """
    path = (state_dir or project.state_dir()) / STATE_FILE
    if not path.exists():
        return None
    return StackState.from_dict(json.loads(path.read_text()))


def healthy(service: ServiceState) -> bool:
    if service.pid is not None and not procs.pid_alive(service.pid):
        return False
    if service.name == "anvil":
        return procs.anvil_healthy(service.url)
    if service.name == "redis":
        hostport = service.url.split("://", 1)[1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        return procs.redis_healthy(host.split("@")[-1] or "127.0.0.1", int(port))
    return procs.mongo_healthy(service.url)


def _port(preferred: int) -> int:
    if procs.port_open("127.0.0.1", preferred):
        chosen = procs.free_port()
        logger.info("port %d is taken; using %d", preferred, chosen)
        return chosen
    return preferred


def _service_state(server: procs.Server) -> ServiceState:
    return ServiceState(server.name, server.pid, server.url, str(server.log_path))


def _store(
    name: str, external_url: str | None, started: list[procs.Server],
    start: Callable[[], procs.Server],
) -> ServiceState:
    """An external store given by URL as is, else one started now (and added to ``started``)."""
    if external_url:
        return ServiceState(name, None, external_url, None)
    server = start()
    started.append(server)
    return _service_state(server)


def up(config: DevStackConfig) -> StackState:
    """Start what is not running; return the stack. Idempotent: a healthy stack is left alone."""
    current = load_state(config.state_dir)
    if current is not None:
        if all(healthy(s) for s in current.services):
            logger.info("dev stack already up (%s)", config.state_dir / STATE_FILE)
            return current
        logger.info("dev stack partly down: restarting it")
        down(config.state_dir)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    started: list[procs.Server] = []
    try:
        node_port = _port(config.node_port)
        ipc = config.state_dir / "anvil.ipc"
        ipc.unlink(missing_ok=True)
        # the chain persists across down/up (and, up to the last few seconds, a crash), so it
        # stays consistent with what MongoDB stored about it: anvil loads it at start, dumps
        # it every few seconds and on SIGTERM
        anvil = procs.start_anvil(
            port=node_port, state_dir=config.state_dir, ipc_path=ipc,
            block_time_s=config.block_time_s, detach=True, project=config.project,
            extra=("--state", str(config.state_dir / "chain-state.json"),
                   "--state-interval", "5"),
        )
        started.append(anvil)
        node = _service_state(anvil)
        redis = _store("redis", config.external_redis_url, started, lambda: procs.start_redis(
            port=_port(config.redis_port), state_dir=config.state_dir, detach=True))
        mongo = _store("mongo", config.external_mongo_uri, started, lambda: procs.start_mongo(
            port=_port(config.mongo_port), state_dir=config.state_dir, detach=True))
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    state = StackState(
        node=node, ws_url=f"ws://127.0.0.1:{node_port}", ipc_path=str(ipc), redis=redis,
        mongo=mongo,
    )
    (config.state_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2) + "\n")
    for service in state.services:
        if not healthy(service):
            down(config.state_dir)
            raise procs.StackError(
                f"{service.name} at {redact_credentials(service.url)} does not answer")
    return state


#: what ``down --wipe`` deletes: the chain, the stores' data, the logs
WIPED = ("chain-state.json", "mongo", "redis", "anvil.log", "redis.log", "mongo.log",
         "mongo-server.log", "traffic.log")


def wipe(state_dir: Path) -> None:
    """Delete the dev chain and the stores' data: the next ``up`` starts from genesis."""
    for name in WIPED:
        path = state_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def down(state_dir: Path | None = None, *, wipe_data: bool = False) -> int:
    """Stop every process the stack started; return how many were running.

    ``wipe_data``: also delete the chain and the stores' data (``dev down --wipe``).
    """
    state_dir = state_dir or project.state_dir()
    state = load_state(state_dir)
    if state is None:
        if wipe_data:
            wipe(state_dir)
        return 0
    stopped = 0
    for service in reversed(state.services):
        if service.pid is not None and procs.pid_alive(service.pid):
            procs.stop_pid(service.pid)
            stopped += 1
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):
        Path(state.ipc_path).unlink()
    if wipe_data:
        wipe(state_dir)
    return stopped


# --- CLI -------------------------------------------------------------------------------------


def _dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    """(project, state dir) named by ``--project`` / ``--state-dir`` or found from cwd."""
    where = Path(args.project).resolve() if args.project else project.find_project()
    return where, Path(args.state_dir) if args.state_dir else project.state_dir(where)


def _config_from_args(args: argparse.Namespace) -> DevStackConfig:
    where, state_dir = _dirs(args)
    return DevStackConfig(
        state_dir=state_dir,
        node_port=args.node_port,
        redis_port=args.redis_port,
        mongo_port=args.mongo_port,
        block_time_s=args.block_time or None,
        external_mongo_uri=os.environ.get("MONGO_URI") or os.environ.get("CHAINPUSH_MONGO_URI"),
        external_redis_url=os.environ.get("CHAINPUSH_REDIS_URL"),
        project=where,
    )


def _print_state(state: StackState) -> None:
    for service in state.services:
        mark = "up" if healthy(service) else "DOWN"
        pid = f"pid {service.pid}" if service.pid else "external"
        # an external store's URL may carry its password (CHAINPUSH_REDIS_URL): never shown
        # here; `dev env` prints it whole, as it exists to be eval'ed
        print(f"{service.name:6} {mark:4} {redact_credentials(service.url)}  ({pid})")
    print(f"{'ws':6} {'':4} {state.ws_url}")
    print(f"{'ipc':6} {'':4} {state.ipc_path}")


def _run(args: argparse.Namespace) -> int:
    _, state_dir = _dirs(args)
    if args.action == "up":
        try:
            state = up(_config_from_args(args))
        except (procs.StackError, ValueError) as exc:
            print(f"chainpush dev up: {exc}", file=sys.stderr)
            return 1
        _print_state(state)
        return 0
    if args.action == "down":
        print(f"stopped {down(state_dir, wipe_data=args.wipe)} process(es)"
              + (" and wiped the chain and stores" if args.wipe else ""))
        return 0
    recorded = load_state(state_dir)
    if recorded is None:
        print(f"dev stack is not running (no {state_dir / STATE_FILE}); start it: "
              "chainpush dev up")
        return 3
    if args.action == "env":
        for key, value in recorded.env().items():
            print(f"export {key}={value}")
        return 0
    _print_state(recorded)
    if all(healthy(s) for s in recorded.services):
        return 0
    print("part of the dev stack is down; restart it: chainpush dev up", file=sys.stderr)
    return 1


DESCRIPTION = """\
The local dev stack: anvil (HTTP + websocket on one port, plus an IPC socket), redis-server and
nx-27017 (a MongoDB-protocol server), on 127.0.0.1, for the project in the current directory
(the nearest chainpush.toml, else cwd). Its state, logs, chain and data stay in
<project>/.chainpush/dev; nothing is written elsewhere.

actions:
  up      start what is not running (idempotent) and print where each service is; the chain
          persists across down/up. Taken ports are replaced by free ones (see status/env).
          options: --node-port, --redis-port, --mongo-port, --block-time
  down    stop every process `up` started; with --wipe also delete the chain and the data
  status  health-check each service (exit 0 all up, 1 some down, 3 not started)
  env     print `export CHAINPUSH_RPC=… CHAINPUSH_WS=… CHAINPUSH_IPC=… CHAINPUSH_REDIS_URL=…
          CHAINPUSH_MONGO_URI=…` lines that point every chainpush command at this stack

MONGO_URI (or CHAINPUSH_MONGO_URI) pointing at a real MongoDB replaces nx-27017;
CHAINPUSH_REDIS_URL pointing at a running Redis replaces redis-server. anvil is found on PATH
(Foundry's foundryup) or in the project's node_modules (npm install), or CHAINPUSH_ANVIL.
"""

EPILOG = """\
examples:
  chainpush dev up                        # anvil :8545, redis :6390, nx-27017 :27018
  eval "$(chainpush dev env)"             # point this shell's chainpush commands at it
  chainpush dev up --node-port 9545 --block-time 0   # another port, one block per transaction
  chainpush dev status
  chainpush dev down --wipe               # stop and start afresh next time
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "dev", help="start/stop the local dev stack (anvil, redis-server, nx-27017)",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["up", "down", "status", "env"],
                        help="up | down | status | env (see above)")
    parser.add_argument("--project", default=None, metavar="DIR",
                        help="the project directory (default: the directory of the nearest "
                        "chainpush.toml, else cwd)")
    parser.add_argument("--state-dir", default=None, metavar="DIR",
                        help="where the stack keeps state (default: <project>/.chainpush/dev)")
    parser.add_argument("--node-port", type=int, default=DEFAULT_NODE_PORT, metavar="PORT",
                        help=f"up: anvil's HTTP + websocket port (default {DEFAULT_NODE_PORT})")
    parser.add_argument("--redis-port", type=int, default=DEFAULT_REDIS_PORT, metavar="PORT",
                        help=f"up: redis-server's port (default {DEFAULT_REDIS_PORT})")
    parser.add_argument("--mongo-port", type=int, default=DEFAULT_MONGO_PORT, metavar="PORT",
                        help=f"up: nx-27017's port (default {DEFAULT_MONGO_PORT})")
    parser.add_argument(
        "--block-time", type=float, default=DEFAULT_BLOCK_TIME_S, metavar="SECONDS",
        help=f"up: seconds between blocks (default {DEFAULT_BLOCK_TIME_S:g} s; 0: mine one block "
        "per transaction)",
    )
    parser.add_argument(
        "--wipe", action="store_true",
        help="down: also delete the chain and the stores' data (next up starts afresh)",
    )
    parser.set_defaults(func=_run)
