"""How often the monitor may redraw: as often as its timer asks, but never so often that the UI thread uses more
than a set share of one core while a run trains in the same process.

On a GPU machine a redraw costs a few milliseconds and the monitor redraws every tick; on two shared CPU cores,
where training and the UI compete for the same cores and the GIL, it redraws less often instead of slowing the
run (bench/ui_overhead.py). The cost is measured, not guessed: the UI thread's own CPU time between ticks,
which includes the compositor's work after a redraw, input handling and the event loop itself."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class RedrawBudget:
    share: float = 0.015  # of one core, while training
    min_interval: float = 0.25  # seconds: the most often a redraw is useful to the eye
    _last_wall: float = field(default=-math.inf, repr=False)
    _last_cpu: float = field(default=0.0, repr=False)

    def due(self, wall: float, cpu: float) -> bool:
        """True when a redraw may happen now. `wall` is a monotonic clock, `cpu` the UI thread's CPU time
        (time.thread_time()); both in seconds. A True answer starts the next interval."""
        spent = max(0.0, cpu - self._last_cpu)  # the UI's CPU since the last redraw, its own work included
        if wall - self._last_wall < max(self.min_interval, spent / self.share):
            return False
        self._last_wall, self._last_cpu = wall, cpu
        return True

    def reset(self) -> None:
        """The next call is due (a resize, a finished run: draw at once)."""
        self._last_wall = -math.inf
