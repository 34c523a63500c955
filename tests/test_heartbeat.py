"""Heartbeats on journal files: stale trials fail once, with a reason, and are queued again."""
from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

import chromasonic_lib as cl
from chromasonic_lib.search import heartbeat as hb
from chromasonic_lib.search.heartbeat import HEARTBEAT, JournalHeartbeat
from test_search import tiny_cfg


def _study(path, create=True) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(path)))     # each one a worker of its own
    if create:
        return optuna.create_study(study_name="s", storage=storage)
    return optuna.load_study(study_name="s", storage=storage)


def _running_trial(study: optuna.Study, beat_age: float | None) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    if beat_age is not None:
        trial.set_user_attr(HEARTBEAT, {"time": time.time() - beat_age, "worker": "elsewhere:42"})
    return trial


def _retried_number(t: optuna.trial.FrozenTrial) -> int | None:
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(t)


def test_a_trial_whose_heartbeat_is_old_fails_with_a_reason_and_is_queued_again(tmp_path):
    study = _study(tmp_path / "j.log")
    dead = _running_trial(study, beat_age=34)
    alive = _running_trial(study, beat_age=None)
    JournalHeartbeat(1, 3).beat(alive)
    assert JournalHeartbeat(1, 3).fail_stale_trials(study) == [dead.number]
    trials = study.trials
    assert trials[dead.number].state == TrialState.FAIL
    assert re.fullmatch(r"worker elsewhere:42 stopped sending heartbeats \(last 3\d s ago\)",
                        trials[dead.number].user_attrs["fail_reason"])     # 34 s, and the writes since
    assert trials[alive.number].state == TrialState.RUNNING
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == trials[dead.number].params
    assert _retried_number(retry) == dead.number
    assert HEARTBEAT not in retry.user_attrs and "fail_reason" not in retry.user_attrs
    # The retry runs with the dead trial's parameters.
    assert study.ask().suggest_float("x", 0, 1) == trials[dead.number].params["x"]


def test_a_trial_that_never_sent_a_heartbeat_is_judged_by_its_start(tmp_path):
    study = _study(tmp_path / "j.log")
    _running_trial(study, beat_age=None)
    assert JournalHeartbeat(1, 3).fail_stale_trials(study) == []     # it has just started
    time.sleep(0.3)
    assert JournalHeartbeat(0.1, 0.2).fail_stale_trials(study) == [0]
    assert "sent no heartbeat" in study.trials[0].user_attrs["fail_reason"]


def test_two_workers_finding_the_same_stale_trial_fail_and_retry_it_once(tmp_path, monkeypatch):
    first = _study(tmp_path / "j.log")
    _running_trial(first, beat_age=60)
    second = _study(tmp_path / "j.log", create=False)
    storage, set_reason = second._storage, second._storage.set_trial_user_attr
    first_found = []

    def meanwhile(*args):           # the first worker wins between the second's two writes
        set_reason(*args)
        first_found.append(JournalHeartbeat(1, 3).fail_stale_trials(first))

    monkeypatch.setattr(storage, "set_trial_user_attr", meanwhile)
    assert JournalHeartbeat(1, 3).fail_stale_trials(second) == []
    assert first_found == [[0]]
    trials = first.trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]


def test_a_trial_beats_at_most_once_per_interval(tmp_path, monkeypatch):
    trial = _running_trial(_study(tmp_path / "j.log"), beat_age=None)
    writes = []
    monkeypatch.setattr(trial, "set_user_attr", lambda key, value: writes.append(value))
    monkeypatch.setattr(hb, "atomic_write", lambda path, text: writes.append(json.loads(text)))
    heartbeat, now = JournalHeartbeat(10, 30), time.time()
    for dt in (0, 1, 9, 10.5, 12, 21):
        monkeypatch.setattr(hb.time, "time", lambda: now + dt)
        heartbeat.beat(trial)
    assert [w["time"] - now for w in writes] == [0, 10.5, 21]


def test_a_journal_search_beats_per_interval_not_per_epoch(tmp_path):
    log = tmp_path / "j.log"
    result = cl.run_search(tiny_cfg(tmp_path, storage=f"journal:{log}", n_trials=2, pruner="none"))
    assert [t.state for t in result.study.trials] == [TrialState.COMPLETE] * 2
    beats = [line for line in log.read_text().splitlines() if f'"{HEARTBEAT}"' in line]
    # One beat in the journal as each trial starts (naming its worker); the later ones replace
    # a file of the trial's own, removed when it ends: the journal grows per trial, not per beat.
    assert len(beats) == 2
    assert all(t.user_attrs[HEARTBEAT]["worker"].endswith(f":{os.getpid()}") for t in result.study.trials)
    assert not list(Path(f"{log}.heartbeats").glob("*/*.json"))
    assert HEARTBEAT not in result.best_trials().columns


