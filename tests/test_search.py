"""The search: notebook files, pruning, resuming, failures, the original API, atomic results."""
from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

import chromasonic_lib as cl
from chromasonic_lib.atomic import atomic_write, write_json
from chromasonic_lib.search import objective as objective_mod
from conftest import outputs_of, run_notebook

TINY_SPACE = {
    "training": {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}},
    "models": {"lstm": {"hidden_size": {"type": "int", "low": 8, "high": 24},
                        "embedding_dim": 8, "num_layers": 1, "dropout": 0.0}},
}


def tiny_cfg(tmp_path, **kw):
    base = dict(study_name="t", storage=f"sqlite:///{tmp_path}/s.db", output_dir=str(tmp_path / "out"),
                dataset="synthetic", n_sequences=30, sequence_length=20, model="lstm",
                search_space=TINY_SPACE, n_trials=2, epochs=3, device="cpu", plot=False)
    base.update(kw)
    return cl.SearchConfig(**base)


@pytest.mark.slow
def test_search_notebook_writes_every_result_file(tmp_path):
    out = tmp_path / "out"
    nb = run_notebook("search", tmp_path / "search.ipynb", study_name="nb", dataset="synthetic",
                      n_sequences=30, sequence_length=20, n_trials=3, epochs=2,
                      storage=f"sqlite:///{tmp_path}/s.db", output_dir=str(out))
    for name in ("best_hyperparameters.json", "optimization_results.json", "optimization_report.txt",
                 "optimization_history.png", "trials.csv", "best_model.pt"):
        assert (out / name).stat().st_size > 0, name
    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert best["model"] == "lstm" and "learning_rate" in best and "hidden_size" in best
    res = json.loads((out / "optimization_results.json").read_text())
    assert res["n_trials"] == 3 and len(res["trials"]) == 3
    assert math.isfinite(res["best_value"]) and res["best_params"] == best
    # 19 steps of the walk (1.53 nats each) and a first note at ln 88 = 4.48, per note.
    assert res["floor"] == pytest.approx((19 * 1.53 + math.log(88)) / 20, abs=0.15)
    assert {"number", "state", "params", "value", "intermediate_values", "duration", "user_attrs"} <= set(res["trials"][0])
    complete = [t for t in res["trials"] if t["state"] == "COMPLETE"]
    assert {"n_params", "epochs_trained", "train_seconds", "val_bits_per_note", "val_accuracy"} <= set(complete[0]["user_attrs"])
    assert "BEST: trial" in (out / "optimization_report.txt").read_text()
    assert len((out / "trials.csv").read_text().strip().splitlines()) == 4
    ckpt = torch.load(out / "best_model.pt", weights_only=True)
    model, meta = cl.load_checkpoint(out / "best_model.pt")
    assert meta["family"] == "lstm" and ckpt["value"] == pytest.approx(res["best_value"])
    text = "".join(o.get("text", "") for o in outputs_of(nb))
    assert "search finished: 3 trials" in text          # plain-text progress survives HTML export
    assert any("image/png" in o.get("data", {}) for o in outputs_of(nb))
    # One live view, left in its final state (papermill applies every update in place) ...
    views = [o["data"] for o in outputs_of(nb) if "chromasonic-live" in o.get("data", {}).get("text/html", "")]
    assert len(views) == 1
    best = f"best {res['best_value']:.4f}"
    assert views[0]["text/plain"].startswith(f"search finished: 3/3 trials · {best}")
    assert "data:image/png;base64," in views[0]["text/html"]
    # ... and so is the HTML report; beside it no progress widget, whose saved text is its first
    # state ("trials:   0%|   | 0/3") and which an HTML report opened offline can't draw.
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs_of(nb))
    from nbconvert import HTMLExporter
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert f"search finished: 3/3 trials · {best}" in html


