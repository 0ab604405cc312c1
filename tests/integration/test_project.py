"""A dapp team's first hour, from a wheel, in a directory outside this repository (issue 11).

One test walks the whole front door: build a wheel from the checkout's package sources (only
those: a path computed from the repository root would not survive), install it in a fresh venv
in a temporary directory, then, as a team would::

    chainpush init app            # their own project
    (their own contract: Vault)
    chainpush compile             # contracts/*.sol → abi/
    chainpush dev up              # state in app/.chainpush
    chainpush deploy Vault ARGS   # constructor args by ABI type → deployments/31337.json
    chainpush call Vault total    # 0
    chainpush call Vault deposit --value 1000 --send
    chainpush watch --check-config   with just [[contracts]] name = "Vault"
    chainpush run                 # a websocket client receives Vault's Deposited event
    chainpush dev down

Decisions that keep it fast and offline-safe:

* the wheel is built with ``pip wheel --no-deps --no-build-isolation`` from a copy of the package
  sources (no download of build requirements, nothing written into the checkout);
* the fresh venv has no pip and no dependencies of its own: the wheel goes in with ``--no-deps``
  and a ``.pth`` file makes our venv's third-party packages importable (web3 & co., 100 MB that
  PyPI would only give us again). Our venv's editable chainpush is *not* picked up: its finder
  is installed by a ``.pth`` file that only runs in a site directory, and the test checks that
  ``chainpush`` imports from the fresh venv;
* ``npm install`` is replaced by a symlink to our ``node_modules``: the project's package.json
  pins the same anvil and solc as ours (``tests/unit/test_init.py`` checks that);
* ``HOME`` is an empty directory that must stay empty: nothing is written outside the project.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from chainpush import procs
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

#: the package sources a wheel is built from (everything else in the checkout stays out)
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "chainpush", "watcher", "push")

VAULT = """\
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// A team's own contract: deposits add up; each one is an event.
contract Vault {
    string public label;
    address public owner;
    uint256 public total;

    event Deposited(address indexed from, uint256 amount, uint256 total);

    constructor(string memory label_, address owner_) {
        label = label_;
        owner = owner_;
    }

    function deposit() external payable {
        total += msg.value;
        emit Deposited(msg.sender, msg.value, total);
    }
}
"""

SECOND_ACCOUNT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil's account 1


@dataclass(frozen=True, slots=True)
class Installed:
    venv: Path
    chainpush: Path
    env: dict[str, str]


def build_wheel(work: Path, unit: float) -> Path:
    src = work / "src"
    for name in PACKAGE_SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.egg-info", "node_modules"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, src / name)
    dist = work / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--quiet", "--wheel-dir", str(dist), str(src)],
        capture_output=True, text=True, timeout=180 * unit,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = dist.glob("chainpush-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    # what the team's project needs from the package itself: the solc shim and the templates
    assert {"chainpush/watcher/tools/solc", "chainpush/templates/project/chainpush.toml",
            "chainpush/templates/project/gitignore", "chainpush/push/static/index.html",
            "chainpush/push/static/client/index.js",
            "chainpush/push/static/client/index.d.ts"} <= names
    # one importable namespace: nothing installs as a top-level `watcher` or `push` (they
    # would collide with other distributions, e.g. OpenStack's python-watcher)
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"chainpush", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                    + ".dist-info"}, tops
    return wheel


def install(work: Path, wheel: Path, unit: float) -> Installed:
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60 * unit)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--disable-pip-version-check", "--quiet", str(wheel)],
        capture_output=True, text=True, timeout=120 * unit,
    )
    assert done.returncode == 0, done.stderr
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=30 * unit,
    ).stdout.strip()
    # our venv's third-party packages, appended after the fresh venv's own site-packages
    (Path(site) / "_chainpush_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    home = work / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CHAINPUSH_") and k not in ("MONGO_URI", "VIRTUAL_ENV")}
    env.update({
        "HOME": str(home),
        "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
        # nx-27017's console script lives beside our interpreter, not the fresh one's
        "CHAINPUSH_NX27017": str(Path(sys.executable).parent / "nx-27017"),
        "SOLCX_BINARY_PATH": str(work / "no-solcx"),
        "CHAINPUSH_LOG_LEVEL": "WARNING",
    })
    return Installed(venv=venv, chainpush=venv / "bin" / "chainpush", env=env)


def sh(installed: Installed, cwd: Path, *args: str, unit: float,
       timeout_units: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(installed.chainpush), *args], cwd=cwd, env=installed.env,
                          capture_output=True, text=True, timeout=timeout_units * unit)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    assert not tmp_path.resolve().is_relative_to(ROOT.resolve())
    yield tmp_path
    # whatever happened, stop the project's dev stack
    app = tmp_path / "app"
    if (app / ".chainpush" / "dev" / "stack.json").exists():
        from chainpush import devstack

        devstack.down(app / ".chainpush" / "dev")


def test_a_team_project_from_a_wheel(work: Path, unit: float) -> None:
    installed = install(work, build_wheel(work, unit), unit)
    where = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c",
         "import chainpush, chainpush.watcher.service, chainpush.push.node\n"
         "print(chainpush.__file__, chainpush.watcher.service.__file__,"
         " chainpush.push.node.__file__)\n"
         "import importlib.util\n"
         "assert importlib.util.find_spec('watcher') is None, 'a top-level watcher'\n"
         "assert importlib.util.find_spec('push') is None, 'a top-level push'"],
        capture_output=True, text=True, env=installed.env, cwd=work, timeout=60 * unit,
    )
    assert where.returncode == 0, where.stderr
    assert all(Path(p).is_relative_to(installed.venv) for p in where.stdout.split()), where.stdout

    # chainpush init: the scaffold, and the next steps
    out = ok(sh(installed, work, "init", "app", "--no-install", unit=unit))
    assert "next steps:" in out and "chainpush compile" in out
    app = work / "app"
    for name in ("chainpush.toml", "contracts", "abi", "package.json", ".gitignore"):
        assert (app / name).exists(), name
    (app / "node_modules").symlink_to(ROOT / "node_modules")  # instead of `npm install`
    (app / "contracts" / "Vault.sol").write_text(VAULT)

    # compile, with the wasm solc from the project's node_modules through the shipped shim
    ok(sh(installed, app, "compile", unit=unit))
    assert {"Vault.abi", "Vault.json", "Counter.abi", "Counter.json"} <= {
        p.name for p in (app / "abi").iterdir()}

    # the dev stack, on free ports, with its state in the project
    ports = [str(procs.free_port()) for _ in range(3)]
    ok(sh(installed, app, "dev", "up", "--node-port", ports[0], "--redis-port", ports[1],
          "--mongo-port", ports[2], unit=unit))
    stack = json.loads((app / ".chainpush" / "dev" / "stack.json").read_text())
    assert stack["node"]["url"] == f"http://127.0.0.1:{ports[0]}"
    assert Path(stack["ipc_path"]).is_relative_to(app)
    try:
        # deploy with constructor arguments parsed by ABI type; the node is the dev chain's
        out = ok(sh(installed, app, "deploy", "Vault", "team vault", SECOND_ACCOUNT, unit=unit))
        address = out.strip().splitlines()[-1]
        record = json.loads((app / "deployments" / "31337.json").read_text())
        assert record["chain_id"] == 31337
        assert record["contracts"]["Vault"]["address"] == address
        assert ok(sh(installed, app, "call", "Vault", "label", unit=unit)).splitlines()[-1] \
            == "team vault"
        assert ok(sh(installed, app, "call", "Vault", "owner", unit=unit)).splitlines()[-1] \
            == SECOND_ACCOUNT
        assert ok(sh(installed, app, "call", "Vault", "total", unit=unit)).splitlines()[-1] == "0"

        # [[contracts]] name = "Vault" is all the watcher needs once deploy recorded it
        config = app / "chainpush.toml"
        config.write_text(config.read_text() + '\n[[contracts]]\nname = "Vault"\n\n'
                          "[push]\nport = 0\n\n[auth]\nport = 0\n")  # free ports for `run`
        env_lines = ok(sh(installed, app, "dev", "env", unit=unit))
        stack_env = dict(re.findall(r"export (\w+)=(\S+)", env_lines))
        installed.env.update(stack_env)
        checked = ok(sh(installed, app, "watch", "--check-config", unit=unit))
        assert f"Vault at {address} on chain 31337: code present" in checked

        # the whole path: watcher → collect → push node → a websocket client
        token = ok(sh(installed, app, "auth", "--dev", "--issue", "alice", unit=unit)).strip()
        with subprocess.Popen(
            [str(installed.chainpush), "run"], cwd=app, env=installed.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        ) as run:
            try:
                push_url = wait_for_push_url(run, 60 * unit)
                # keep reading its stderr so that a chatty run never blocks on a full pipe
                assert run.stderr is not None
                threading.Thread(target=run.stderr.read, daemon=True).start()
                received = deposit_and_receive(installed, app, push_url, token, unit)
            finally:
                procs.stop_pid(run.pid, 10 * unit, None)
        assert received["record"]["event"] == "Deposited"
        assert received["record"]["address"] == address
        assert received["record"]["args"]["amount"] == "1000"
        assert ok(sh(installed, app, "call", "Vault", "total", unit=unit)).splitlines()[-1] \
            == "1000"
    finally:
        down = sh(installed, app, "dev", "down", unit=unit)
    assert "stopped 3 process(es)" in ok(down)
    assert not any(procs.port_open("127.0.0.1", int(p)) for p in ports)
    assert list((work / "home").iterdir()) == []  # nothing written outside the project


def wait_for_push_url(run: subprocess.Popen[str], timeout_s: float) -> str:
    """The first push node's URL from `chainpush run`'s start-up line on stderr."""
    assert run.stderr is not None
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = run.stderr.readline()
        if not line:
            pytest.fail("chainpush run exited before serving:\n" + "".join(seen))
        seen.append(line)
        found = re.search(r"push nodes: (ws://\S+?)[,)]", line)
        if found:
            return found.group(1)
    pytest.fail("chainpush run did not start in time:\n" + "".join(seen))


def deposit_and_receive(installed: Installed, app: Path, push_url: str, token: str,
                        unit: float) -> dict[str, object]:
    """Subscribe to contract:Vault, send a deposit, return the first Deposited message."""
    with ws_connect(push_url, open_timeout=10 * unit) as ws:
        ws.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(ws.recv(timeout=10 * unit))["type"] == "welcome"
        ws.send(json.dumps({"type": "subscribe", "topic": "contract:Vault", "since": 0}))
        assert json.loads(ws.recv(timeout=10 * unit))["type"] == "subscribed"
        sent = ok(sh(installed, app, "call", "Vault", "deposit", "--value", "1000", "--send",
                     unit=unit))
        lines = sent.splitlines()
        assert lines[0].startswith("tx 0x") and lines[1].startswith("block ")
        (event,) = [line for line in lines if line.startswith("event ")]
        assert event.startswith("event Deposited ")
        assert json.loads(event.removeprefix("event Deposited "))["amount"] == 1000
        deadline = time.monotonic() + 60 * unit
        while time.monotonic() < deadline:
            frame = json.loads(ws.recv(timeout=deadline - time.monotonic()))
            if frame["type"] == "message":
                record: dict[str, object] = frame["record"]
                assert record["tx_hash"] == lines[0].removeprefix("tx ")
                return frame
        pytest.fail("no message for contract:Vault within the time limit")
