"""Counters and gauges rendered in the Prometheus text exposition format (version 0.0.4).

Pure and tiny on purpose: a process has one :class:`Metrics`; adapters bump counters, the HTTP
side renders them at ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Metrics:
    """Named counters (monotonic) and gauges (sampled by a callback at render time)."""

    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, Callable[[], float]] = field(default_factory=dict)
    help: dict[str, str] = field(default_factory=dict)

    def inc(self, name: str, by: float = 1.0) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + by

    def counter(self, name: str, help_text: str) -> None:
        """Declare a counter so it renders as 0 before its first increment."""
        self.counters.setdefault(name, 0.0)
        self.help[name] = help_text

    def gauge(self, name: str, help_text: str, sample: Callable[[], float]) -> None:
        self.gauges[name] = sample
        self.help[name] = help_text

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self.counters):
            lines += [f"# HELP {name} {self.help.get(name, name)}", f"# TYPE {name} counter",
                      f"{name} {self.counters[name]:g}"]
        for name in sorted(self.gauges):
            lines += [f"# HELP {name} {self.help.get(name, name)}", f"# TYPE {name} gauge",
                      f"{name} {self.gauges[name]():g}"]
        return "\n".join(lines) + "\n"
