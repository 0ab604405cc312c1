"""Two watchers on one checkpoint key, in the deterministic simulation (``watcher_sim``).

Both steppers share the model chain, the message store and the checkpoint store; a model of
the lease (``watcher.lease``) decides which one leads: the holder renews whenever it runs, a
standby takes over once the holder has not renewed for ``lease_ticks`` scheduling ticks, and a
watcher is *paused* now and then (SIGSTOP) for up to three leases. The checkpoint is fenced
as in ``watcher.checkpoint``: a ``Load`` raises the fence to the reader's generation, a
``Propose`` / ``Save`` of another generation is refused, an ``Accept`` of a batch that no
proposal of this session covers is refused too; an ``Accept`` right after a stored proposal
goes through even when the watcher has been superseded meanwhile (the in-flight batch of a
paused leader). A superseded leader learns it at its next fenced write, or earlier at
random (its renewal refused). At the end the superseded one runs until it gives up, then the
leader catches up, and the invariant of ``watcher_sim`` is checked.

``leased=False`` is the code before issue 12: both watchers write, unfenced, last writer wins.
"""

from __future__ import annotations

from typing import Any

from chainpush.watcher.checkpoint import CheckpointError, LeaseLost
from chainpush.watcher.errors import RangeTooLarge, RateLimited, ReorgTooDeep, WatcherError
from chainpush.watcher.sink import SinkError
from chainpush.watcher.stepper import Accept, FetchRange, Load, Propose, Save, Steps, WaitHead
from tests.sim.watcher_sim import Faults, Sim, SimFailure