def test_pruner_prunes_a_hopeless_trial(tmp_path, caplog):
    caplog.set_level("INFO", logger="chromasonic_lib")
    cfg = tiny_cfg(tmp_path, n_trials=1, epochs=6)
    cl.run_search(cfg)                                     # the defaults: a good reference
    study = optuna.load_study(study_name="t", storage=cfg.storage)
    study.enqueue_trial({"learning_rate": 1e-5, "hidden_size": 8})
    cl.run_search(cfg)
    hopeless = study.trials[-1]
    assert hopeless.state == TrialState.PRUNED
    assert len(hopeless.intermediate_values) < 6
    # On what it was stopped, as the median pruner judged it: its best against the median there.
    on = hopeless.user_attrs["pruned_on"]
    step = max(hopeless.intermediate_values)
    assert on == {"step": step, "best": min(hopeless.intermediate_values.values()),
                  "median": study.trials[0].intermediate_values[step], "trials": 1}
    assert on["best"] > on["median"]
    assert f"trial 1 pruned at epoch {step} (its best so far {on['best']:.4f} against the median " \
           f"{on['median']:.4f} of 1 finished trial at that step)" in caplog.text


def test_a_second_run_resumes_the_study(tmp_path):
    cl.run_search(tiny_cfg(tmp_path, n_trials=3))
    result = cl.run_search(tiny_cfg(tmp_path, n_trials=2))
    assert result.n_trials == 5 and len(result.study.trials) == 5
    assert result.summary_line() == (f"best: {result.best_value:.4f} nats/note; markov baseline "
                                     f"{result.markov_baseline:.4f}; floor (the generator's own loss) "
                                     f"{result.floor:.4f}")
    assert json.loads((tmp_path / "out" / "optimization_results.json").read_text())["n_trials"] == 5


def test_an_exception_and_a_nan_each_end_as_fail_and_the_study_goes_on(tmp_path, monkeypatch):
    real_build = objective_mod.build_model
    calls = {"n": 0}

    def flaky_build(name, hp, vocab, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        model = real_build(name, hp, vocab, **kw)
        if calls["n"] == 3:
            with torch.no_grad():
                model.head.bias.fill_(float("nan"))
        return model

    monkeypatch.setattr(objective_mod, "build_model", flaky_build)
    result = cl.run_search(tiny_cfg(tmp_path, n_trials=4, pruner="none"))
    states = [t.state for t in result.study.trials]
    assert states.count(TrialState.FAIL) == 2 and states.count(TrialState.COMPLETE) == 2
    reasons = [t.user_attrs["fail_reason"] for t in result.study.trials if t.state == TrialState.FAIL]
    assert "simulated crash" in reasons[0] and "nan" in reasons[1]
    assert all(t.value is None for t in result.study.trials if t.state == TrialState.FAIL)   # never inf
    report = (tmp_path / "out" / "optimization_report.txt").read_text()
    assert "simulated crash" in report


def test_a_search_without_a_complete_trial_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(objective_mod, "train", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    result = cl.run_search(tiny_cfg(tmp_path, n_trials=2))
    assert result.best_value is None
    assert result.summary_line().startswith("no trial completed yet (2 trials: 2 failed); markov baseline ")
    assert result.best_trials(10).empty
    empty = cl.SearchResult(optuna.create_study(), {}, None, 0, 0.0, tmp_path)
    assert empty.summary_line() == "no trial completed yet (0 trials)" and empty.best_trials().empty


@pytest.mark.slow
def test_search_notebook_runs_to_the_end_when_every_trial_fails(tmp_path):
    out = tmp_path / "out"
    nb = run_notebook("search", tmp_path / "search.ipynb", study_name="nb-fail", dataset="synthetic",
                      n_sequences=30, sequence_length=20, n_trials=2, epochs=2,
                      search_space={"models": {"lstm": {"hidden_size": 0}}},     # every trial: ConfigError
                      storage=f"sqlite:///{tmp_path}/s.db", output_dir=str(out))
    text = "".join(o.get("text", "") for o in outputs_of(nb))
    assert "no trial completed yet (2 trials: 2 failed); markov baseline" in text
    assert "No trial has completed yet." in text and "hidden_size of lstm must be a positive integer" in text
    assert not any("image/png" in o.get("data", {}) for o in outputs_of(nb))
    assert json.loads((out / "optimization_results.json").read_text())["best_value"] is None


def test_ctrl_c_ends_the_trial_as_fail_and_leaves_consistent_files(tmp_path, monkeypatch):
    real_train = objective_mod.train
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_train(*a, **k)

    monkeypatch.setattr(objective_mod, "train", interrupted)
    result = cl.run_search(tiny_cfg(tmp_path, n_trials=5, plot=True))
    assert result.interrupted
    last = result.study.trials[-1]
    assert last.state == TrialState.FAIL and "interrupted" in last.user_attrs["fail_reason"]
    out = tmp_path / "out"
    res = json.loads((out / "optimization_results.json").read_text())
    assert res["n_trials"] == 2 and res["states"]["fail"] == 1
    assert len((out / "trials.csv").read_text().splitlines()) == 3
    # The PNG is redrawn only every few seconds during a search, and always at its end.
    assert drawn_after(out / "optimization_history.png", last)


def drawn_after(path, trial) -> bool:
    import datetime as dt
    return dt.datetime.fromtimestamp(path.stat().st_mtime) >= trial.datetime_complete


def test_an_error_that_stops_the_search_still_leaves_current_files(tmp_path, monkeypatch):
    real_train = objective_mod.train
    calls = {"n": 0}

    def dies(*a, **k):                  # not an Exception: Optuna lets it through, as we do
        calls["n"] += 1
        if calls["n"] == 3:
            raise SystemExit("killed")
        return real_train(*a, **k)

    monkeypatch.setattr(objective_mod, "train", dies)
    with pytest.raises(SystemExit):
        cl.run_search(tiny_cfg(tmp_path, n_trials=5, plot=True, pruner="none"))
    out = tmp_path / "out"
    res = json.loads((out / "optimization_results.json").read_text())
    assert res["states"]["complete"] == 2 and res["n_trials"] == 3      # the third still RUNNING
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/s.db")
    assert drawn_after(out / "optimization_history.png", study.trials[1])


def small_study() -> optuna.Study:
    """Trials of every state, a new user attribute (a new CSV column) half way, ints and dicts."""
    study = optuna.create_study()
    dist = {"hidden_size": optuna.distributions.IntDistribution(8, 64)}
    for i, value in enumerate((1.7, 1.6, None, 1.65, None)):
        attrs = {"config": {"model": "lstm", "hidden_size": 8 + i}, "n_params": 100 * i}
        if i == 2:
            attrs = {"config": {}, "fail_reason": "RuntimeError: boom, \"quoted\""}
        state = TrialState.FAIL if i == 2 else TrialState.PRUNED if i == 4 else TrialState.COMPLETE
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value, params={"hidden_size": 8 + i}, distributions=dist,
            user_attrs=attrs, intermediate_values={0: 1.8} if i == 4 else {},
            system_attrs={f"artifacts:{i}": "{}"} if state == TrialState.COMPLETE else {}))
    return study


