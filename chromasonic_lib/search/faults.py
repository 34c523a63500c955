"""Running the trials of a search through the faults of real infrastructure.

Two faults come back out of ``study.optimize`` as exceptions, and neither should end a search:

- A trial that another worker failed as stale (its worker slept, was paused or lost its
  heartbeats) can no longer be told. Its worker lets it go quietly, frees its memory and goes
  on with its next trial.
- A storage away for longer than ``storage_patience`` ends the worker, but with an error that
  names the storage (Optuna may have hidden it behind an ``UnboundLocalError`` of its own),
  and the trials it finished but could not tell are saved under ``output_dir``
  (``untold_trials.json``) for the next run of the study to tell.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import optuna
from filelock import FileLock
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from ..atomic import atomic_write
from .storage import chain, fail_with_reason, storage_error_in
from ..optuna_private import storage_of, trial_id

log = logging.getLogger(__name__)

UNTOLD = "untold_trials.json"     # in output_dir: finished trials a lost storage never heard of


def ended_elsewhere(e: BaseException) -> bool:
    """Whether ``e`` says the trial was finished by someone else (failed as stale) while it
    ran here: it takes no more attributes (``UpdateFinishedTrialError``), nor its tell (Optuna's
    "Cannot tell a FAIL trial", perhaps behind its assertion "Should not reach")."""
    return any(isinstance(x, UpdateFinishedTrialError) or "Cannot tell" in str(x) for x in chain(e))


def note_failure(trial: optuna.Trial, reason: str, error: BaseException) -> None:
    """Record why ``trial`` failed. One already failed elsewhere refuses it, and the
    ``UpdateFinishedTrialError`` that says so ends it quietly (see :func:`optimize`)."""
    if not ended_elsewhere(error):
        trial.set_user_attr("fail_reason", reason[:1000])


def optimize(study: optuna.Study, objective: Callable[[optuna.Trial], float], n_trials: int,
             timeout: float | None, n_jobs: int, callbacks: Sequence[Callable],
             untold: Path | None = None) -> None:
    """``study.optimize`` for ``n_trials`` trials (``timeout`` seconds at most), going on past
    trials that other workers failed as stale; a storage gone for good raises
    :class:`~.storage.StorageUnreachable`, after saving the finished trials it could not tell
    to the file ``untold`` (see :func:`tell_untold`)."""
    started, begin = 0, time.monotonic()
    pending: dict[int, dict] = {}       # finished here, not yet known to be told

    def run(trial: optuna.Trial) -> float:
        nonlocal started
        started += 1
        try:
            value = objective(trial)
        except Exception as e:
            if ended_elsewhere(e):
                log.warning("trial %d was failed by another worker while it ran here (stale: this "
                            "worker paused or lost its heartbeats); its work here ends, and this "
                            "worker goes on with its next trial", trial.number)
            raise
        pending[trial.number] = _record(trial, value)   # read from the trial, not the storage
        return value

    def told(study: optuna.Study, trial: FrozenTrial) -> None:
        pending.pop(trial.number, None)

    while started < n_trials:
        ran = started
        left = timeout - (time.monotonic() - begin) if timeout else None
        if left is not None and left <= 0:
            return
        try:
            study.optimize(run, n_trials=n_trials - started, timeout=left, n_jobs=n_jobs,
                           catch=(Exception,), callbacks=[told, *callbacks], gc_after_trial=False)
            return
        except Exception as e:
            gone = storage_error_in(e) or getattr(storage_of(study), "gave_up", None)
            if gone is not None:
                _save_untold(untold, study.study_name, list(pending.values()))
                raise gone from gone.__cause__
            if not ended_elsewhere(e) or started == ran:
                raise       # an error of its own, not a trial of this call that ended elsewhere
            # Optuna can't tell a trial that is finished already: that is how a trial failed
            # elsewhere comes back out of optimize. Failed after its objective had returned here
            # (the worker paused before its tell), it keeps its value.
            trials = study.get_trials(deepcopy=False)
            for n in [n for n in pending if n < len(trials) and trials[n].state == TrialState.FAIL]:
                try:
                    kept = stand_in(study, pending[n], trials[n])
                except Exception:       # the storage went away meanwhile: the record is kept
                    _save_untold(untold, study.study_name, list(pending.values()))
                    raise
                pending.pop(n)
                log.warning("trial %d was failed by another worker after it finished here (stale: "
                            "this worker paused before telling it); its value is kept as trial %d", n, kept)


def stand_in(study: optuna.Study, r: dict, failed: FrozenTrial | None) -> int:
    """The one path for a trial that finished here but lost its slot (failed as stale before
    its tell, or finished while the storage was away): added again, COMPLETE, with its value,
    its attributes, its weights' link and the number of the trial it stands for
    (``told_late_for_trial``). The retry that a heartbeat queued for the same parameters is
    failed, so the trial is neither trained nor counted twice; a retry that has completed
    already stands in for it instead (a pruned one does not: the value measured here is kept).
    Returns the number of the trial that holds the value."""
    # Optuna's retry callbacks record the trials a retry stands for (a retry of a retry: both).
    retries = [t for t in study.get_trials(deepcopy=False)
               if r["number"] in (t.system_attrs.get("retry_history") or ())]
    storage = storage_of(study)
    for t in retries:
        if t.state in (TrialState.WAITING, TrialState.RUNNING):
            fail_with_reason(storage, trial_id(t), f"a retry of trial {r['number']}, whose value was "
                                                   f"told late")
    # Read again: a retry may have been finished meanwhile by the worker that took it up.
    done = [t.number for t in retries if storage.get_trial(trial_id(t)).state == TrialState.COMPLETE]
    if done:
        return done[0]
    links = {k: v for k, v in (failed.system_attrs if failed else {}).items() if k.startswith("artifacts:")}
    study.add_trial(optuna.trial.create_trial(
        params=r["params"], values=r["value"] if isinstance(r["value"], list) else [r["value"]],
        system_attrs={**links, **r.get("artifact_links", {})},
        distributions={k: json_to_distribution(d) for k, d in r["distributions"].items()},
        user_attrs={**r["user_attrs"], "told_late_for_trial": r["number"]}))
    # Its number by what it holds, not by the count of trials: another worker may add one meanwhile.
    return max(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if t.user_attrs.get("told_late_for_trial") == r["number"])


def _record(trial: optuna.Trial, value: float) -> dict:
    # The trial's own copy of its user attributes: those the storage never got are in it too.
    # Its weights' link (Optuna's upload writes it past the trial) is among the storage's held
    # writes if the storage never got it (see RetryingStorage).
    held = getattr(storage_of(trial.study), "held", {}).get(trial_id(trial), {})
    return {"number": trial.number, "value": value, "params": trial.params,
            "distributions": {k: distribution_to_json(d) for k, d in trial.distributions.items()},
            "user_attrs": trial.user_attrs,
            "artifact_links": {k: v for (m, k), v in held.items() if m == "set_trial_system_attr"}}


# The untold file holds each study's records under its name. Workers share an output folder by
# default: one reads and writes it at a time, under a file lock beside it.
def _read_untold(path: Path) -> dict[str, list[dict]]:
    saved = json.loads(path.read_text()) if path.exists() else {"studies": {}}
    return saved["studies"] if "studies" in saved else {saved["study_name"]: saved["trials"]}   # older: one study's


def _write_untold(path: Path, studies: dict[str, list[dict]]) -> None:
    if any(studies.values()):
        atomic_write(path, json.dumps({"studies": studies}, indent=2, default=str) + "\n")
    elif path.exists():
        path.unlink()


def _save_untold(path: Path | None, study_name: str, records: list[dict]) -> None:
    if path is None or not records:
        return
    with FileLock(f"{path}.lock"):
        studies = _read_untold(path)
        known = {r["number"] for r in records}
        studies[study_name] = [r for r in studies.get(study_name, []) if r["number"] not in known] + records
        _write_untold(path, studies)
    log.error("%d finished trials could not be told to the storage: saved in %s; the next run "
              "of study %r tells them", len(records), path, study_name)


def tell_untold(study: optuna.Study, path: Path) -> int:
    """Tell the study the trials an earlier run finished but could not tell (its storage was
    away for longer than its patience); how many. A trial still RUNNING is told its value; one
    failed meanwhile as stale is added again as a COMPLETE trial, with its weights' link. Other
    studies' records in the file stay for their own next run; two workers starting together
    tell each record once (the file is read and emptied under a lock)."""
    if not path.exists():
        return 0
    with FileLock(f"{path}.lock"):
        studies = _read_untold(path)
        records, told = studies.pop(study.study_name, []), 0
        trials, storage = study.get_trials(deepcopy=False), storage_of(study)
        for r in records:
            t = trials[r["number"]] if r["number"] < len(trials) else None
            if t is not None and t.state == TrialState.COMPLETE:
                continue                # told after all (the storage answered, we didn't hear)
            if t is not None and t.state == TrialState.RUNNING:
                for k, v in r["user_attrs"].items():
                    storage.set_trial_user_attr(trial_id(t), k, v)
                for k, v in r.get("artifact_links", {}).items():
                    storage.set_trial_system_attr(trial_id(t), k, v)
                study.tell(t.number, r["value"])
            else:
                stand_in(study, r, t)
            told += 1
        if records:                     # other studies' records alone: the file stays as it is
            _write_untold(path, studies)
    if told:
        log.warning("told study %r the %d finished trials that an earlier run could not (saved "
                    "in %s)", study.study_name, told, path)
    return told
