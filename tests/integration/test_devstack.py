"""`chainpush dev up|status|down` as a user runs it: real processes, idempotent, no orphans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chainpush import devstack, procs

pytestmark = pytest.mark.integration


def chainpush(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chainpush.cli", *args], capture_output=True, text=True,
        timeout=60, env=env,
    )


def test_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    state_dir = tmp_path / "dev"
    ports = [procs.free_port() for _ in range(3)]
    flags = [
        "--state-dir", str(state_dir), "--node-port", str(ports[0]),
        "--redis-port", str(ports[1]), "--mongo-port", str(ports[2]),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("MONGO_URI", "CHAINPUSH_MONGO_URI",
                                                            "CHAINPUSH_REDIS_URL")}
    first = chainpush("dev", "up", *flags, env=env)
    assert first.returncode == 0, first.stderr
    state = devstack.load_state(state_dir)
    assert state is not None
    try:
        pids = [s.pid for s in state.services]
        assert all(pid is not None and procs.pid_alive(pid) for pid in pids)
        assert state.node.url == f"http://127.0.0.1:{ports[0]}"
        assert procs.rpc_call(state.node.url, "eth_chainId") == "0x7a69"
        assert procs.redis_healthy("127.0.0.1", ports[1])
        assert procs.mongo_healthy(state.mongo.url)
        assert Path(state.ipc_path).exists()

        # idempotent: a second `up` keeps the same processes
        again = chainpush("dev", "up", *flags, env=env)
        assert again.returncode == 0, again.stderr
        assert "already up" in again.stderr
        assert json.loads((state_dir / "stack.json").read_text())["node"]["pid"] == pids[0]

        status = chainpush("dev", "status", "--state-dir", str(state_dir))
        assert status.returncode == 0
        assert status.stdout.count(" up ") == 3

        env_out = chainpush("dev", "env", "--state-dir", str(state_dir)).stdout
        assert f"export CHAINPUSH_RPC=http://127.0.0.1:{ports[0]}" in env_out
    finally:
        down = chainpush("dev", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0
    assert "stopped 3 process(es)" in down.stdout
    assert not any(procs.pid_alive(pid) for pid in pids if pid is not None)
    assert not any(procs.port_open("127.0.0.1", port) for port in ports)
    assert not Path(state.ipc_path).exists()
    after = chainpush("dev", "status", "--state-dir", str(state_dir))
    assert after.returncode == 3
    assert "not running" in after.stdout


def test_up_restarts_a_stack_with_a_dead_member(tmp_path: Path) -> None:
    state_dir = tmp_path / "dev"
    config = devstack.DevStackConfig(
        state_dir=state_dir, node_port=procs.free_port(), redis_port=procs.free_port(),
        mongo_port=procs.free_port(), block_time_s=None,
    )
    state = devstack.up(config)
    try:
        assert state.redis.pid is not None
        procs.stop_pid(state.redis.pid)
        assert not devstack.healthy(state.redis)
        healed = devstack.up(config)
        assert all(devstack.healthy(s) for s in healed.services)
        assert healed.redis.pid != state.redis.pid
        assert not procs.pid_alive(state.node.pid or 0)  # the old stack was stopped whole
    finally:
        devstack.down(state_dir)


def test_bad_port_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ValueError, match=r"redis_port must be in 1\.\.65535, got 0"):
        devstack.DevStackConfig(redis_port=0)


def test_chain_persists_across_down_up_and_wipe_starts_afresh(tmp_path: Path) -> None:
    state_dir = tmp_path / "dev"
    config = devstack.DevStackConfig(
        state_dir=state_dir, node_port=procs.free_port(), redis_port=procs.free_port(),
        mongo_port=procs.free_port(), block_time_s=None,
    )
    state = devstack.up(config)
    try:
        procs.rpc_call(state.node.url, "anvil_mine", ["0x5"])
        block = procs.rpc_call(state.node.url, "eth_getBlockByNumber", ["0x5", False])
        assert isinstance(block, dict)
        devstack.down(state_dir)  # SIGTERM: anvil dumps its chain

        state = devstack.up(config)
        again = procs.rpc_call(state.node.url, "eth_getBlockByNumber", ["0x5", False])
        assert isinstance(again, dict)
        assert again["hash"] == block["hash"]  # the same chain, not a new one at the same height

        assert devstack.down(state_dir, wipe_data=True) == 3
        assert not (state_dir / "chain-state.json").exists()
        assert not (state_dir / "mongo").exists()
        state = devstack.up(config)
        assert procs.rpc_call(state.node.url, "eth_blockNumber") == "0x0"
    finally:
        devstack.down(state_dir)


def test_up_and_status_never_print_the_password_of_an_external_store(
    tmp_path: Path, redis_server: procs.Server,
) -> None:
    """`dev up` / `dev status` show an external store's URL with the password as ***; `dev env`
    prints it whole (it exists to be eval'ed)."""
    redis_port = redis_server.url.rsplit(":", 1)[1].split("/", 1)[0]
    redis_url = f"redis://:r3dis-pw@127.0.0.1:{redis_port}/0"
    env = {k: v for k, v in os.environ.items() if k not in ("MONGO_URI", "CHAINPUSH_MONGO_URI")}
    env["CHAINPUSH_REDIS_URL"] = redis_url
    state_dir = tmp_path / "dev"
    flags = ["--state-dir", str(state_dir), "--node-port", str(procs.free_port()),
             "--mongo-port", str(procs.free_port())]
    try:
        up = chainpush("dev", "up", *flags, env=env)
        status = chainpush("dev", "status", "--state-dir", str(state_dir), env=env)
        exported = chainpush("dev", "env", "--state-dir", str(state_dir), env=env)
    finally:
        chainpush("dev", "down", "--state-dir", str(state_dir))
    for done in (up, status):
        assert "r3dis-pw" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert up.returncode == 0, up.stderr
    assert status.returncode == 0, status.stderr
    assert f"redis  up   redis://:***@127.0.0.1:{redis_port}/0  (external)" in status.stdout
    assert f"export CHAINPUSH_REDIS_URL={redis_url}" in exported.stdout


def test_status_redacts_every_recorded_url(tmp_path: Path) -> None:
    """A recorded stack whose services are gone: `status` says DOWN, and hides the passwords
    of the MongoDB and Redis URLs all the same."""
    dead = procs.free_port()
    state = {
        "node": {"name": "anvil", "pid": None, "url": f"http://127.0.0.1:{dead}", "log": None},
        "ws_url": f"ws://127.0.0.1:{dead}", "ipc_path": str(tmp_path / "anvil.ipc"),
        "redis": {"name": "redis", "pid": None, "url": f"rediss://u:r3dis-pw@127.0.0.1:{dead}/1",
                  "log": None},
        "mongo": {"name": "mongo", "pid": None, "log": None,
                  "url": f"mongodb://app:m0ngo-pw@127.0.0.1:{dead}/?directConnection=true"},
    }
    (tmp_path / "stack.json").write_text(json.dumps(state))
    status = chainpush("dev", "status", "--state-dir", str(tmp_path))
    assert status.returncode == 1
    assert "r3dis-pw" not in status.stdout and "m0ngo-pw" not in status.stdout
    assert f"rediss://u:***@127.0.0.1:{dead}/1" in status.stdout
    assert f"mongodb://app:***@127.0.0.1:{dead}/?directConnection=true" in status.stdout