def test_result_files_written_trial_by_trial_are_those_of_the_whole_study(tmp_path):
    import io
    import pandas as pd
    from chromasonic_lib.search.results import ResultFiles, trial_record, write_results
    whole = small_study()
    study = optuna.create_study()
    files = ResultFiles(tmp_path / "steps", plot=False, files_interval=0)
    for i, t in enumerate(whole.trials):    # as a search adds them, rewriting after each
        study.add_trial(t)
        files.write(study)
        if i == 0:                      # another worker's trial, which ends after later ones
            running = study.ask()
            running.set_user_attr("worker", "elsewhere")
            files.write(study)
    study.tell(running, 1.62)
    files.write(study)
    write_results(study, tmp_path / "once", plot=False)
    for name in ("best_hyperparameters.json", "optimization_report.txt", "trials.csv"):
        steps, once = (tmp_path / d / name for d in ("steps", "once"))
        assert steps.read_text().replace(*written(steps)) == once.read_text().replace(*written(once))
    res = json.loads((tmp_path / "steps" / "optimization_results.json").read_text())
    assert res["trials"] == [trial_record(t) for t in study.trials]
    assert res["n_trials"] == 6 and res["best_value"] == 1.6 and res["states"]["fail"] == 1
    # trials.csv holds Optuna's trials table (ints stay ints beside a failed trial's empty cell),
    # less a column per trial for its checkpoint's link.
    ours = pd.read_csv(tmp_path / "steps" / "trials.csv")
    optunas = pd.read_csv(io.StringIO(study.trials_dataframe().to_csv(index=False)))
    optunas = optunas.drop(columns=[c for c in optunas if c.startswith("system_attrs_artifacts:")])
    for df in (ours, optunas):          # pandas writes a column of 0 s as "0 days", we "0 days 00:00:00"
        df["duration"] = pd.to_timedelta(df["duration"])
    pd.testing.assert_frame_equal(ours, optunas)
    assert "RuntimeError: boom" in ours["user_attrs_fail_reason"][3]


