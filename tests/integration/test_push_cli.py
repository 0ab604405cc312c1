"""The push-side CLI teaches: every subcommand's --help has a description, an example and the
defaults; a port already in use is one line naming the port and the option that changes it,
exit code 2, no traceback (real subprocesses, a port held by a socket of this test)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
CHAINPUSH = str(Path(sys.executable).parent / "chainpush")
SECRET = "cli-test-secret-" + "q" * 32


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port this test listens on, so that nobody else can bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def chainpush(tmp_path: Path, *args: str, unit: float,
              **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHAINPUSH_AUTH_SECRET": SECRET, **extra_env}
    env.pop("CHAINPUSH_DEV", None)
    return subprocess.run([CHAINPUSH, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60 * unit)


def error_lines(done: subprocess.CompletedProcess[str], command: str) -> list[str]:
    assert "Traceback" not in done.stderr, done.stderr
    return [line for line in done.stderr.splitlines() if line.startswith(f"chainpush {command}:")]


@pytest.mark.parametrize(("command", "option"), [("push", "--port"), ("auth", "--port")])
def test_port_in_use_is_one_line_naming_port_and_option(
    tmp_path: Path, held_port: int, command: str, option: str, unit: float,
) -> None:
    done = chainpush(tmp_path, command, "--port", str(held_port), unit=unit)
    assert done.returncode == 2, done.stderr
    lines = error_lines(done, command)
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert f"port {held_port} on 127.0.0.1 is already in use" in line
    # it ends with the command that fixes it, on a port that was free
    fix = line.split("pick another: ", 1)[1]
    assert fix.startswith(f"chainpush {command} {option} ")
    suggested = int(fix.split()[3])
    assert suggested not in (0, held_port)
    assert done.stderr.strip().splitlines()[-1] == line


def test_run_port_in_use_names_its_own_options(tmp_path: Path, held_port: int,
                                               unit: float) -> None:
    done = chainpush(tmp_path, "run", "--no-watcher", "--auth-port", str(held_port), unit=unit)
    assert done.returncode == 2, done.stderr
    (line,) = error_lines(done, "run")
    assert f"port {held_port} on 127.0.0.1 is already in use" in line
    assert "chainpush run --auth-port " in line


@pytest.mark.parametrize("command", ["push", "auth", "run", "watch"])
def test_help_has_description_example_and_defaults(tmp_path: Path, command: str,
                                                   unit: float) -> None:
    done = chainpush(tmp_path, command, "--help", unit=unit)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "examples:" in text and f"\n  chainpush {command}" in text, text
    assert "default" in text
    description = text.split("\n\n")[1]
    assert len(description) > 60 and not description.startswith(("options", "positional"))


def test_issue_errors_end_with_a_command(tmp_path: Path, unit: float) -> None:
    done = chainpush(tmp_path, "auth", "--issue", "alice", "--wallet", "0x1234", unit=unit)
    assert done.returncode == 2
    (line,) = error_lines(done, "auth")
    assert "'0x1234' is not an address" in line
    assert line.split("e.g.: ", 1)[1].startswith("chainpush auth --issue alice --wallet 0x")
    done = chainpush(tmp_path, "auth", "--topic", "contract:X", unit=unit)
    assert done.returncode == 2 and "only applies with --issue" in done.stderr


def test_publish_keys_from_the_environment_are_checked_and_redacted(tmp_path: Path,
                                                                    unit: float) -> None:
    key = "publish-" + "r" * 32
    done = chainpush(tmp_path, "auth", "--print-config", unit=unit, CHAINPUSH_PUBLISH_KEYS=key)
    assert done.returncode == 0, done.stderr
    assert key not in done.stdout
    assert '"keys": [\n      "<redacted>"\n    ]' in done.stdout
    done = chainpush(tmp_path, "auth", unit=unit, CHAINPUSH_PUBLISH_KEYS="short")
    assert done.returncode == 2
    (line,) = error_lines(done, "auth")
    assert "[publish] keys[0] is 5 characters" in line
    assert line.endswith("# or --dev to try it locally") and "CHAINPUSH_PUBLISH_KEYS=$(" in line
