"""Multi-objective studies: the loss and the model's size or speed, a Pareto front, a pick."""
from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.trial import TrialState

import chromasonic_lib as cl
from chromasonic_lib import analysis
from chromasonic_lib.errors import ConfigError
from chromasonic_lib.config.checks import check_objectives
from chromasonic_lib.search.objectives import pick_trial
from conftest import outputs_of, run_notebook
from test_search import tiny_cfg

# Sizes far apart, so the front holds small and large models.
SIZES = {
    "training": {"learning_rate": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True}},
    "models": {"lstm": {"hidden_size": {"type": "int", "low": 4, "high": 64, "log": True},
                        "embedding_dim": 8, "num_layers": 1, "dropout": 0.0}},
}


def test_objectives_are_checked_and_name_the_parameter(tmp_path):
    assert check_objectives("objectives", "bits_per_note, n_params") == ["bits_per_note", "n_params"]
    for bad in (["n_params"], ["bits_per_note", "bits_per_note"], ["bits_per_note", "size"], []):
        with pytest.raises(ConfigError, match="objectives"):
            check_objectives("objectives", bad)
    with pytest.raises(ConfigError, match="cmaes"):
        tiny_cfg(tmp_path, objectives=["bits_per_note", "n_params"], sampler="cmaes")
    with pytest.raises(ConfigError, match="pick"):
        cl.TrainBestConfig(pick="smallest")


@pytest.fixture(scope="module")
def front_study(tmp_path_factory):
    """A small study of two objectives (bits/note, parameters), run once for the tests below."""
    tmp = tmp_path_factory.mktemp("mo")
    cfg = tiny_cfg(tmp, study_name="mo", search_space=SIZES, n_trials=6, epochs=2,
                   objectives=["bits_per_note", "n_params"], pruner="median")
    assert cfg.pruner == "none"             # a multi-objective study trains every trial to the end
    result = cl.run_search(cfg)
    return tmp, cfg, result


def test_a_multi_objective_study_writes_its_front_and_each_trial_s_three_figures(front_study):
    tmp, cfg, result = front_study
    study = result.study
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["nats/note", "parameters"]
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 6 and all(t.values[1] == t.user_attrs["n_params"] for t in done)
    assert all(t.user_attrs["ms_per_note"] > 0 and len(t.user_attrs["val_curve"]) >= 1 for t in done)
    front = json.loads((cfg.output_path / "pareto_front.json").read_text())
    assert {r["number"] for r in front} == {t.number for t in study.best_trials}
    for r in front:     # on the front: no other trial is as good in both and better in one
        assert not any(t.values[0] <= r["values"][0] and t.values[1] <= r["values"][1]
                       and t.values != r["values"] for t in done)
        assert r["bits_per_note"] == pytest.approx(r["values"][0] / math.log(2))
    best = min(done, key=lambda t: t.values[0])
    assert result.best_value == best.values[0]          # the original API's best: the lowest loss
    assert json.loads((cfg.output_path / "best_hyperparameters.json").read_text())["hidden_size"] == \
        best.params["hidden_size"]
    assert "PARETO FRONT" in (cfg.output_path / "optimization_report.txt").read_text()
    table = analysis.pareto(study)
    assert list(table["trial"]) == [r["number"] for r in front]
    assert {"bits/note", "parameters", "ms/note"} <= set(table.columns)


def test_each_pick_names_its_trial(front_study):
    tmp, cfg, result = front_study
    study = result.study
    done = study.get_trials(states=(TrialState.COMPLETE,))
    best = min(done, key=lambda t: t.values[0])
    assert pick_trial(study, "best").number == best.number
    within = [t for t in done if t.values[0] <= best.values[0] + 0.5 * math.log(2)]
    smallest = min(within, key=lambda t: t.user_attrs["n_params"])
    assert pick_trial(study, "smallest_within:0.5").user_attrs["n_params"] == smallest.user_attrs["n_params"]
    assert pick_trial(study, str(done[0].number)).number == done[0].number
    with pytest.raises(ConfigError, match="no complete trial 99"):
        pick_trial(study, "99")


@pytest.mark.slow
def test_train_best_trains_the_trial_its_pick_names_and_analysis_draws_the_front(front_study, tmp_path):
    tmp, cfg, result = front_study
    study = result.study
    smallest = pick_trial(study, "smallest_within:10")      # the smallest model of the study
    out = tmp_path / "best"
    run_notebook("train_best", tmp_path / "tb.ipynb", study_name="mo", storage=cfg.storage,
                 pick="smallest_within:10", output_dir=str(out), n_samples=1, sample_length=16)
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["trial"] == smallest.number and metrics["n_params"] == smallest.user_attrs["n_params"]
    assert json.loads((out / "best_hyperparameters.json").read_text())["hidden_size"] == \
        smallest.params["hidden_size"]
    nb = run_notebook("analysis", tmp_path / "an.ipynb", study_name="mo", storage=cfg.storage)
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "analysis.pareto(study)" in "".join(c["source"]))
    assert any("image/png" in o.get("data", {}) for o in cell["outputs"])       # the front's plot
    table = "".join(o.get("data", {}).get("text/plain", "") for o in cell["outputs"])
    assert "ms/note" in table and all(str(t.number) in table for t in study.best_trials)
    assert sum("image/png" in o.get("data", {}) for o in outputs_of(nb)) >= 5