def written(path):
    """The report's "written <time>" line, which differs between two writes."""
    line = next((x for x in path.read_text().splitlines() if x.startswith("written ")), "")
    return line, ""


def test_the_history_png_is_redrawn_every_few_seconds_and_always_at_the_end(tmp_path):
    from chromasonic_lib.search.results import ResultFiles
    clock = Clock()
    files = ResultFiles(tmp_path, png_interval=5.0, clock=clock)
    png = tmp_path / "optimization_history.png"
    study = optuna.create_study()
    for trial in small_study().trials[:4]:
        clock.now += 1.0
        study.add_trial(trial)
        files.write(study)
    assert not png.exists() and files.png.count == 0           # 4 s: none drawn yet
    clock.now += 1.5
    files.write(study)
    assert png.exists() and files.png.count == 1
    files.write(study)
    assert files.png.count == 1
    files.write(study, final=True)
    assert files.png.count == 2


def test_files_of_every_trial_are_rewritten_once_a_second_and_always_at_the_end(tmp_path):
    """optimization_results.json, trials.csv and the report grow with the study: rewritten at
    most every files_interval seconds (the first write at once), while best_hyperparameters.json
    follows every new best; the final write brings every file up to date."""
    from chromasonic_lib.search.results import ResultFiles
    clock = Clock()
    files = ResultFiles(tmp_path, plot=False, clock=clock, files_interval=1.0)
    results, best = tmp_path / "optimization_results.json", tmp_path / "best_hyperparameters.json"
    study = optuna.create_study()
    trials = [t for t in small_study().trials if t.state == TrialState.COMPLETE]
    study.add_trial(trials[0])
    files.write(study)
    assert json.loads(results.read_text())["n_trials"] == 1          # the first: at once
    study.add_trial(trials[1])
    clock.now += 0.5
    files.write(study)
    assert json.loads(results.read_text())["n_trials"] == 1          # not yet due
    assert json.loads(best.read_text())["hidden_size"] == 9           # the new best: at once
    clock.now += 1.0
    files.write(study)
    assert json.loads(results.read_text())["n_trials"] == 2
    study.add_trial(trials[2])
    files.write(study, final=True)
    assert json.loads(results.read_text())["n_trials"] == 3
    assert len((tmp_path / "trials.csv").read_text().splitlines()) == 4


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_same_parameters_give_the_same_sequence_of_trials(tmp_path, sampler):
    runs = []
    for i in range(2):
        result = cl.run_search(tiny_cfg(tmp_path / str(i), n_trials=4, sampler=sampler, epochs=2))
        runs.append([(t.params, t.value) for t in result.study.trials])
    assert runs[0] == runs[1]


def test_timeout_bounds_the_whole_search(tmp_path):
    import time
    start = time.monotonic()
    # A trial that still improves after the deadline (a slow learning rate trains ~50 epochs,
    # ~5 s here; no pruner), so no trial can end by itself just before it and be the last.
    slow = {**TINY_SPACE, "training": {"learning_rate": 1e-3}}
    result = cl.run_search(tiny_cfg(tmp_path, n_trials=1000, timeout=1, epochs=50, pruner="none",
                                    search_space=slow))
    assert time.monotonic() - start < 120      # not 1000 trials of ~5 s (a loaded machine: slack)
    last = result.study.trials[-1]
    # A trial cut short by the timeout keeps its best epoch so far as a result.
    assert last.state == TrialState.COMPLETE and last.user_attrs["stopped_by"] == "search timeout"
    assert last.user_attrs["epochs_trained"] < 50


