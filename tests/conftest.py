"""Shared fixtures: real servers on free loopback ports, started the way the dev stack starts them.

* ``anvil`` (per test): a fresh anvil with HTTP+WS on one port and an IPC socket.
* ``redis_server`` (per session) + ``redis_url`` (per test, flushed first).
* ``mongo_server`` (per session) + ``mongo_uri`` / ``mongo_db_name`` (per test: its own database).
* ``unit``: the time unit (seconds) every test timeout is a multiple of;
  ``CHAINPUSH_TEST_TIME_UNIT`` scales it on slow machines.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chainpush import procs

ROOT = Path(__file__).resolve().parent.parent
UNIT_S = float(os.environ.get("CHAINPUSH_TEST_TIME_UNIT", "1.0"))


@pytest.fixture(scope="session")
def unit() -> float:
    """Seconds per time unit; tests express every timeout as ``k * unit``."""
    return UNIT_S


@dataclass(frozen=True, slots=True)
class Anvil:
    server: procs.Server
    port: int
    ipc_path: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def start_test_anvil(tmp_path: Path, *extra: str) -> Anvil:
    port = procs.free_port()
    # unix socket paths are limited to ~107 bytes: keep it short
    ipc = Path("/tmp") / f"cp-anvil-{uuid.uuid4().hex[:10]}.ipc"
    server = procs.start_anvil(port=port, state_dir=tmp_path, ipc_path=ipc, extra=extra)
    return Anvil(server=server, port=port, ipc_path=ipc)


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[Anvil]:
    node = start_test_anvil(tmp_path / "anvil")
    yield node
    node.server.stop()
    node.ipc_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.Server]:
    server = procs.start_redis(port=procs.free_port(), state_dir=tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: procs.Server) -> str:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.Server]:
    server = procs.start_mongo(port=procs.free_port(), state_dir=tmp_path_factory.mktemp("mongo"))
    yield server
    server.stop()


@pytest.fixture
def mongo_uri(mongo_server: procs.Server) -> str:
    return mongo_server.url


@pytest.fixture
def mongo_db_name() -> str:
    """A database of this test's own (nx-27017 keeps one SQLite file per database)."""
    return f"cp_test_{uuid.uuid4().hex[:12]}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires(ok, what): the test needs a tool the test "
                            "command installs; without it the test fails (never skips)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.requires(ok, what)``: a tool the suite needs is missing — an error of the
    machine's setup, reported as a failure naming it and the command that installs it."""
    for mark in item.iter_markers("requires"):
        ok, what = mark.args
        if not ok:
            pytest.fail(f"{what}; the test command installs it: ./scripts/test.sh",
                        pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is not a passing one: the test command installs everything the suite
    needs, so any skip (a missing tool, a missing package) fails the run. Set
    ``CHAINPUSH_ALLOW_SKIPS=1`` to run a subset on a machine that lacks something."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and os.environ.get("CHAINPUSH_ALLOW_SKIPS") != "1" and exitstatus == 0:
        reporter.write_line(f"{len(skipped)} test(s) skipped: a skip fails the run "
                            "(CHAINPUSH_ALLOW_SKIPS=1 to allow)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
