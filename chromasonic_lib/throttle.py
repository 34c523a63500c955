"""When to redo a costly refresh during a search (a live frame, the history PNG): rarely
enough that a study of fast trials is not slowed by it, however large it grows."""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator


class Throttle:
    """Due at most once per ``min_interval`` seconds, and rarer when the work is slow: it takes
    at most ``max_share`` of the time (a figure of 10,000 points is drawn less often than one
    of 10). Time each run of the work with ``with throttle.timed():``; the first is due
    ``min_interval`` seconds after the throttle is made.
    """

    def __init__(self, min_interval: float, max_share: float,
                 clock: Callable[[], float] = time.monotonic):
        self.min_interval, self.max_share, self.clock = min_interval, max_share, clock
        self.last = clock()             # when the work last ended
        self.cost = 0.0                 # seconds it took then
        self.count, self.seconds = 0, 0.0

    def due(self) -> bool:
        return self.clock() - self.last >= max(self.min_interval, self.cost / self.max_share)

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Time the work; one that raises is not counted (and stays due)."""
        began = self.clock()
        yield
        self.last = self.clock()
        self.cost = self.last - began
        self.count += 1
        self.seconds += self.cost
