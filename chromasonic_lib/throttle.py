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

    The pace follows the cheaper of the last two runs: one slow run alone (the first history
    figure pays for matplotlib's warm-up, 0.6 s against 0.1 s after) does not hold the next
    one back for 20 × its cost, while work that stays slow is paced by its cost.
    """

    def __init__(self, min_interval: float, max_share: float,
                 clock: Callable[[], float] = time.monotonic):
        self.min_interval, self.max_share, self.clock = min_interval, max_share, clock
        self.last = clock()             # when the work last ended
        self.cost = 0.0                 # seconds it took then, or the time before if less
        self._took: float | None = None   # seconds the last run took
        self.count, self.seconds = 0, 0.0

    def due(self) -> bool:
        return self.clock() - self.last >= max(self.min_interval, self.cost / self.max_share)

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Time the work; one that raises is not counted (and stays due)."""
        began = self.clock()
        yield
        self.last = self.clock()
        took = self.last - began
        self.cost = took if self._took is None else min(took, self._took)
        self._took = took
        self.count += 1
        self.seconds += took
