"""Real faults under a running search: a PostgreSQL server of the test's own restarted and
crashed under its workers, a full disk, a store that refuses writes, a trial failed as stale
by another process. Each test asserts what the user keeps: trials, values, weights, a worker
that runs on."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import PYTHON, ROOT

WORKER = """
import sys, json
import chromasonic_lib as cl
r = cl.run_search(cl.SearchConfig(**json.loads(sys.argv[1])))
print("WORKER DONE", r.n_trials, flush=True)
"""

MARKOV = {"models": {"markov": {"order": {"type": "int", "low": 1, "high": 3},
                                "alpha": {"type": "float", "low": 0.05, "high": 2.0, "log": True}}}}


def _params(tmp: Path, **kw) -> dict:
    space = tmp / "space.yaml"
    space.write_text(json.dumps(MARKOV))
    p = dict(dataset="synthetic", n_sequences=30, sequence_length=20, model="markov",
             search_space=str(space), epochs=2, device="cpu", threads=1, pruner="none",
             output_dir=str(tmp / "out"), plot=False, live=False)
    p.update(kw)
    return p


def _worker(params: dict, log: Path, script: str = WORKER, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([PYTHON, "-c", script, json.dumps(params), *args], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)


def _count(url: str, name: str) -> int:
    with contextlib.suppress(Exception):
        study = optuna.load_study(study_name=name, storage=url)
        return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    return 0


def _wait_for_file(path: Path, worker: subprocess.Popen, log: Path, seconds: float = 300) -> None:
    """Until ``path`` exists (a gated worker's signal), asserting ``worker`` still runs."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert worker.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {path.name} after {seconds:.0f} s: " + log.read_text()[-3000:]
        time.sleep(0.1)


def _wait_for_trials(url: str, name: str, n: int, worker: subprocess.Popen, log: Path, deadline: float) -> None:
    """Until the study has ``n`` finished trials (or ``deadline``), asserting ``worker`` still runs."""
    while _count(url, name) < n:
        assert worker.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"fewer than {n} trials by the deadline: " + log.read_text()[-3000:]
        time.sleep(0.3)


@pytest.mark.slow
def test_workers_wait_out_a_postgres_restart_and_a_crash(tmp_path, own_postgres):
    """Three workers on one study; the server restarts (-m fast), then crashes (-m immediate)
    and comes back 3 s later. Every worker runs on and finishes every trial it was asked for."""
    pg, name, per_worker = own_postgres, "faults", 12
    params = _params(tmp_path, study_name=name, storage=pg.url, n_trials=per_worker,
                     heartbeat_interval=2, grace_period=20, storage_patience=60)
    workers = [_worker(params, tmp_path / f"w{i}.log") for i in range(3)]
    try:
        deadline = time.monotonic() + 300
        # Every worker past opening the storage (its progress bar shows): a worker that can't
        # open it at all stops at once, by design (a wrong URL costs seconds, not the patience).
        logs = [tmp_path / f"w{i}.log" for i in range(3)]
        while _count(pg.url, name) < 4 or not all(log.exists() and "trials:" in log.read_text() for log in logs):
            assert all(w.poll() is None for w in workers), "a worker ended before the faults"
            assert time.monotonic() < deadline, "the workers were not under way after 300 s"
            time.sleep(0.3)
        pg.pg_ctl("restart", "-m", "fast")
        seen = _count(pg.url, name)
        while _count(pg.url, name) < seen + 3:
            assert time.monotonic() < deadline, "no 3 trials finished after the restart by the deadline"
            time.sleep(0.3)
        pg.pg_ctl("stop", "-m", "immediate")
        time.sleep(3)
        pg.pg_ctl("start")
        codes = [w.wait(timeout=180) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(3)]
    assert codes == [0, 0, 0], "\n\n".join(log[-3000:] for log in logs)
    assert all("WORKER DONE" in log for log in logs)
    assert any("storage unreachable, retrying" in log for log in logs), "no worker saw the outage"
    trials = optuna.load_study(study_name=name, storage=pg.url).trials
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 3 * per_worker, states


@pytest.mark.slow
def test_a_worker_stops_naming_the_storage_beyond_its_patience_and_the_next_run_cleans_up(
        tmp_path, own_postgres):
    """The server goes away for longer than storage_patience: the worker stops with an error
    naming the storage (not Optuna's UnboundLocalError); the next run fails what it left
    RUNNING, tells what it saved, and finishes its own trials."""
    pg, name = own_postgres, "patience"
    params = _params(tmp_path, study_name=name, storage=pg.url, n_trials=200,
                     heartbeat_interval=1, grace_period=3, storage_patience=4)
    worker = _worker(params, tmp_path / "w.log")
    try:
        _wait_for_trials(pg.url, name, 3, worker, tmp_path / "w.log", time.monotonic() + 300)
        pg.pg_ctl("stop", "-m", "fast")
        start = time.monotonic()
        code = worker.wait(timeout=120)
        waited = time.monotonic() - start
    finally:
        if worker.poll() is None:
            worker.kill()
    out = (tmp_path / "w.log").read_text()
    assert code != 0 and "StorageUnreachable" in out, out[-3000:]
    assert f"storage '{pg.url}' unreachable for longer than storage_patience (4 s)" in out, out[-3000:]
    assert "UnboundLocalError" not in out.splitlines()[-1]
    assert waited < 60
    pg.pg_ctl("start")
    time.sleep(3.5)         # the grace period: what the stopped worker left RUNNING is stale now
    again = _worker({**params, "n_trials": 2}, tmp_path / "again.log")
    assert again.wait(timeout=180) == 0, (tmp_path / "again.log").read_text()[-3000:]
    trials = optuna.load_study(study_name=name, storage=pg.url).trials
    assert TrialState.RUNNING not in [t.state for t in trials]
    assert not (tmp_path / "out" / "untold_trials.json").exists()


# A worker whose third trial, once trained, waits for the file ``gate`` (after touching ``trained``),
# so that the test can take the storage away between a trial's training and its tell.
GATED_WORKER = """
import sys, json, time
from pathlib import Path
import chromasonic_lib as cl
from chromasonic_lib.search import objective
real_train, calls, here = objective.train, [], Path(sys.argv[2])

def train(*args, **kwargs):
    history = real_train(*args, **kwargs)
    calls.append(1)
    if len(calls) == 3:
        (here / "trained").touch()
        while not (here / "gate").exists():
            time.sleep(0.1)
    return history

objective.train = train
cl.run_search(cl.SearchConfig(**json.loads(sys.argv[1])))
"""


@pytest.mark.slow
def test_a_trial_trained_while_the_storage_is_gone_is_saved_and_told_by_the_next_run(
        tmp_path, own_postgres):
    """The server stops, for longer than storage_patience, while a trial finishes training:
    the worker stops, the trial's value, metrics and weights are saved in untold_trials.json,
    and the next run of the study tells them: the study has the trial, its weights load."""
    import chromasonic_lib as cl
    pg, name = own_postgres, "untold"
    params = _params(tmp_path, study_name=name, storage=pg.url, n_trials=5,
                     heartbeat_interval=1, grace_period=3, storage_patience=3)
    log = tmp_path / "w.log"
    worker = _worker(params, log, GATED_WORKER, str(tmp_path))
    try:
        _wait_for_file(tmp_path / "trained", worker, log)
        pg.pg_ctl("stop", "-m", "fast")
        time.sleep(5)                   # beyond the patience: the heartbeats give up
        (tmp_path / "gate").touch()     # the trial's metrics, weights and tell now find no storage
        code = worker.wait(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
    out = log.read_text()
    assert code != 0 and f"storage '{pg.url}' unreachable for longer than storage_patience" in out, out[-3000:]
    untold = tmp_path / "out" / "untold_trials.json"
    assert untold.exists(), out[-3000:]
    saved = json.loads(untold.read_text())["studies"]
    assert list(saved) == [name] and [r["number"] for r in saved[name]] == [2]
    record = saved[name][0]
    assert record["user_attrs"]["val_bits_per_note"] > 0 and record["artifact_links"], record

    pg.pg_ctl("start")
    again = _worker({**params, "n_trials": 1}, tmp_path / "again.log")
    assert again.wait(timeout=180) == 0, (tmp_path / "again.log").read_text()[-3000:]
    assert "told study 'untold' the 1 finished trials" in (tmp_path / "again.log").read_text()
    assert not untold.exists()
    study = optuna.load_study(study_name=name, storage=pg.url)
    assert TrialState.RUNNING not in [t.state for t in study.trials]
    told = [t for t in study.trials if t.state == TrialState.COMPLETE
            and (t.number == 2 or t.user_attrs.get("told_late_for_trial") == 2)]
    assert len(told) == 1 and told[0].value == record["value"], [(t.number, t.state) for t in study.trials]
    assert told[0].user_attrs["val_bits_per_note"] == record["user_attrs"]["val_bits_per_note"]
    model, meta = cl.load_checkpoint(study, told[0].number)     # the weights survived too
    assert meta["trial"] == 2 and meta["value"] == record["value"]


# ---------------------------------------------------------------- full disks, refusing stores
@pytest.fixture
def tiny_disk():
    """Mount a tmpfs of ``size`` bytes, ``free`` of them left free; unmounted afterwards."""
    mounts = []

    def mount(size: int, free: int | None = None) -> Path:
        where = Path(tempfile.mkdtemp(prefix="chromasonic-full-"))
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode != 0:
            pytest.skip("mounting a tmpfs is not allowed here")
        mounts.append(where)
        if free is not None:
            (where / "ballast").write_bytes(b"\0" * (size - free))
        return where

    try:
        yield mount
    finally:
        for where in mounts:
            subprocess.run(["umount", str(where)], check=False)
            shutil.rmtree(where, ignore_errors=True)


def _search(tmp_path, **kw):
    import chromasonic_lib as cl
    p = _params(tmp_path, study_name="disk", storage=f"sqlite:///{tmp_path}/s.db", n_trials=4, **kw)
    p.pop("threads")
    return cl.run_search(cl.SearchConfig(**p))


def _warnings(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def test_a_full_output_dir_does_not_end_the_search(tmp_path, tiny_disk, caplog):
    out = tiny_disk(64 * 1024, free=4096)       # room for the write test, not for the files
    with caplog.at_level(logging.INFO):
        result = _search(tmp_path, output_dir=str(out), plot=True)
    states = [t.state for t in result.study.trials]
    assert states == [TrialState.COMPLETE] * 4
    failed = _warnings(caplog, "result files in")
    assert len(failed) == 1 and "No space left on device" in failed[0], failed
    assert result.best_value is not None


def test_a_full_artifact_store_stops_the_search_before_any_training(tmp_path, tiny_disk):
    import chromasonic_lib as cl
    store = tiny_disk(16 * 1024, free=0)
    with pytest.raises(cl.ConfigError, match="artifact_store .* can't keep checkpoints.*No space left"):
        _search(tmp_path, artifact_store=str(store))
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path}/s.db") == []   # nothing ran


def test_trials_keep_their_values_when_the_store_refuses_their_weights(tmp_path, tiny_disk, caplog):
    store = tiny_disk(32 * 1024)        # takes the probe; a markov checkpoint is 35 KB or more
    with caplog.at_level(logging.INFO):
        result = _search(tmp_path, artifact_store=str(store))
    trials = result.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert all("No space left on device" in t.user_attrs["checkpoint_error"] for t in trials)
    assert len(_warnings(caplog, "checkpoint upload failed")) == 1
    assert result.best_value is not None


def test_a_trial_failed_as_stale_elsewhere_ends_quietly_and_the_worker_goes_on(tmp_path, monkeypatch, caplog):
    """Another process fails this worker's running trial (as a worker does that finds its
    heartbeat stale after a laptop slept): the trial ends here without a traceback out of
    optimize, and the worker runs the rest of its trials."""
    from chromasonic_lib.search import objective as objective_module
    real_train, calls = objective_module.train, []

    def train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:         # another connection, as another worker would
            other = optuna.load_study(study_name="disk", storage=f"sqlite:///{tmp_path}/s.db")
            running = other.get_trials(states=(TrialState.RUNNING,))
            other._storage.set_trial_state_values(running[0]._trial_id, TrialState.FAIL)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(objective_module, "train", train)
    with caplog.at_level(logging.INFO):
        result = _search(tmp_path)
    states = [t.state for t in result.study.trials]
    assert states.count(TrialState.COMPLETE) == 3 and states.count(TrialState.FAIL) == 1, states
    assert len(calls) == 4
    assert _warnings(caplog, "was failed by another worker while it ran here")


def test_two_studies_in_one_output_folder_each_leave_their_own_best_model(tmp_path):
    import chromasonic_lib as cl
    import torch
    out = tmp_path / "shared"
    for name, n in (("first", 30), ("second", 24)):
        p = _params(tmp_path, study_name=name, storage="memory", n_trials=1, output_dir=str(out),
                    n_sequences=n)
        p.pop("threads")
        result = cl.run_search(cl.SearchConfig(**p))
        held = torch.load(out / "best_model.pt", weights_only=True)
        assert (held["study"], held["trial"]) == (name, 0)      # both studies' best is trial 0
        assert held["value"] == result.best_value


def test_a_trial_failed_as_stale_after_it_finished_keeps_its_value(tmp_path, monkeypatch, caplog):
    """Another process fails this worker's trial after its training ended and before its tell
    (the worker paused just then): the value is not lost, it comes back as a COMPLETE trial
    that names the one it stands for, and the worker runs the rest of its trials."""
    from chromasonic_lib.search import objective as objective_module
    real_call, calls = objective_module.Objective.__call__, []

    def call(self, trial):
        value = real_call(self, trial)
        calls.append((trial.number, value))
        if len(calls) == 2:         # another connection, as another worker would
            other = optuna.load_study(study_name="disk", storage=f"sqlite:///{tmp_path}/s.db")
            other._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return value

    monkeypatch.setattr(objective_module.Objective, "__call__", call)
    with caplog.at_level(logging.INFO):
        result = _search(tmp_path)
    trials = result.study.trials
    states = [t.state for t in trials]
    assert len(calls) == 4 and states.count(TrialState.FAIL) == 1, states
    assert states.count(TrialState.COMPLETE) == 4, states
    late = [t for t in trials if "told_late_for_trial" in t.user_attrs]
    number, value = calls[1]
    assert [t.user_attrs["told_late_for_trial"] for t in late] == [number]
    assert late[0].value == value and late[0].params == trials[number].params
    assert late[0].user_attrs["config"] == trials[number].user_attrs["config"]
    assert _warnings(caplog, "its value is kept as trial")


# A worker that stops itself (SIGSTOP, as a laptop lid closing) once trial 1 has trained and
# uploaded its weights, before its tell: its heartbeats stop with it.
PAUSING_WORKER = """
import os, signal, sys, json
from pathlib import Path
import chromasonic_lib as cl
from chromasonic_lib.search import objective
real_call, here = objective.Objective.__call__, Path(sys.argv[2])

def call(self, trial):
    value = real_call(self, trial)
    if trial.number == 1:
        (here / "paused").touch()
        os.kill(os.getpid(), signal.SIGSTOP)
    return value

objective.Objective.__call__ = call
r = cl.run_search(cl.SearchConfig(**json.loads(sys.argv[1])))
print("WORKER DONE", r.n_trials, flush=True)
"""


@pytest.mark.postgres
def test_a_stale_trial_told_late_under_rdb_heartbeats_counts_once_with_its_weights(tmp_path):
    """PostgreSQL with Optuna's own heartbeats: a worker pauses between a trial's training and
    its tell, another process fails the trial as stale and queues its retry. When the worker
    wakes, the trial comes back once, COMPLETE, with its value and its weights; the retry is
    failed, not trained again; nothing is left WAITING or RUNNING."""
    import signal
    import uuid

    import chromasonic_lib as cl
    from chromasonic_lib.search.study import open_storage
    from conftest import postgres_or_skip
    url, name = postgres_or_skip(), f"told-late-{uuid.uuid4().hex[:8]}"
    params = _params(tmp_path, study_name=name, storage=url, n_trials=3,
                     heartbeat_interval=1, grace_period=2)
    log = tmp_path / "w.log"
    worker = _worker(params, log, PAUSING_WORKER, str(tmp_path))
    try:
        _wait_for_file(tmp_path / "paused", worker, log)
        time.sleep(4)                   # beyond the grace period, heartbeats silent
        other = optuna.load_study(study_name=name, storage=open_storage(url, 1, 2))
        optuna.storages.fail_stale_trials(other)        # as another worker's next trial does
        states = {t.number: t.state for t in other.get_trials()}
        assert states[1] == TrialState.FAIL and TrialState.WAITING in states.values(), states
        worker.send_signal(signal.SIGCONT)
        assert worker.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
    study = optuna.load_study(study_name=name, storage=url)
    try:
        trials = study.trials
        states = [(t.number, t.state.name) for t in trials]
        assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)], states
        retry = [t for t in trials if t.system_attrs.get("retry_history") == [1]]
        assert len(retry) == 1 and retry[0].state == TrialState.FAIL, states
        late = [t for t in trials if t.user_attrs.get("told_late_for_trial") == 1]
        assert len(late) == 1 and late[0].state == TrialState.COMPLETE, states
        assert late[0].params == trials[1].params
        # Three trials asked for, three counted: the late one among them, not trained twice.
        assert sum(t.state == TrialState.COMPLETE for t in trials) == 3, states
        model, meta = cl.load_checkpoint(study, late[0].number)     # its own weights
        assert meta["trial"] == 1 and meta["value"] == late[0].value
        assert "its value is kept as trial %d" % late[0].number in log.read_text()
    finally:
        optuna.delete_study(study_name=name, storage=url)