def test_original_api_works_on_lists_of_lists(tmp_path):
    rng = np.random.default_rng(0)
    walks = [np.clip(40 + np.cumsum(rng.integers(-2, 3, 20)), 0, 87).tolist() for _ in range(30)]
    space = cl.HyperparameterSearchSpace(hidden_size_range=(8, 16), embedding_dim_range=(8, 16),
                                         num_layers_range=(1, 1), num_epochs=2)
    opt = cl.HyperparameterOptimizer("lstm", space, device="cpu", output_dir=str(tmp_path / "seed"))
    out = opt.optimize(walks[:24], walks[24:], vocab_size=88, n_trials=2, study_name="seed-api")
    assert set(out) >= {"best_params", "best_value", "n_trials", "total_time", "trial_results"}
    assert out["n_trials"] == 2 and math.isfinite(out["best_value"])
    assert (tmp_path / "seed" / "best_hyperparameters.json").exists()
    with pytest.raises(cl.DataError, match="train_data"):
        opt.optimize([[1]], walks[24:])


def test_original_api_honours_vocab_size_and_records_the_users_data(tmp_path):
    rng = np.random.default_rng(0)
    walks = [np.clip(110 + np.cumsum(rng.integers(-2, 3, 20)), 0, 127).tolist() for _ in range(30)]
    walks[0][:3] = [127, 126, 127]          # beyond the 88 keys and the grid encoding's 90 tokens
    space = cl.HyperparameterSearchSpace(hidden_size_range=(8, 16), embedding_dim_range=(8, 16),
                                         num_layers_range=(1, 1), num_epochs=2)
    out_dir = tmp_path / "seed"
    opt = cl.HyperparameterOptimizer("lstm", space, device="cpu", output_dir=str(out_dir), pruner="none")
    out = opt.optimize(walks[:24], walks[24:], vocab_size=128, n_trials=2, study_name="seed-128")
    assert [t["state"] for t in out["trial_results"]] == ["COMPLETE", "COMPLETE"]
    assert math.isfinite(out["best_value"])
    results, report = (out_dir / "optimization_results.json").read_text(), (out_dir / "optimization_report.txt").read_text()
    res = json.loads(results)
    assert res["floor"] is None and res["config"]["dataset"] == "user token lists"
    assert res["data"].startswith("user token lists (vocab 128): 30 melodies") and "no transposition" in res["data"]
    assert "synthetic" not in results and "synthetic" not in report and "floor" not in report
    assert cl.load_checkpoint(out_dir / "best_model.pt")[1]["vocab_size"] == 128
    with pytest.raises(cl.DataError, match=r"train_data\[2\]\[5\] is token 128, outside 0..127"):
        opt.optimize(walks[:2] + [walks[2][:5] + [128]], walks[24:], vocab_size=128)


def test_original_api_resumed_with_other_token_lists_or_vocabulary_stops(tmp_path, monkeypatch):
    from chromasonic_lib.search import objective
    rng = np.random.default_rng(0)
    walks = [np.clip(20 + np.cumsum(rng.integers(-2, 3, 20)), 0, 39).tolist() for _ in range(30)]
    space = cl.HyperparameterSearchSpace(hidden_size_range=(8, 16), embedding_dim_range=(8, 16),
                                         num_layers_range=(1, 1), num_epochs=1)
    opt = cl.HyperparameterOptimizer("markov", space, device="cpu", output_dir=str(tmp_path / "seed"),
                                     storage=f"sqlite:///{tmp_path}/s.db", pruner="none")
    opt.optimize(walks[:24], walks[24:], vocab_size=40, n_trials=1, study_name="tokens")
    monkeypatch.setattr(objective, "train", lambda *a, **k: pytest.fail("trained"))
    other = [list(reversed(w)) for w in walks]
    with pytest.raises(cl.ConfigError, match="dataset_fingerprint.*run with the study's melodies"):
        opt.optimize(other[:24], other[24:], vocab_size=40, n_trials=1, study_name="tokens")
    with pytest.raises(cl.ConfigError, match="vocab_size"):
        opt.optimize(walks[:24], walks[24:], vocab_size=60, n_trials=1, study_name="tokens")


