"""The workers supervisor's restart policy (pure) and the supervisor on real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from chainpush.push.workers import RestartPolicy, Supervisor


def test_a_worker_that_lived_is_restarted_at_once_one_dying_young_backs_off_then_gives_up() -> None:
    policy = RestartPolicy(young_s=5, max_young_deaths=3, first_delay_s=0.2, max_delay_s=1.0)
    assert policy.on_exit(0, started_at=0, now=60) == 0.2  # lived a minute: a crash, retry
    assert policy.on_exit(0, started_at=60, now=61) == 0.2  # died young: 1st
    assert policy.on_exit(0, started_at=61, now=62) == 0.4  # 2nd
    assert policy.on_exit(1, started_at=0, now=1) == 0.2  # per worker
    assert policy.on_exit(0, started_at=62, now=63) is None  # 3rd in a row: give up
    assert policy.on_exit(1, started_at=1, now=100) == 0.2  # lived: its count starts over


async def test_supervisor_restarts_a_killed_worker_and_stops_them_all(tmp_path: Path) -> None:
    marks = tmp_path / "starts"
    script = tmp_path / "worker.py"
    script.write_text(
        "import sys, time, signal\n"
        f"open({str(marks)!r}, 'a').write(sys.argv[1] + '\\n')\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "time.sleep(60)\n")
    sup = Supervisor(lambda i: [sys.executable, str(script), str(i)], 2,
                     policy=RestartPolicy(first_delay_s=0.05))
    running = asyncio.create_task(sup.run())
    def starts() -> list[str]:
        return marks.read_text().split() if marks.exists() else []

    async with asyncio.timeout(20):
        await until(lambda: len(starts()) == 2)
        first = sup.pids()[1]
        assert first is not None
        os.kill(first, signal.SIGKILL)  # a crash of worker 1
        await until(lambda: starts().count("1") == 2)
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's own stop request
        assert await running == 0
    assert sorted(starts()) == ["0", "1", "1"]
    assert sup.pids() == {0: None, 1: None}  # every worker stopped


async def until(check: Callable[[], bool]) -> None:
    while not check():  # noqa: ASYNC110 - another process's file: nothing to await
        await asyncio.sleep(0.02)