@pytest.mark.postgres
@pytest.mark.parametrize("statement", [b"INSERT INTO trials ", b"INSERT INTO studies "])
def test_a_reply_lost_after_a_create_commits_creates_it_once(tmp_path, statement):
    """A real PostgreSQL behind a proxy that cuts the connection once, after the server has
    committed a trial's (or the study's) creation and before its reply: the creation is
    retried and reconciled by reading back. No trial is left RUNNING or WAITING for the workers
    to wait on, the trials asked for all complete, and the study's creator still sets it up."""
    import uuid
    from urllib.parse import urlparse

    from conftest import postgres_or_skip
    from dropping_proxy import DroppingProxy
    url, name = postgres_or_skip(), f"lost-reply-{uuid.uuid4().hex[:8]}"
    u = urlparse(url)
    proxy = DroppingProxy((u.hostname, u.port or 5432), after=statement)
    proxied = url.replace(f"{u.hostname}:{u.port or 5432}", f"127.0.0.1:{proxy.port}")
    params = _params(tmp_path, study_name=name, storage=proxied, n_trials=3)
    log = tmp_path / "w.log"
    try:
        # Its progress lines in the log: they say whether it waited for a trial left running.
        worker = _worker(params, log, WORKER.replace("import chromasonic_lib as cl\n",
                                                     "import chromasonic_lib as cl\ncl.setup_logging()\n"))
        assert worker.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        proxy.close()
    out = log.read_text()
    try:
        assert proxy.dropped == 1 and proxy.unanswered == 0, out[-3000:]
        trials = optuna.load_study(study_name=name, storage=url).trials
        states = [(t.number, t.state.name) for t in trials]
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], states
        assert sum(t.state == TrialState.COMPLETE for t in trials) == 3, states
        assert sum(t.state == TrialState.FAIL for t in trials) <= 1, states
        assert "markov_baseline" in optuna.load_study(study_name=name, storage=url).user_attrs
        # Set up by its creator, once: the family's defaults queued and run once (a twin of
        # their queued trial, failed, may stand beside them).
        assert [t.user_attrs.get("enqueued") for t in trials
                if t.state == TrialState.COMPLETE].count("family defaults") == 1, states
        assert "still running on other workers" not in out, out[-3000:]   # no orphan trial waited out
    finally:
        optuna.delete_study(study_name=name, storage=url)