def test_an_interrupted_write_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "optimization_results.json"
    write_json(path, {"best_value": 1.5})

    def crash_midway(tmp):
        tmp.write_text('{"best_value": 1.4, "tri')
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, crash_midway)
    assert json.loads(path.read_text()) == {"best_value": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["optimization_results.json"]


def test_an_existing_study_keeps_its_trials_whatever_a_new_run_does(tmp_path, monkeypatch):
    cl.run_search(tiny_cfg(tmp_path, n_trials=2))
    before = [(t.number, t.value) for t in optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/s.db").trials]
    with pytest.raises(cl.ConfigError, match="different settings"):
        cl.run_search(tiny_cfg(tmp_path, n_trials=2, n_sequences=30, dataset="essen/erk5"))
    monkeypatch.setattr(objective_mod, "train", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    cl.run_search(tiny_cfg(tmp_path, study_name="other", output_dir=str(tmp_path / "other"), n_trials=2))
    after = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/s.db").trials
    assert [(t.number, t.value) for t in after] == before
    assert json.loads((tmp_path / "out" / "optimization_results.json").read_text())["n_trials"] == 2


def test_model_any_searches_the_families(tmp_path):
    space = {"training": {"learning_rate": 0.01},
             "models": {"markov": {"order": {"type": "int", "low": 1, "high": 2}},
                        "gru": {"hidden_size": 8, "embedding_dim": 8}}}
    result = cl.run_search(tiny_cfg(tmp_path, model="any", search_space=space, n_trials=3))
    first = result.study.trials[0]
    assert first.params["model"] == "markov" and "markov.order" in first.params   # conditional names
    for t in result.study.trials:
        config = t.user_attrs["config"]
        own = {"markov": {"model", "order"}, "gru": {"model", "learning_rate"}}[config["model"]]
        assert set(config) - {"hidden_size", "embedding_dim"} == own
    assert "model" in result.best_params


def test_history_plot_keeps_the_baseline_in_view_and_counts_pruned_trials_off_it():
    from chromasonic_lib import plots
    study = optuna.create_study(direction="minimize")
    study.set_user_attr("markov_baseline", 1.6)
    for value in (1.49, 1.38, 1.37):
        study.add_trial(optuna.trial.create_trial(value=value, state=TrialState.COMPLETE))
    for high in (3.2, 4.1):
        study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, intermediate_values={0: high}))
    fig = plots.history_figure(study)
    ax = fig.axes[0]
    low, top = ax.get_ylim()
    assert low < 1.37 and 1.6 < top < 3.2
    assert any(t.get_text() == f"2 pruned trials above {top:.2f}, off the plot" for t in ax.texts)
    best = next(line for line in ax.get_lines() if line.get_label() == "best so far")
    assert (best.get_xdata()[-1], best.get_ydata()[-1]) == (4, 1.37)    # held to the last trial
    plots.plt.close(fig)


def test_learning_curves_keep_the_baseline_and_the_floor_they_name_in_view():
    from chromasonic_lib import plots
    study = optuna.create_study(direction="minimize")
    study.set_user_attr("markov_baseline", 2.95)    # above every curve, and the floor far below
    study.set_user_attr("floor", 1.2)
    for i in range(10):
        curve = {e: 2.8 - 0.05 * e - 0.01 * i for e in range(5)}
        study.add_trial(optuna.trial.create_trial(value=min(curve.values()), intermediate_values=curve))
    fig = plots.learning_curves_figure(study)
    low, top = fig.axes[0].get_ylim()
    assert low < 1.2 and 2.95 < top
    plots.plt.close(fig)


def test_history_plot_shows_close_losses_as_they_are_without_an_offset():
    from chromasonic_lib import plots
    study = optuna.create_study(direction="minimize")
    for value in (3.7161, 3.7163):      # two trials: too few for _clip_y, matplotlib would offset
        study.add_trial(optuna.trial.create_trial(value=value, state=TrialState.COMPLETE))
    fig = plots.history_figure(study)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.yaxis.get_offset_text().get_text() == ""
    assert any(t.get_text().startswith("3.716") for t in ax.get_yticklabels())
    assert all(float(t.get_text().replace("\u2212", "-")).is_integer() for t in ax.get_xticklabels())
    plots.plt.close(fig)


def test_importances_from_a_few_complete_trials_come_with_a_caution(capsys):
    from chromasonic_lib import analysis, plots
    study = optuna.create_study(direction="minimize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1), "y": optuna.distributions.FloatDistribution(0, 1)}
    for i in range(3):
        study.add_trial(optuna.trial.create_trial(value=float(i), params={"x": i / 3, "y": 1 - i / 3},
                                                  distributions=dist))
    analysis.show("importances", study)
    assert "importances: from 3 complete trials they are mostly chance" in capsys.readouterr().out
    plots.plt.close("all")
    for i in range(3, analysis.FEW_FOR_IMPORTANCES):
        study.add_trial(optuna.trial.create_trial(value=float(i), params={"x": i / 30, "y": 0.5},
                                                  distributions=dist))
    analysis.show("importances", study)
    assert "mostly chance" not in capsys.readouterr().out
    plots.plt.close("all")


def test_the_slice_plot_draws_four_parameters_a_figure_the_most_important_first():
    from chromasonic_lib import analysis, plots
    plots.plt.close("all")
    study = optuna.create_study(direction="minimize")
    names = [f"p{i}" for i in range(6)]
    dist = {n: optuna.distributions.FloatDistribution(0, 1) for n in names}
    for i in range(4):
        study.add_trial(optuna.trial.create_trial(value=float(i), params={n: (i + k) % 4 / 4 for k, n in
                                                                          enumerate(names)}, distributions=dist))
    analysis.show("slice", study)
    figures = [plots.plt.figure(n) for n in plots.plt.get_fignums()]
    drawn = [[ax.get_xlabel() for ax in fig.axes if ax.get_xlabel() in names] for fig in figures]
    assert [len(d) for d in drawn] == [4, 2] and sorted(sum(drawn, [])) == names
    assert sorted(drawn[0]) == sorted(analysis.top_params(study, 4))    # Optuna orders a figure's by name
    plots.plt.close("all")


def test_the_parallel_coordinate_and_contour_plots_wait_for_enough_trials(capsys):
    from chromasonic_lib import analysis, plots
    plots.plt.close("all")
    study = optuna.create_study(direction="minimize")
    names = [f"p{i}" for i in range(analysis.PARALLEL_AXES + 3)]
    dist = {n: optuna.distributions.FloatDistribution(0, 1) for n in names}
    rng = np.random.default_rng(0)

    def add():
        params = {n: float(rng.random()) for n in dist}
        study.add_trial(optuna.trial.create_trial(value=10 * params["p0"] + params["p1"], params=params,
                                                  distributions=dist))
    add()
    analysis.show("contour", study)                  # one trial: the same word, not "needs two"
    assert "contour: 1 complete trials are too few" in capsys.readouterr().out
    for _ in range(analysis.FEW_FOR_SHAPES - 2):
        add()
    for kind in ("parallel_coordinate", "contour"):    # a few points show no shape: a word instead
        analysis.show(kind, study)
        assert f"{kind}: {analysis.FEW_FOR_SHAPES - 1} complete trials are too few" in capsys.readouterr().out
    assert not plots.plt.get_fignums()
    add()
    analysis.show("contour", study, params=["p0", "p1"])
    assert len(plots.plt.get_fignums()) == 1
    analysis.show("parallel_coordinate", study)      # drawn, its choice of axes called chance
    assert f"from {analysis.FEW_FOR_SHAPES} complete trials that ranking is mostly chance" in \
        capsys.readouterr().out
    assert len(plots.plt.get_fignums()) == 2
    plots.plt.close("all")
    for _ in range(40):
        add()
    analysis.show("parallel_coordinate", study)
    out = capsys.readouterr().out
    assert f"the {analysis.PARALLEL_AXES} most important of {len(dist)} parameters" in out
    assert "mostly chance" not in out
    fig = plots.plt.figure(plots.plt.get_fignums()[0])
    drawn = [t.get_text() for t in fig.axes[0].get_xticklabels()][1:]   # the first axis is the loss
    assert sorted(drawn) == sorted(analysis.top_params(study, analysis.PARALLEL_AXES))
    assert "p0" in drawn                            # the one the loss depends on most
    assert 1.6 * (analysis.PARALLEL_AXES + 1) <= fig.get_size_inches()[0] <= 20
    plots.plt.close("all")