class LeaseSim(Sim):
    def __init__(self, seed: int, *, leased: bool = True) -> None:
        super().__init__(seed)
        self.faults.crash = 0.0  # this simulation's faults are the pauses and takeovers
        self.leased = leased
        self.steppers = [self.stepper, self._new_stepper()]
        self.gens: list[Steps | None] = [None, None]
        self.results: list[Any] = [None, None]
        self.errors: list[BaseException | None] = [None, None]
        self.tokens: list[int | None] = [None, None]  # the generation each believes it holds
        self.covered = [False, False]  # its next Accept is of its stored proposal
        self.paused_until = [0, 0]
        self.generation = 0
        self.holder: int | None = None
        self.renewed_at = 0
        self.fence = 0
        self.lease_ticks = self.rng.randint(3, 30)
        self.tick = 0
        self.me = 0
        self.takeovers = 0
        self.refused = 0

    # --- the fenced checkpoint store (watcher.checkpoint's rules) ------------------------------

    def _perform(self, action: Any, f: Faults) -> Any:
        i = self.me
        covered, self.covered[i] = self.covered[i], False
        if not self.leased:
            return super()._perform(action, f)
        token = self.tokens[i]
        assert token is not None
        if isinstance(action, Load):
            if self.fence > token:
                raise self._refused("reading", token)
            self.fence = token  # in the same atomic update as the read
            doc = super()._perform(action, f)
            self.covered[i] = bool(doc and doc.get("proposed"))
            return doc
        if isinstance(action, Propose | Save) or (isinstance(action, Accept) and not covered):
            if self.fence != token:
                raise self._refused(type(action).__name__.lower(), token)
        result = super()._perform(action, f)
        if isinstance(action, Propose):
            self.covered[i] = True
        return result

    def _refused(self, what: str, token: int) -> LeaseLost:
        self.refused += 1
        return LeaseLost(f"{what} refused: generation {token} superseded by {self.fence}",
                         fenced=True)

    # --- two watchers, one lease ----------------------------------------------------------------

    def _stop(self, i: int) -> None:
        gen = self.gens[i]
        if gen is not None:
            gen.close()
        self.gens[i] = None
        self.results[i], self.errors[i] = None, None

    def _lease(self, i: int) -> bool:
        """The lease seen by watcher ``i`` when it runs; True when it may take a step."""
        if not self.leased:
            return True
        if self.tokens[i] is None:  # a standby
            if self.holder is None or self.tick - self.renewed_at >= self.lease_ticks:
                self.generation += 1
                self.holder, self.tokens[i], self.renewed_at = i, self.generation, self.tick
                self.takeovers += 1
                self._stop(i)  # a new session: it loads (and fences) first
                return True
            return False
        if self.holder == i:
            self.renewed_at = self.tick  # its renewal
            return True
        if self.rng.random() < 0.5:  # superseded: its renewal is refused before this step
            self.tokens[i] = None
            self._stop(i)
            return False
        return True  # it does not know yet: its next fenced write will tell it

    def _step(self, i: int, f: Faults) -> None:
        """One action of watcher ``i`` (a new session first if it has none)."""
        self.me = i
        if self.gens[i] is None:
            self.gens[i] = self.steppers[i].session(subscriptions=self.rng.random() < 0.5)
        gen = self.gens[i]
        assert gen is not None
        try:
            result, error = self.results[i], self.errors[i]
            action = gen.send(result) if error is None else gen.throw(error)
        except ReorgTooDeep as exc:
            raise SimFailure(f"the model forked below what the watcher took as final: "
                             f"{exc}") from exc
        except WatcherError:
            self.failures += 1
            self._stop(i)
            return
        self.results[i], self.errors[i] = None, None
        self.actions += 1
        self._world_moves(True)
        if isinstance(action, WaitHead) and self.rng.random() < 0.5:
            self.chain.mine()
        try:
            self.results[i] = self._perform(action, f)
        except LeaseLost:
            self.tokens[i] = None
            self._stop(i)
        except (RangeTooLarge, RateLimited) as exc:
            if isinstance(action, FetchRange):
                self.errors[i] = exc
            else:
                self.failures += 1
                self._stop(i)
        except (WatcherError, SinkError, CheckpointError):
            self.failures += 1
            self._stop(i)

    def run(self) -> None:
        f, rng = self.faults, self.rng
        for _ in range(rng.randint(100, 800)):
            self.tick += 1
            ready = [i for i in (0, 1) if self.paused_until[i] <= self.tick]
            if not ready:
                continue
            i = rng.choice(ready)
            if rng.random() < 0.03:  # SIGSTOP: not scheduled for up to three leases
                self.paused_until[i] = self.tick + rng.randint(1, 3 * self.lease_ticks)
                continue
            if self._lease(i):
                self._step(i, f)
        # the end: the superseded one (if any) runs until it gives up; a leader catches up
        self.chain.mine(self.window + 2)
        if self.leased:
            leader = self.holder if self.holder is not None else 0
            if self.tokens[leader] != self.generation:
                self.tick += self.lease_ticks
                self.tokens[leader] = None
                self._lease(leader)
            other = 1 - leader
            for _ in range(200):
                if self.tokens[other] is None:
                    break
                self._step(other, Faults.none())
            if self.tokens[other] is not None:
                raise SimFailure("a superseded watcher never learnt that it lost the lease")
        else:
            leader = 0
            for _ in range(50):  # both keep writing for a while, then 1 stops
                self._step(1, Faults.none())
        self._stop(0)
        self._stop(1)
        self.redis_away = 0.0  # a fault too: the registry answers (as in Sim.run's end)
        self.me = leader
        self.stepper = self.steppers[leader]
        if not self.drive(Faults.none(), chaos=False, budget=20_000, until_caught_up=True):
            got = self.stepper.committed
            raise SimFailure(f"the leader did not catch up to head {self.chain.head} "
                             f"(committed {got['block_number'] if got else None})")
        self.check()

    def summary(self) -> str:
        return (f"{super().summary()} lease {self.lease_ticks} ticks takeovers "
                f"{self.takeovers} refused {self.refused}")


def run_seed(seed: int, *, leased: bool = True) -> LeaseSim:
    sim = LeaseSim(seed, leased=leased)
    try:
        sim.run()
    except SimFailure as exc:
        raise SimFailure(f"seed {seed} ({sim.summary()}): {exc}\n  replay: "
                         f"python -c 'from tests.sim.lease_sim import run_seed; "
                         f"run_seed({seed}, leased={leased})'") from exc
    return sim