def test_an_error_of_its_own_still_ends_the_search_after_a_trial_ended_elsewhere(tmp_path):
    """A trial failed elsewhere is let go; an unrelated error raised later in the same call (a
    callback's bug here) is not swallowed with it."""
    from chromasonic_lib.search.faults import optimize
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="own-error", storage=storage)

    def objective(trial):
        if trial.number == 0:       # the trial ended elsewhere, as the objective finds out
            raise optuna.exceptions.UpdateFinishedTrialError("failed by another worker")
        return 1.0

    raised = []

    def callback(study, trial):     # once: an error swallowed would not come back
        if trial.state == TrialState.COMPLETE and not raised:
            raised.append(trial.number)
            raise RuntimeError("a bug of its own")

    with pytest.raises(RuntimeError, match="a bug of its own"):
        optimize(study, objective, 3, None, 1, [callback])


def test_untold_records_of_two_studies_keep_their_studies_and_two_workers_tell_each_once(tmp_path):
    """One output folder, two studies' untold trials: each study tells its own, never the
    other's; two workers starting together on one study tell its record once between them."""
    import threading

    from chromasonic_lib.search.faults import _save_untold, tell_untold
    storage = f"sqlite:///{tmp_path}/s.db"
    studies = {name: optuna.create_study(study_name=name, storage=storage) for name in ("a", "b")}
    for name, study in studies.items():
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        record = {"number": trial.number, "value": 1.0 if name == "a" else 2.0, "params": trial.params,
                  "distributions": {"x": optuna.distributions.distribution_to_json(trial.distributions["x"])},
                  "user_attrs": {}, "artifact_links": {}}
        _save_untold(tmp_path / "untold_trials.json", name, [record])
    told = []
    workers = [threading.Thread(target=lambda: told.append(tell_untold(
        optuna.load_study(study_name="a", storage=storage), tmp_path / "untold_trials.json"))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(told) == [0, 1]
    assert [t.value for t in optuna.load_study(study_name="a", storage=storage).trials] == [1.0]
    assert optuna.load_study(study_name="b", storage=storage).trials[0].state == TrialState.RUNNING
    assert tell_untold(optuna.load_study(study_name="b", storage=storage), tmp_path / "untold_trials.json") == 1
    assert not (tmp_path / "untold_trials.json").exists()


def test_a_read_only_database_is_reported_at_once_not_waited_out_as_an_outage(tmp_path, caplog):
    """A storage that is there and refuses (here a SQLite file opened read-only, as a file
    without write permission is) raises StorageRefused naming it, long before the patience."""
    from chromasonic_lib.search.storage import RetryingStorage, StorageRefused
    path = tmp_path / "ro.db"
    optuna.create_study(study_name="ro", storage=f"sqlite:///{path}")
    read_only = optuna.storages.RDBStorage(f"sqlite:///file:{path}?mode=ro&uri=true",
                                           skip_compatibility_check=True)
    storage = RetryingStorage(read_only, "sqlite:///ro.db", patience=60)
    study_id = storage.get_study_id_from_name("ro")             # reads still work
    start = time.monotonic()
    with pytest.raises(StorageRefused, match=r"storage 'sqlite:///ro.db' refused create_new_trial: "
                                             r".*readonly database .*not an outage"):
        storage.create_new_trial(study_id)
    assert time.monotonic() - start < 30 and "storage unreachable, retrying" not in caplog.text


def _add(study, state, value=None, number_of=None, history=None):
    """A trial in ``state``; with ``history``, a retry as Optuna's heartbeat callback queues it."""
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    system = {"failed_trial": history[0], "retry_history": history} if history else {}
    study.add_trial(optuna.trial.create_trial(state=state, value=value, params={"x": 0.5},
                                              distributions=dist, system_attrs=system))
    return study.trials[-1]


@pytest.mark.parametrize("retry_state", [TrialState.WAITING, TrialState.PRUNED, TrialState.COMPLETE])
def test_a_trial_told_late_stands_in_for_its_retries_of_retries_unless_one_completed(tmp_path, retry_state):
    """The trial that finished here comes back once: the retries queued for it (a retry of a
    retry included) are failed; a retry that completed stands in instead; a pruned one does not
    (the value measured here is kept)."""
    from chromasonic_lib.search.faults import stand_in
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    _add(study, TrialState.FAIL)                                   # trial 0, failed as stale
    _add(study, TrialState.FAIL, history=[0])                      # its retry, stale too
    _add(study, retry_state, value=1.5 if retry_state != TrialState.WAITING else None, history=[0, 1])
    record = {"number": 0, "value": 1.2, "params": {"x": 0.5},
              "distributions": {"x": optuna.distributions.distribution_to_json(
                  optuna.distributions.FloatDistribution(0, 1))}, "user_attrs": {"config": {}}}
    kept = stand_in(study, record, study.trials[0])
    trials = study.trials
    if retry_state == TrialState.COMPLETE:
        assert kept == 2 and len(trials) == 3
        return
    assert kept == 3 and trials[3].value == 1.2 and trials[3].user_attrs["told_late_for_trial"] == 0
    assert trials[2].state == (TrialState.FAIL if retry_state == TrialState.WAITING else TrialState.PRUNED)
    assert [t.state for t in trials].count(TrialState.WAITING) == 0


def test_a_journal_create_retried_after_an_error_of_the_file_creates_one_trial(tmp_path):
    """A journal on a network file system fails an append (EIO) after writing it: the retry
    reads the trial back instead of creating a second, and nothing crashes."""
    import errno

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from chromasonic_lib.search.storage import RetryingStorage
    inner = JournalStorage(JournalFileBackend(str(tmp_path / "j.log")))
    real, calls = inner.create_new_trial, []

    def flaky(study_id, template_trial=None):
        trial = real(study_id, template_trial)
        calls.append(trial)
        if len(calls) == 1:             # written, and then the reply is an I/O error
            raise OSError(errno.EIO, "Input/output error")
        return trial

    inner.create_new_trial = flaky
    storage = RetryingStorage(inner, "journal", patience=10, sleep=lambda s: None)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    study.tell(trial, 1.0)
    assert len(calls) == 1 and [t.state for t in study.trials] == [TrialState.COMPLETE]


def test_a_state_write_whose_reply_was_lost_is_read_back_only_for_a_finished_state():
    """A tell whose commit landed before its reply was lost is taken as done on the retry (not
    refused as finished). Taking a WAITING trial is not read back: RUNNING may be another
    worker's, so the retry's False stands and the trial is not run twice."""
    from chromasonic_lib.search.storage import RetryingStorage

    class LostReply(optuna.storages.InMemoryStorage):
        lose = True

        def set_trial_state_values(self, trial_id, state, values=None):
            done = super().set_trial_state_values(trial_id, state, values)
            if LostReply.lose:
                LostReply.lose = False
                raise ConnectionError("the reply was lost after the write")
            return done

    storage = RetryingStorage(LostReply(), "memory", patience=5, sleep=lambda s: None)
    study = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "lost-reply")
    told = storage.create_new_trial(study)
    assert storage.set_trial_state_values(told, TrialState.COMPLETE, [1.0]) is True
    waiting = storage.create_new_trial(study, optuna.trial.create_trial(state=TrialState.WAITING))
    LostReply.lose = True
    assert storage.set_trial_state_values(waiting, TrialState.RUNNING) is False


def test_an_error_with_no_words_of_its_own_is_named_by_the_one_behind_it():
    """SQLAlchemy's InvalidatePoolError reads "()": the log says what happened underneath."""
    from sqlalchemy.exc import InvalidatePoolError
    from chromasonic_lib.search.storage import describe
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as cause:
            raise InvalidatePoolError() from cause
    except InvalidatePoolError as e:
        assert str(e) == "()" and describe(e) == "Connection refused"
    assert describe(RuntimeError()) == "RuntimeError"
    try:
        try:
            raise ValueError("hidden on purpose")
        except ValueError:
            raise TimeoutError() from None
    except TimeoutError as e:
        assert describe(e) == "TimeoutError"        # "from None": what it hid stays hidden
