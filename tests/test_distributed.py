"""Several workers, one study: PostgreSQL (for real), journal files, the batch runner, the dashboard."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import PYTHON, ROOT, _free_port, _own_postgres, postgres_or_skip

SPACE = {"training": {"learning_rate": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True}},
         "models": {"gru": {"hidden_size": {"type": "int", "low": 8, "high": 24}, "embedding_dim": 8}}}

WORKER = """
import sys, json
import chromasonic_lib as cl
cl.run_search(cl.SearchConfig(**json.loads(sys.argv[1])))
"""


def _params(tmp_path, **kw):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    p = dict(dataset="synthetic", n_sequences=30, sequence_length=20, model="gru", search_space=str(space),
             epochs=2, device="cpu", threads=1, output_dir=str(tmp_path / "out"), plot=False)
    p.update(kw)
    return p


def _worker(params: dict) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-c", WORKER, json.dumps(params)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run_together(params: list[dict]) -> None:
    """Start one worker per parameter set at once and wait until all succeed."""
    for w in [_worker(p) for p in params]:
        out, _ = w.communicate(timeout=600)
        assert w.returncode == 0, out[-3000:]


def _journal_trials_of_two_workers(tmp_path, params: dict) -> list:
    """Two workers on one journal file, started together; the study's trials when both are done."""
    _run_together([params, params])
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(f"{tmp_path}/study.log"))
    return optuna.load_study(study_name=params["study_name"], storage=storage).trials


@pytest.fixture
def pg_study():
    url = postgres_or_skip()
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield url, name
    try:
        optuna.delete_study(study_name=name, storage=url)
    except KeyError:
        pass


