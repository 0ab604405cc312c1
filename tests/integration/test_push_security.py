"""Issue 10, tried as an attacker would, on real parts: the `chainpush` CLI as a subprocess, real
HTTP and websocket clients, real redis-server and the MongoDB-protocol server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.push_support import SECRET

pytestmark = pytest.mark.integration
CHAINPUSH = str(Path(sys.executable).parent / "chainpush")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def cli(args: list[str], env: dict[str, str], cwd: Path, ready: str, unit: float
              ) -> AsyncIterator[tuple[re.Match[str], list[str]]]:
    """Run ``chainpush ARGS`` until a stderr line matches ``ready``; yield the match and the
    stderr lines read so far (more are appended while the body runs). Stopped with SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        CHAINPUSH, *args, env=env, cwd=cwd, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    assert proc.stderr is not None
    lines: list[str] = []
    pattern = re.compile(ready)
    try:
        async with asyncio.timeout(30 * unit):
            while True:
                raw = await proc.stderr.readline()
                assert raw, f"chainpush {args[0]} exited before {ready!r}: {lines}"
                lines.append(raw.decode())
                found = pattern.search(lines[-1])
                if found:
                    break

        async def drain() -> None:
            assert proc.stderr is not None
            while raw := await proc.stderr.readline():
                lines.append(raw.decode())

        reader = asyncio.ensure_future(drain())
        yield found, lines
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20 * unit):
            await proc.wait()
        with contextlib.suppress(UnboundLocalError):
            await reader


# --- item 1: CHAINPUSH_DEV=false must not turn dev mode on ------------------------------------


@pytest.mark.parametrize("false_word", ["false", "0", "no", "OFF"])
async def test_dev_false_with_a_production_secret_has_no_dev_login(
    tmp_path: Path, unit: float, false_word: str
) -> None:
    env = _env(tmp_path, CHAINPUSH_DEV=false_word, CHAINPUSH_AUTH_SECRET=SECRET)
    async with (
        cli(["auth", "--port", "0"], env, tmp_path, r"auth service at (http://\S+)", unit)
        as (found, _), aiohttp.ClientSession() as http,
    ):
        url = found.group(1)
        async with http.post(url + "/auth/login",
                             json={"user": "mallory", "wallets": []}) as resp:
            assert resp.status == 404
            assert "token" not in await resp.json()
        async with http.get(url + "/config.json") as resp:
            assert (await resp.json())["dev_login"] is False


async def test_toml_dev_mode_string_false_is_a_startup_error(tmp_path: Path, unit: float) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[auth]\nsecret = "{SECRET}"\ndev_mode = "false"\n')
    proc = await asyncio.create_subprocess_exec(
        CHAINPUSH, "auth", "--config", str(config), "--port", "0", env=_env(tmp_path),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30 * unit):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "[auth] dev_mode must be a TOML boolean" in err.decode()


@pytest.mark.parametrize("command", ["auth", "push", "run"])
async def test_dev_maybe_is_a_startup_error_naming_the_variable(
    tmp_path: Path, unit: float, command: str
) -> None:
    env = _env(tmp_path, CHAINPUSH_DEV="maybe", CHAINPUSH_AUTH_SECRET=SECRET)
    proc = await asyncio.create_subprocess_exec(
        CHAINPUSH, command, *(["--no-watcher"] if command == "run" else []),
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30 * unit):
        _, err = await proc.communicate()
    assert proc.returncode == 2, err.decode()
    assert "CHAINPUSH_DEV" in err.decode() and "'maybe'" in err.decode()


async def test_demo_dev_login_stays_off_beside_a_real_secret_unless_asked(
    tmp_path: Path, unit: float
) -> None:
    """`chainpush auth` with a real secret: dev login only with an explicit CHAINPUSH_DEV=1."""
    env = _env(tmp_path, CHAINPUSH_AUTH_SECRET=SECRET)
    async with (
        cli(["auth", "--port", "0"], env, tmp_path, r"auth service at (http://\S+)", unit)
        as (found, _), aiohttp.ClientSession() as http,
    ):
        async with http.post(found.group(1) + "/auth/login", json={"user": "a"}) as resp:
            assert resp.status == 404
    env["CHAINPUSH_DEV"] = "yes"
    async with (
        cli(["auth", "--port", "0"], env, tmp_path, r"auth service at (http://\S+)", unit)
        as (found, lines), aiohttp.ClientSession() as http,
    ):
        assert any("never expose this auth service" in line for line in lines)
        async with http.post(found.group(1) + "/auth/login", json={"user": "a"}) as resp:
            assert resp.status == 200
