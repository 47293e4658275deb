"""How often the monitor may redraw while a run trains in the same process: the figures a user watches (step,
loss, ETA, memory) at least once a second, and the whole screen as often as a set share of one core allows.

On a GPU machine a redraw costs a few milliseconds and the monitor redraws every tick; on two shared CPU cores,
where training and the UI compete for the same cores and the GIL, full redraws (chart, samples, log) come less
often instead of slowing the run (bench/ui_overhead.py). The cost is measured, not guessed: the UI thread's own
CPU time since the last full redraw. That time also holds work that is not the monitor's (the wizard's timers,
toasts, input), so the budget can never stop redraws: a light redraw of the title and stats is due every
`max_interval` whatever was spent, and a full one every `full_max_interval`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Redraw = Literal["full", "light"]


@dataclass
class RedrawBudget:
    share: float = 0.015  # of one core, while training
    min_interval: float = 0.25  # seconds: the most often a redraw is useful to the eye
    max_interval: float = 1.0  # the step, loss and ETA a user watches move at least this often
    full_max_interval: float = 5.0  # the chart, samples and log, at least this often
    _last_full: float = field(default=-math.inf, repr=False)
    _last_any: float = field(default=-math.inf, repr=False)
    _last_cpu: float = field(default=0.0, repr=False)

    def due(self, wall: float, cpu: float) -> Redraw | None:
        """Which redraw may happen now, if any. `wall` is a monotonic clock, `cpu` the UI thread's CPU time
        (time.thread_time()); both in seconds. An answer starts the next interval of its kind."""
        if wall - self._last_any < self.min_interval:
            return None
        spent = max(0.0, cpu - self._last_cpu)  # the UI's CPU since the last full redraw, its own work included
        if wall - self._last_full >= min(self.full_max_interval, max(self.min_interval, spent / self.share)):
            self._last_full = self._last_any = wall
            self._last_cpu = cpu
            return "full"
        if wall - self._last_any >= self.max_interval:
            self._last_any = wall
            return "light"
        return None

    def reset(self) -> None:
        """The next call is a full redraw (a resize, a finished run: draw at once)."""
        self._last_full = self._last_any = -math.inf
