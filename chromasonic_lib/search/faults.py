"""Running the trials of a search through the faults of real infrastructure.

Two faults come back out of ``study.optimize`` as exceptions, and neither should end a search:

- A trial that another worker failed as stale (its worker slept, was paused or lost its
  heartbeats) can no longer be told. Its worker lets it go quietly, frees its memory and goes
  on with its next trial.
- A storage away for longer than ``storage_patience`` ends the worker, but with an error that
  names the storage (Optuna may have hidden it behind an ``UnboundLocalError`` of its own).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError

from .storage import RetryingStorage, StorageUnreachable, storage_error_in

log = logging.getLogger(__name__)


class TrialEndedElsewhere(RuntimeError):
    """The running trial was finished by another worker (failed as stale)."""


def ended_elsewhere(e: BaseException) -> bool:
    """Whether ``e`` says the trial was finished by someone else while it ran here."""
    x: BaseException | None = e
    while x is not None:
        if isinstance(x, (UpdateFinishedTrialError, TrialEndedElsewhere)):
            return True
        x = x.__cause__ or x.__context__
    return False


def note_failure(trial: optuna.Trial, reason: str, error: BaseException) -> None:
    """Record why ``trial`` failed; a trial already failed elsewhere raises
    :class:`TrialEndedElsewhere` instead (it takes no more attributes)."""
    if ended_elsewhere(error):
        raise TrialEndedElsewhere(f"trial {trial.number} was failed by another worker while it "
                                  f"ran here (stale: this worker paused or lost its heartbeats)")
    try:
        trial.set_user_attr("fail_reason", reason[:1000])
    except UpdateFinishedTrialError:
        raise TrialEndedElsewhere(f"trial {trial.number} was failed by another worker") from None


def optimize(study: optuna.Study, objective: Callable[[optuna.Trial], float], n_trials: int,
             timeout: float | None, n_jobs: int, callbacks: Sequence[Callable]) -> None:
    """``study.optimize`` for ``n_trials`` trials (``timeout`` seconds at most), going on past
    trials that other workers failed as stale; a storage gone for good raises
    :class:`~.storage.StorageUnreachable`."""
    started, ended = 0, []
    begin = time.monotonic()

    def run(trial: optuna.Trial) -> float:
        nonlocal started
        started += 1
        try:
            return objective(trial)
        except Exception as e:
            if ended_elsewhere(e):
                ended.append(trial.number)
                log.warning("trial %d was failed by another worker while it ran here (stale: this "
                            "worker paused or lost its heartbeats); its work here ends, and this "
                            "worker goes on with its next trial", trial.number)
            raise

    while started < n_trials:
        left = None
        if timeout:
            left = timeout - (time.monotonic() - begin)
            if left <= 0:
                return
        try:
            study.optimize(run, n_trials=n_trials - started, timeout=left, n_jobs=n_jobs,
                           catch=(Exception,), callbacks=list(callbacks), gc_after_trial=False)
            return
        except Exception as e:
            gone = storage_error_in(e) or _gave_up(study)
            if gone is not None:
                cause = gone.__cause__ or gone
                raise StorageUnreachable(gone.storage, gone.patience, cause) from cause
            # Optuna can't tell a trial that is finished already ("Cannot tell a FAIL trial"):
            # that is how a trial failed elsewhere comes back out of optimize.
            if not ended:
                raise
            ended.clear()


def _gave_up(study: optuna.Study) -> StorageUnreachable | None:
    storage = study._storage
    return storage.gave_up if isinstance(storage, RetryingStorage) else None
