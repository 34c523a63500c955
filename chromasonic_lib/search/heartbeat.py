"""Heartbeats for studies on a journal file (``storage="journal:<file>"``) or behind Optuna's
gRPC storage proxy (``storage="grpc://host:port"``).

Optuna gives heartbeats only to RDB storages opened directly; on its JournalStorage, or through
its proxy, a worker killed by SIGKILL would leave its trial RUNNING forever. Here a running trial keeps its heartbeat fresh, and each
worker fails the trials whose heartbeat is older than the grace period and queues their
parameters again, as ``open_storage`` arranges for RDB storages.

A trial's first beat is its user attribute ``heartbeat`` (it names the worker); the later ones
replace one small file per running trial in ``<journal>.heartbeats/`` beside the journal,
removed once the trial is told. A journal is never rewritten, only replayed: a record per beat of
every running trial would grow it, and slow every worker's replay of it, without bound.
Through the proxy every beat is that user attribute, one row the database overwrites.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable
import warnings

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ..atomic import atomic_write
from ..optuna_private import journal_file, storage_of, study_id, trial_id
from .storage import fail_with_reason

log = logging.getLogger(__name__)

HEARTBEAT = "heartbeat"     # user attribute of a running trial: {"time": unix seconds, "worker": "host:pid"}
MAX_RETRY = 3               # as open_storage gives RDB storages


class JournalHeartbeat:
    """This worker's heartbeats, and the check that fails the trials of workers gone quiet.

    The check runs when a trial starts and ends (as an Optuna callback), and every grace period
    while one runs.

    Parameters
    ----------
    interval : float
        Seconds between two heartbeats of a trial (each one is a journal append).
    grace_period : float
        A RUNNING trial whose last heartbeat (before its first one: its start) is older than
        this is failed. Beats come from a thread, as Optuna's own for RDB storages, so an
        epoch may last longer than this.
    """

    def __init__(self, interval: float, grace_period: float):
        self.interval, self.grace_period = interval, grace_period
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.run = uuid.uuid4().hex[:12]    # this search's beats, whatever else the process runs
        # Each running trial's last heartbeat (several trials may run at once, a thread each).
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()

    def start(self, trial: optuna.Trial) -> Callable[[], None]:
        """Beat now, then every ``interval`` seconds from a thread until the returned function
        is called (before the trial finishes: a finished trial takes no more attributes)."""
        self.beat(trial)            # at once: a worker that dies in epoch 0 is named too
        stop = threading.Event()

        def loop() -> None:
            checked = time.monotonic()
            while not stop.wait(self.interval):
                try:
                    self.beat(trial)
                    # A trial may last for hours (a cross-validated one trains K times): a dead
                    # worker's trial is not left RUNNING until this one ends.
                    if time.monotonic() - checked >= self.grace_period:
                        checked = time.monotonic()
                        self.fail_stale_trials(trial.study)
                except Exception as e:      # a beat lost is not worth the trial
                    log.warning("trial %d: heartbeat not recorded: %s", trial.number, e)

        thread = threading.Thread(target=loop, name=f"heartbeat-{trial.number}", daemon=True)
        thread.start()

        def stop_beating() -> None:
            stop.set()
            thread.join()
            self._last.pop(trial.number, None)     # its own entry: nothing else beats it now
        return stop_beating

    def beat(self, trial: optuna.Trial) -> None:
        """Record that ``trial`` is alive, unless it did less than ``interval`` seconds ago."""
        now = time.time()
        with self._lock:            # this trial's own last beat, whatever the others beside it do
            last = self._last.get(trial.number)
            if last is not None and now - last < self.interval:
                return
            self._last[trial.number] = now
        record = {"time": now, "worker": self.worker, "run": self.run}
        folder = beats_folder(trial.study)
        if folder is None or last is None:
            trial.set_user_attr(HEARTBEAT, record)      # the first: names the worker in the study
        else:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / f"{trial_id(trial)}.json", json.dumps(record))

    @staticmethod
    def last_beat(study: optuna.Study, t: FrozenTrial) -> dict | None:
        """The newest heartbeat of ``t``: its file's (only beats after the first go there), else
        its user attribute's."""
        folder = beats_folder(study)
        if folder is not None:
            with contextlib.suppress(OSError, ValueError):
                return json.loads((folder / f"{trial_id(t)}.json").read_text())
        return t.user_attrs.get(HEARTBEAT)

    @staticmethod
    def forget(study: optuna.Study, trial_id: int) -> None:
        """Remove a finished trial's heartbeat file."""
        folder = beats_folder(study)
        if folder is not None:
            with contextlib.suppress(OSError):
                (folder / f"{trial_id}.json").unlink()

    def fail_stale_trials(self, study: optuna.Study) -> list[int]:
        """Fail the RUNNING trials whose worker went quiet, queue them again; their numbers.

        Several workers may find the same trial: the journal keeps the first FAIL written and
        refuses the later ones (``UpdateFinishedTrialError``), so only one worker re-queues it.
        """
        storage, now, failed = storage_of(study), time.time(), []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            beat = self.last_beat(study, t)
            if beat and beat.get("run") == self.run:
                continue                # this search's own: alive (it may just have woken up)
            age = now - (beat["time"] if beat else t.datetime_start.timestamp())
            if age <= self.grace_period:
                continue
            reason = (f"worker {beat['worker']} stopped sending heartbeats (last {age:.0f} s ago)"
                      if beat else f"its worker sent no heartbeat ({age:.0f} s since the trial started)")
            if not fail_with_reason(storage, trial_id(t), reason):
                continue                # it finished meanwhile, or another worker failed it first
            self.forget(study, trial_id(t))
            log.warning("trial %d failed: %s; its parameters are queued again (at most %d times)",
                        t.number, reason, MAX_RETRY)
            # Optuna's own retry for RDB storages, so retried_trial_number works alike; on a
            # copy (the storage's cached object is never modified) without the beats.
            t = copy.copy(storage.get_trial(trial_id(t)))
            t.user_attrs = {k: v for k, v in t.user_attrs.items() if k not in (HEARTBEAT, "fail_reason")}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, t)
            failed.append(t.number)
        return failed

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # The file goes once the trial is told, not when its beats stop: until the tell, its last
        # beat (not the first, hours old for a long trial) is what other workers judge it by.
        self.forget(study, trial_id(trial))
        self.fail_stale_trials(study)


def beats_folder(study: optuna.Study) -> Path | None:
    """Where a journal study's heartbeat files go (``<journal>.heartbeats/study-<id>``); None
    for a journal that is not a file (the beats then stay user attributes)."""
    path = journal_file(storage_of(study))      # the retrying door reads through to it
    return Path(f"{path}.heartbeats") / f"study-{study_id(study)}" if path else None
