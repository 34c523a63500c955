"""Workers through Optuna's gRPC storage proxy (``python -m chromasonic_lib.proxy``) in front of
PostgreSQL: one study, no trial repeated or left RUNNING, a dead worker's trial failed and
retried; a bad proxy address refused by name before any data loads."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import grpc
import optuna
import pytest
from optuna.trial import TrialState

from chromasonic_lib.config.checks import check_storage
from chromasonic_lib.errors import ConfigError
from conftest import PYTHON, ROOT, _free_port, postgres_or_skip
from test_distributed import _kill_a_worker_mid_trial_and_check_the_retry, _run_together

SPACE = {"models": {"markov": {"order": {"type": "int", "low": 1, "high": 3},
                               "alpha": {"type": "float", "low": 0.05, "high": 2.0, "log": True}}}}


@pytest.fixture
def proxied_study():
    """A proxy on a free port in front of the test database, and a study name of its own."""
    url, name = postgres_or_skip(), f"test-proxy-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    server = subprocess.Popen([PYTHON, "-m", "chromasonic_lib.proxy", "--storage", url, "--host", "127.0.0.1",
                               "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        first = server.stdout.readline()
        assert f"listening on 127.0.0.1:{port}, serving {url}" in first, first + server.stdout.read()
        yield url, name, f"grpc://127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
        try:
            optuna.delete_study(study_name=name, storage=url)
        except KeyError:
            pass
    assert server.returncode == 0 and "storage proxy stopped" in out, out


def _params(tmp_path, i: int, **kw) -> dict:
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps(SPACE))
    p = dict(dataset="synthetic", n_sequences=30, sequence_length=20, model="markov", search_space=str(space),
             epochs=1, sampler="random", pruner="none", device="cpu", threads=1, plot=False, live=False,
             output_dir=str(tmp_path / f"out{i}"), artifact_store=str(tmp_path / "artifacts"))
    p.update(kw)
    return p


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_share_one_study_through_the_proxy(tmp_path, proxied_study):
    url, name, proxy = proxied_study
    _run_together([_params(tmp_path, i, study_name=name, storage=proxy, n_trials=4) for i in range(2)])
    trials = optuna.load_study(study_name=name, storage=url).trials      # the database itself
    assert len(trials) == 8 and sorted(t.number for t in trials) == list(range(8))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 8       # none run twice
    assert all("heartbeat" in t.user_attrs for t in trials)      # ours: the proxy has none of Optuna's


@pytest.mark.postgres
@pytest.mark.slow
def test_a_killed_worker_s_proxied_trial_fails_after_the_grace_period_and_is_retried(tmp_path, proxied_study):
    url, name, proxy = proxied_study
    trials = _kill_a_worker_mid_trial_and_check_the_retry(tmp_path, url, name, proxy)
    assert "stopped sending heartbeats (last" in trials[0].user_attrs["fail_reason"]


@pytest.mark.parametrize("bad", ["grpc://127.0.0.1", "grpc://:13000", "grpc://host:70000", "grpc://host:1/db"])
def test_a_malformed_proxy_address_is_refused_by_name(bad):
    with pytest.raises(ConfigError, match=r"storage '.*' is not a gRPC storage proxy address: expected "
                                          r"grpc://host:port"):
        check_storage("storage", bad)


def test_a_malformed_proxy_address_from_the_environment_says_so(monkeypatch):
    monkeypatch.setenv("CHROMASONIC_STORAGE", "grpc://nohost")
    with pytest.raises(ConfigError, match=r"storage \(from CHROMASONIC_STORAGE\) 'grpc://nohost'"):
        check_storage("storage", "env")


@pytest.mark.slow
def test_an_unreachable_proxy_stops_the_search_before_any_data_loads(tmp_path):
    worker = ("import chromasonic_lib as cl, sys, json\n"
              "sys.modules['chromasonic_lib.search'].load_dataset = lambda *a, **k: sys.exit('data loaded')\n"
              "cl.run_search(cl.SearchConfig(**json.loads(sys.argv[1])))")
    params = _params(tmp_path, 0, study_name="unreachable", storage=f"grpc://127.0.0.1:{_free_port()}")
    start = time.monotonic()
    run = subprocess.run([PYTHON, "-c", worker, json.dumps(params)], cwd=ROOT, capture_output=True, text=True,
                         timeout=400, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode != 0
    assert f"ConfigError: storage '{params['storage']}' cannot be opened: no storage proxy answered" in run.stderr
    # Within seconds of its start-up (the proxy's 10 s), not after storage_patience (600 s): the
    # bound leaves room for a start-up that shares the cores with other tests.
    assert "data loaded" not in run.stderr and time.monotonic() - start < 300


def test_the_proxy_refuses_a_journal_and_names_it(tmp_path):
    run = subprocess.run([PYTHON, "-m", "chromasonic_lib.proxy", "--storage", f"journal:{tmp_path}/s.log"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "cannot be served by the gRPC proxy" in run.stderr


class _RpcError(grpc.RpcError):
    def __init__(self, code, details=""):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


def test_a_proxy_that_is_away_counts_as_transient_and_a_refusal_does_not():
    from chromasonic_lib.search.storage import RetryingStorage, transient_cause
    assert transient_cause(_RpcError(grpc.StatusCode.UNAVAILABLE))
    assert transient_cause(_RpcError(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert transient_cause(_RpcError(grpc.StatusCode.CANCELLED))     # a proxy stopping mid-call
    # The proxy is up, its database is not: Optuna's proxy answers UNKNOWN with the error's text.
    assert transient_cause(_RpcError(grpc.StatusCode.UNKNOWN, "Exception calling application: storage "
                                     "'postgresql://db' unreachable for longer than storage_patience (1 s)"))
    assert transient_cause(_RpcError(grpc.StatusCode.UNKNOWN, "Exception calling application: "
                                     "(psycopg.OperationalError) connection failed"))
    assert not transient_cause(_RpcError(grpc.StatusCode.UNKNOWN, "Exception calling application: "
                                         "ValueError: bad distribution"))
    try:                            # as Optuna's client raises NOT_FOUND: a KeyError from it
        raise KeyError from _RpcError(grpc.StatusCode.NOT_FOUND)
    except KeyError as e:
        assert not transient_cause(e)

    class Flaky(optuna.storages.InMemoryStorage):
        calls = 0

        def get_all_studies(self):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise _RpcError(grpc.StatusCode.UNAVAILABLE)
            return super().get_all_studies()

    storage = RetryingStorage(Flaky(), "grpc://127.0.0.1:1", patience=5, sleep=lambda s: None)
    assert storage.get_all_studies() == [] and Flaky.calls == 2      # waited out, once


def test_a_restarted_proxy_sets_parameters_of_trials_created_through_the_one_before(tmp_path):
    """The database as a proxy opens it, twice: the second (the proxy restarted) never saw the
    trial the first created, and still sets its next parameter (Optuna's cache alone raised a
    bare KeyError there, and the trial failed)."""
    from chromasonic_lib.search.study import open_storage
    url = f"sqlite:///{tmp_path}/s.db"
    before = open_storage(url)
    study = optuna.create_study(study_name="s", storage=before)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    after = open_storage(url)
    dist = optuna.distributions.IntDistribution(1, 3)
    after.set_trial_param(trial._trial_id, "order", 2, dist)
    assert after.get_trial(trial._trial_id).params == {"x": trial.params["x"], "order": 2}
    with pytest.raises(ValueError):     # checked against the study's earlier ones, as before
        after.set_trial_param(study.ask()._trial_id, "order", 0.5, optuna.distributions.FloatDistribution(0, 1))


def _start_proxy(url: str, port: int, patience: float) -> subprocess.Popen:
    server = subprocess.Popen([PYTHON, "-m", "chromasonic_lib.proxy", "--storage", url, "--host", "127.0.0.1",
                               "--port", str(port), "--patience", str(patience)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = server.stdout.readline()
    assert "listening on" in first, first + server.stdout.read()
    return server


@pytest.mark.slow
def test_a_worker_waits_out_a_proxy_restart_and_a_database_outage_behind_the_proxy(tmp_path, own_postgres):
    """One worker through the proxy, on a PostgreSQL server of the test's own. The proxy is
    stopped and started again on its port; then the database stops for longer than the proxy's
    own patience, so the proxy answers with its error (gRPC UNKNOWN) and the worker, whose
    patience is longer, retries it. The worker runs on and finishes every trial."""
    from test_faults import _count, _wait_for_trials, _worker
    pg, port, name, asked = own_postgres, _free_port(), "via-proxy", 30
    proxy = _start_proxy(pg.url, port, patience=1)
    params = _params(tmp_path, 0, study_name=name, storage=f"grpc://127.0.0.1:{port}", n_trials=asked,
                     epochs=2, storage_patience=300, heartbeat_interval=2, grace_period=30)
    worker = _worker(params, tmp_path / "w.log")
    try:
        deadline = time.monotonic() + 300
        _wait_for_trials(pg.url, name, 4, worker, tmp_path / "w.log", deadline)
        proxy.send_signal(signal.SIGTERM)       # the proxy restarts: UNAVAILABLE meanwhile
        proxy.communicate(timeout=30)
        time.sleep(2)
        proxy = _start_proxy(pg.url, port, patience=1)
        _wait_for_trials(pg.url, name, _count(pg.url, name) + 3, worker, tmp_path / "w.log", deadline)
        pg.pg_ctl("stop", "-m", "fast")         # longer than the proxy's patience: UNKNOWN
        time.sleep(5)
        pg.pg_ctl("start")
        code = worker.wait(timeout=400)
    finally:
        if worker.poll() is None:
            worker.kill()
        proxy.send_signal(signal.SIGTERM)
        proxy.communicate(timeout=30)
    log = (tmp_path / "w.log").read_text()
    assert code == 0 and "WORKER DONE" in log, log[-3000:]
    assert "_InactiveRpcError in" in log and ": UNAVAILABLE: " in log, "the worker never saw the proxy away"
    assert "unreachable for longer than storage_patience" in log, "the worker never saw the database away"
    trials = optuna.load_study(study_name=name, storage=pg.url).trials
    failed = {t.number: t.user_attrs.get("fail_reason") for t in trials if t.state != TrialState.COMPLETE}
    assert [t.state for t in trials].count(TrialState.COMPLETE) == asked, f"{failed}\n{log[-6000:]}"
    assert not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