@pytest.mark.postgres
@pytest.mark.slow
def test_three_workers_share_one_postgres_study(tmp_path, pg_study):
    url, name = pg_study
    params = tmp_path / "pg.yaml"
    params.write_text(yaml.safe_dump(_params(tmp_path, study_name=name, storage=url, n_trials=4, pruner="none")))
    run = subprocess.run([PYTHON, "-m", "chromasonic_lib.batch", str(params), "--workers", "3",
                          "--out", str(tmp_path / "nbs")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    study = optuna.load_study(study_name=name, storage=url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 12 and len({t.number for t in study.trials}) == len(study.trials)
    results = json.loads((tmp_path / "out" / "optimization_results.json").read_text())
    assert results["n_trials"] == 12
    assert results["best_value"] == pytest.approx(study.best_value)
    assert len(list((tmp_path / "nbs").glob("pg-worker*.ipynb"))) == 3


def _kill_a_worker_mid_trial_and_check_the_retry(tmp_path, storage, name, url) -> list:
    """SIGKILL a worker mid-trial, wait past the grace period, run a second worker; the trials.

    The dead trial must end FAIL, and a later trial must rerun its parameters to COMPLETE.
    """
    common = dict(study_name=name, storage=url, heartbeat_interval=1, grace_period=3, pruner="none")
    victim = _worker(_params(tmp_path, **common, n_trials=1, epochs=500))
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            if any(t.state == TrialState.RUNNING and t.intermediate_values for t in study.trials):
                break
        except KeyError:
            pass
        time.sleep(0.5)
    else:
        victim.kill()
        pytest.fail("the first worker never started a trial: " + victim.communicate()[0][-2000:])
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(4)                                          # past the grace period
    # Same epochs (the study guards them); the timeout ends the retried trial early, with a result.
    rescuer = _worker(_params(tmp_path, **common, n_trials=2, epochs=500, timeout=4))
    out, _ = rescuer.communicate(timeout=300)
    assert rescuer.returncode == 0, out[-3000:]
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert trials[0].state == TrialState.FAIL
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        retried = [t for t in trials[1:]
                   if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == trials[0].number]
    assert retried and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == trials[0].params           # the dead trial's parameters, run again
    return trials


@pytest.mark.postgres
@pytest.mark.slow
def test_a_killed_worker_s_trial_fails_after_the_grace_period_and_is_retried(tmp_path, pg_study):
    url, name = pg_study
    _kill_a_worker_mid_trial_and_check_the_retry(tmp_path, url, name, url)


@pytest.mark.slow
def test_a_killed_worker_s_journal_trial_fails_after_the_grace_period_and_is_retried(tmp_path):
    # Optuna's journal storage has no heartbeats: chromasonic_lib.search.heartbeat gives it some.
    path = str(tmp_path / "study.log")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    trials = _kill_a_worker_mid_trial_and_check_the_retry(tmp_path, storage, "journal", f"journal:{path}")
    assert "stopped sending heartbeats (last" in trials[0].user_attrs["fail_reason"]


@pytest.mark.slow
def test_two_processes_share_a_journal_file(tmp_path):
    params = _params(tmp_path, study_name="journal", storage=f"journal:{tmp_path}/study.log", n_trials=3)
    trials = _journal_trials_of_two_workers(tmp_path, params)
    assert len(trials) == 6 and sorted(t.number for t in trials) == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


@pytest.mark.slow
def test_batch_runner_reports_a_good_and_a_bad_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_params(tmp_path, study_name="good", storage=f"sqlite:///{tmp_path}/s.db",
                                           n_trials=2)))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"study_name": "bad", "n_trials": -3, "dataset": "synthetic"}))
    run = subprocess.run([PYTHON, "-m", "chromasonic_lib.batch", str(good), str(bad), "--parallel", "2",
                          "--out", str(tmp_path / "nbs")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1
    table = run.stdout[run.stdout.index("run "):]
    good_row = next(line for line in table.splitlines() if line.startswith("good"))
    bad_row = next(line for line in table.splitlines() if line.startswith("bad"))
    assert good_row.rstrip().endswith("ok") and " 2 " in good_row
    assert "FAILED" in bad_row and "n_trials must be a positive integer, got -3" in bad_row
    assert (tmp_path / "nbs" / "good.ipynb").exists()


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study_on_loopback(tmp_path):
    storage = f"sqlite:///{tmp_path}/dash.db"
    study = optuna.create_study(study_name="watched", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    port = _free_port()
    server = subprocess.Popen([os.path.join(os.path.dirname(PYTHON), "optuna-dashboard"), storage,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body, deadline = None, time.monotonic() + 180
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.5)
        assert body is not None, "the dashboard did not answer"
        assert "watched" in [s["study_name"] for s in body["study_summaries"]]
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.postgres
@pytest.mark.slow
# The random sampler's workers minimize two objectives (a Pareto front of loss and latency).
@pytest.mark.parametrize("sampler,objectives", [("random", ["bits_per_note", "ms_per_note"]),
                                                ("tpe", ["bits_per_note"])])
def test_workers_started_together_run_distinct_trials_and_share_the_best_weights(tmp_path, pg_study, sampler,
                                                                                 objectives):
    import chromasonic_lib as cl
    from chromasonic_lib.data import load_dataset, prepare
    from chromasonic_lib.search.objectives import best_trial, loss
    from chromasonic_lib.training import evaluate
    url, name = pg_study
    _run_together([_params(tmp_path, study_name=name, storage=url, n_trials=4, pruner="none", epochs=1,
                           sampler=sampler, objectives=objectives, output_dir=str(tmp_path / f"out{i}"),
                           artifact_store=str(tmp_path / "store"))
                   for i in range(3)])
    study = optuna.load_study(study_name=name, storage=url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 12
    assert len({json.dumps(t.params, sort_keys=True) for t in finished}) == 12      # no repeats
    assert sum(t.user_attrs.get("enqueued") == "family defaults" for t in study.trials) == 1
    data = prepare(load_dataset("synthetic", n_sequences=30, sequence_length=20, seed=42), 0.1, 0.1, 42)
    for i in range(3):                      # each worker's folder holds the study's best weights
        model, meta = cl.load_checkpoint(tmp_path / f"out{i}" / "best_model.pt")
        assert meta["trial"] == best_trial(study).number
        assert evaluate(model, data.val).nats_per_note == pytest.approx(loss(best_trial(study)), rel=1e-4)
    if len(objectives) > 1:                 # every worker's front is the study's
        fronts = [json.loads((tmp_path / f"out{i}" / "pareto_front.json").read_text()) for i in range(3)]
        assert all({r["number"] for r in f} == {t.number for t in study.best_trials} for f in fronts)
        assert all(len(t.values) == 2 and t.user_attrs["ms_per_note"] > 0 for t in finished)


@pytest.mark.slow
def test_total_trials_caps_the_study_across_workers(tmp_path):
    params = _params(tmp_path, study_name="capped", storage=f"journal:{tmp_path}/study.log", n_trials=10,
                     total_trials=6, epochs=1, pruner="none")
    trials = _journal_trials_of_two_workers(tmp_path, params)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert 6 <= len(finished) <= 7                      # one may already run when the cap is reached
    assert len(trials) == len(finished)


@pytest.fixture
def roomy_postgres():
    """A PostgreSQL server of the test's own with room for 32 workers' connections (and their
    heartbeat threads'), so that no other test sharing the database server runs short."""
    yield from _own_postgres("-c max_connections=300")


@pytest.mark.slow
@pytest.mark.postgres
def test_thirty_two_workers_on_one_postgres_study_lose_nothing_and_repeat_nothing(roomy_postgres):
    """32 worker processes, 4 tiny markov trials each, on one PostgreSQL study (the many-workers
    benchmark's own run, about two minutes on 2 cores): every trial asked for finishes once."""
    url = roomy_postgres.url
    run = subprocess.run([PYTHON, str(ROOT / "benchmarks" / "many_workers.py"), "--workers", "32",
                          "--trials", "4", "--storage", url], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])["results"][0]
    assert result["workers"] == 32
    assert result["trials_finished"] == 32 * 4, result
    assert (result["duplicates"], result["lost"], result["running_left"], result["waiting_left"],
            result["failed"], result["workers_failed"]) == (0, 0, 0, 0, 0, 0), result


@pytest.mark.slow
@pytest.mark.postgres
def test_many_workers_benchmark_exits_non_zero_when_a_worker_fails():
    """A bad search parameter stops every worker before its first trial (seconds): the
    benchmark says so on stderr, its last line counts the failures, and it exits 1."""
    url = postgres_or_skip()
    run = subprocess.run([PYTHON, str(ROOT / "benchmarks" / "many_workers.py"), "--workers", "2",
                          "--trials", "1", "--storage", url, "--set", "epochs=0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 1, run.stderr[-3000:]
    assert "many_workers: FAILED" in run.stderr.strip().splitlines()[-1]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["workers_failed"] == 2 and summary["results"][0]["lost"] == 2, summary


def test_a_worker_that_ends_waits_for_another_worker_between_two_of_its_trials(tmp_path, monkeypatch):
    """Between telling a trial and asking for its next, a worker runs none: the study looks
    finished, yet a better trial is coming, whose weights best_model.pt must hold."""
    import threading
    from chromasonic_lib.search import _wait_for_other_workers
    url = f"sqlite:///{tmp_path / 'study.db'}"
    began = time.time()
    study = optuna.create_study(storage=url, study_name="s")
    theirs = optuna.load_study(storage=url, study_name="s")     # loaded before the clock starts
    study.tell(study.ask(), 1.0)        # the other worker's first trial, just told

    def other_worker():
        time.sleep(1.5)                 # its callbacks and its sampler
        trial = theirs.ask()
        time.sleep(1.0)
        theirs.tell(trial, 0.5)

    thread = threading.Thread(target=other_worker)
    thread.start()
    _wait_for_other_workers(study, limit=60, ours=set(), since=began)
    seen = [t.state for t in study.get_trials()]
    thread.join()
    assert seen == [TrialState.COMPLETE] * 2
    from types import SimpleNamespace
    from chromasonic_lib import search as search_mod
    slept = []                      # a run started after them: no sign of a worker alive, no wait
    monkeypatch.setattr(search_mod, "time", SimpleNamespace(sleep=slept.append, time=time.time,
                                                            monotonic=time.monotonic))
    _wait_for_other_workers(study, limit=60, ours=set(), since=time.time())
    assert slept == []
