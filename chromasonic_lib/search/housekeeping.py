"""Housekeeping that never ends a search: result files, the history PNG, the live view,
checkpoint uploads and the pruning of old checkpoints.

Each chore runs under :class:`Chores`, which logs a failure once with its reason (disk full,
permission denied, an S3 error) and simply tries again after the next trial. The study in its
storage is the record; files are views of it, and weights are a bonus on a trial's value.
A storage that stays away is not housekeeping: that error goes through.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import optuna

from .storage import StorageUnreachable, describe

log = logging.getLogger(__name__)


class Chores:
    """Run named chores; a failing one is logged once, and again only once it recovered."""

    def __init__(self):
        # chore -> why it first failed in its current outage. Chores run in several threads:
        # dict.setdefault and dict.pop are atomic, so one of them logs each change.
        self.failing: dict[str, str] = {}

    def run(self, name: str, fn: Callable[..., Any], *args, **kwargs) -> tuple[Any, str | None]:
        """``fn(*args, **kwargs)``'s result and None; or, when it fails (logged once per outage of
        ``name``), None and this call's own reason: what a trial records of its own chore,
        whatever chores of the same name beside it did."""
        try:
            result = fn(*args, **kwargs)
        except StorageUnreachable:
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {describe(e)}"[:500]
            if self.failing.setdefault(name, reason) is reason:
                log.warning("%s failed: %s; the search goes on, and tries again after the next "
                            "trial", name, reason)
            return None, reason
        if self.failing.pop(name, None) is not None:
            log.info("%s: working again", name)
        return result, None

    def callback(self, name: str, fn: Callable[[optuna.Study, Any], None]) -> Callable:
        """An Optuna callback that runs ``fn`` as the chore ``name``."""
        def call(study: optuna.Study, trial: Any = None) -> None:
            self.run(name, fn, study, trial)
        return call


CHORES = Chores()       # one per process: a failure is logged once, however many searches


def upload_weights(trial: optuna.Trial, upload: Callable[[], Any]) -> None:
    """Run ``upload`` (the trial's checkpoint to the artifact store); if it fails, the trial
    keeps its value and says why its weights are missing (user attribute ``checkpoint_error``)."""
    # This upload's own outcome: another trial's upload beside it may fail or recover meanwhile.
    _, reason = CHORES.run("checkpoint upload", upload)
    if reason is not None:
        trial.set_user_attr("checkpoint_error", reason)
        log.info("trial %d keeps its value without its weights (%s)", trial.number, reason)