def test_a_trial_keeps_beating_through_an_epoch_longer_than_the_grace_period(tmp_path):
    study = _study(tmp_path / "j.log")
    trial = _running_trial(study, beat_age=None)
    # Grace periods of seconds, not fractions: a loaded machine may let a beat wait a while.
    stop = JournalHeartbeat(0.2, 3).start(trial)
    try:
        time.sleep(4)                           # one long epoch: no beat from the training loop
        assert JournalHeartbeat(0.2, 3).fail_stale_trials(study) == []
    finally:
        stop()
    time.sleep(3.5)
    assert JournalHeartbeat(0.2, 3).fail_stale_trials(study) == [trial.number]     # stopped: stale


def test_later_beats_replace_one_file_and_the_journal_stops_growing(tmp_path):
    path = tmp_path / "j.log"
    study = _study(path)
    trial = _running_trial(study, beat_age=None)
    heartbeat = JournalHeartbeat(0.05, 2)
    heartbeat.beat(trial)
    size = path.stat().st_size
    for _ in range(5):
        time.sleep(0.06)
        heartbeat.beat(trial)
    assert path.stat().st_size == size                  # no journal record per beat
    files = list(hb.beats_folder(study).glob("*.json"))
    assert len(files) == 1
    # The file's beat keeps the trial alive after its first beat is older than the grace period.
    time.sleep(2.2)
    heartbeat.beat(trial)
    assert JournalHeartbeat(0.05, 2).fail_stale_trials(study) == []
    time.sleep(2.5)
    assert JournalHeartbeat(0.05, 2).fail_stale_trials(study) == [trial.number]
    assert "stopped sending heartbeats" in study.trials[trial.number].user_attrs["fail_reason"]
    assert not files[0].exists()                        # the failed trial's file is gone


def test_two_trials_at_once_on_one_heartbeat_each_beat_once_per_interval(tmp_path, monkeypatch):
    """One worker, two concurrent trials: each keeps its own last beat (alternating beats of
    two trials sent 2 records per beat each before, as if each beat were the first)."""
    study = _study(tmp_path / "j.log")
    first, second = _running_trial(study, None), _running_trial(study, None)
    writes = []
    for trial in (first, second):
        monkeypatch.setattr(trial, "set_user_attr",
                            lambda key, value, n=trial.number: writes.append((n, "attr", value["time"])))
    monkeypatch.setattr(hb, "atomic_write", lambda path, text: writes.append((path.stem, "file", json.loads(text)["time"])))
    heartbeat, now = JournalHeartbeat(10, 30), time.time()
    for dt in (0, 1, 5, 11, 12, 22):
        monkeypatch.setattr(hb.time, "time", lambda: now + dt)
        heartbeat.beat(first)
        heartbeat.beat(second)
    attrs = [w for w in writes if w[1] == "attr"]
    assert sorted(n for n, _, _ in attrs) == [first.number, second.number]   # one first beat each
    assert len(writes) == 2 * 3                                  # t = 0, 11, 22 for each


def test_a_dead_worker_s_trial_fails_while_a_long_trial_runs_beside_it(tmp_path):
    """A cross-validated trial lasts K trainings: a worker in the middle of one still fails
    another worker's trial gone quiet within about a grace period, not when its own ends."""
    study = _study(tmp_path / "j.log")
    dead = _running_trial(study, beat_age=0)        # its worker beat once, then died
    long = _running_trial(study, beat_age=None)
    stop = JournalHeartbeat(0.2, 1).start(long)
    try:
        deadline = time.monotonic() + 60
        while study.trials[dead.number].state == TrialState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop()
    trials = study.trials
    assert trials[dead.number].state == TrialState.FAIL and trials[long.number].state == TrialState.RUNNING
    assert time.monotonic() < deadline - 30         # within some grace periods, long before the end


def test_a_search_never_fails_its_own_trials_however_long_since_their_last_beat(tmp_path):
    """After a pause (a laptop asleep), the first thread to wake checks for stale trials before
    its siblings beat again: the trials of its own search are alive, not failed; another
    worker's trial as old is."""
    study = _study(tmp_path / "j.log")
    mine, theirs = _running_trial(study, None), _running_trial(study, beat_age=60)
    heartbeat = JournalHeartbeat(1, 3)
    heartbeat.beat(mine)
    mine.set_user_attr(HEARTBEAT, {**study.trials[mine.number].user_attrs[HEARTBEAT],
                                   "time": time.time() - 60})      # as old as the other's
    assert heartbeat.fail_stale_trials(study) == [theirs.number]
    assert study.trials[mine.number].state == TrialState.RUNNING


def test_an_rdb_trial_whose_first_heartbeat_never_landed_is_failed_once_past_the_grace_period(tmp_path):
    """A server that goes away as a trial starts leaves it RUNNING without a heartbeat row,
    which Optuna's own check passes over for ever; here it is stale once older than the grace
    period, and a trial with a fresh heartbeat is not."""
    from chromasonic_lib.search.study import open_storage
    url = f"sqlite:///{tmp_path}/s.db"
    storage = open_storage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="s", storage=storage)
    quiet, beating = study.ask(), study.ask()
    time.sleep(2.5)
    storage.record_heartbeat(beating._trial_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[quiet.number] == TrialState.FAIL and states[beating.number] == TrialState.RUNNING
