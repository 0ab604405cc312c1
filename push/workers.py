"""``chainpush push --workers N``: one push node process per core, sharing one port.

Why processes: a push node is one asyncio loop, i.e. one core; a host with N cores runs N of
them. Each worker is a full push node (``chainpush push`` with ``--worker I/N``) bound to the same
host and port with ``SO_REUSEPORT``, so the kernel spreads new connections over the workers (by
the hash of the connection's addresses). Each has **its own node id in the registry**,
``<node_id>-<i>``, its own Redis inbox and its own subscriptions: dispatch sends one copy of a
message per worker with subscribers, exactly as for separate hosts, and nothing is shared between
workers (no lock, no shared memory). The public URL (``public_url``, the host's) is the same for
all, so placement (``push.placement``) places a user on a host; which worker of the host serves
each of its connections is the kernel's choice.

The supervisor (this module) starts the workers, restarts one that dies (with a backoff that
grows while it keeps dying young, and gives up — exiting 1 — after ``max_young_deaths`` deaths
in a row within ``young_s`` of their start, which is a configuration or code error, not a
crash to retry forever), and forwards SIGTERM/SIGINT: every worker closes its connections with
1001 (clients resume elsewhere) and the supervisor exits when they have.

``RestartPolicy`` is the pure decision; ``Supervisor`` the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RestartPolicy:
    """When to restart a worker that exited (pure; times are ``time.monotonic()`` seconds)."""

    young_s: float = 5.0
    max_young_deaths: int = 5
    first_delay_s: float = 0.2
    max_delay_s: float = 10.0
    _young_deaths: dict[int, int] = field(default_factory=dict)

    def on_exit(self, worker: int, started_at: float, now: float) -> float | None:
        """The delay before restarting ``worker``, or None to give up."""
        if now - started_at >= self.young_s:
            self._young_deaths[worker] = 0
            return self.first_delay_s
        deaths = self._young_deaths.get(worker, 0) + 1
        self._young_deaths[worker] = deaths
        if deaths >= self.max_young_deaths:
            return None
        return float(min(self.max_delay_s, self.first_delay_s * 2.0 ** (deaths - 1)))


class Supervisor:
    """Run ``argv_for(i)`` for ``i`` in ``0..workers-1`` until told to stop."""

    def __init__(self, argv_for: Callable[[int], Sequence[str]], workers: int, *,
                 policy: RestartPolicy | None = None, stop_timeout_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.argv_for = argv_for
        self.workers = workers
        self.policy = policy or RestartPolicy()
        self.stop_timeout_s = stop_timeout_s
        self._clock = clock
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()

    def pids(self) -> dict[int, int | None]:
        """Worker index → pid of its running process (None while it is being restarted)."""
        return {i: (p.pid if p.returncode is None else None) for i, p in self._procs.items()}

    async def run(self) -> int:
        """0 after a requested stop; 1 when a worker kept dying young (given up)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            keepers = [asyncio.create_task(self._keep(i)) for i in range(self.workers)]
            stop = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait([stop, *keepers], return_when=asyncio.FIRST_COMPLETED)
            failed = any(t in done and t.result() for t in keepers)
            self._stopping.set()
            await self._stop_all()
            for task in [*keepers, stop]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            return 1 if failed else 0
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _keep(self, i: int) -> bool:
        """Keep worker ``i`` running; True when its restarts were given up."""
        while not self._stopping.is_set():
            started = self._clock()
            proc = await asyncio.create_subprocess_exec(*self.argv_for(i))
            self._procs[i] = proc
            logger.info("push worker %d started (pid %d)", i, proc.pid)
            code = await proc.wait()
            if self._stopping.is_set():
                return False
            delay = self.policy.on_exit(i, started, self._clock())
            if delay is None:
                logger.error("push worker %d exited with %s again within %.0f s of its start, "
                             "%d times in a row: giving up (see its log above)", i, code,
                             self.policy.young_s, self.policy.max_young_deaths)
                return True
            logger.warning("push worker %d (pid %d) exited with %s; restarting it in %.1f s",
                           i, proc.pid, code, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
        return False

    async def _stop_all(self) -> None:
        alive = [p for p in self._procs.values() if p.returncode is None]
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.stop_timeout_s):
                for proc in alive:
                    await proc.wait()
        except TimeoutError:
            for proc in alive:
                if proc.returncode is None:
                    logger.warning("push worker pid %d did not stop in %.0f s: killing it",
                                   proc.pid, self.stop_timeout_s)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            for proc in alive:
                await proc.wait()
