"""When each trial of a search ends, and the best-so-far curve that follows: shared by the
benchmarks that compare searches by how soon they find a good model (search_strategies.py,
cv_pruners.py). Imported by those scripts from their own folder."""
from __future__ import annotations

import time


def record_trial_ends() -> dict[int, tuple[float, float]]:
    """From now on, in this process: trial number -> (wall, CPU) seconds at the end of its
    objective call, counted from the start of the search's first trial."""
    from chromasonic_lib.search.objective import Objective
    ends: dict[int, tuple[float, float]] = {}
    clock: list[tuple[float, float]] = []          # the search's start: the first trial's
    call = Objective.__call__

    def timed_call(self, trial):
        if not clock:
            clock.append((time.perf_counter(), time.process_time()))
        try:
            return call(self, trial)
        finally:
            ends[trial.number] = (time.perf_counter() - clock[0][0], time.process_time() - clock[0][1])

    Objective.__call__ = timed_call
    return ends


def best_curve(trials: list, ends: dict[int, tuple[float, float]]) -> tuple[list, float | None, dict]:
    """Over the trials in the order they ended: [wall s, CPU s, best, trial] at each new best,
    the final best, and how many trials ended in each state."""
    from optuna.trial import TrialState
    curve, best, states = [], None, {}
    for t in sorted(trials, key=lambda t: ends.get(t.number, (1e9,))[0]):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
        if t.state == TrialState.COMPLETE and (best is None or t.value < best):
            best = t.value
            wall, cpu = ends[t.number]
            curve.append([round(wall, 1), round(cpu, 1), round(best, 4), t.number])
    return curve, best, states
