"""Cross-validated search trials: crossval's fold loop inside the objective, pruning between
folds, the files a cross-validated study leaves, and the spaces that search crossval's settings."""
from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

import chromasonic_lib as cl
from chromasonic_lib import analysis, plots
from chromasonic_lib import best as best_mod
from chromasonic_lib.crossval import main as crossval_main
from chromasonic_lib.data import kfold, load_dataset
from chromasonic_lib.errors import ConfigError
from conftest import outputs_of, run_notebook

# Synthetic melodies crossval loads the same way (its defaults: 100 melodies of 64 notes, seed 42).
FIXED = {"training": {"learning_rate": 0.01, "batch_size": 16, "transpose": 0},
         "models": {"gru": {"hidden_size": 12, "embedding_dim": 6}}}
SEARCHED = {"training": {"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                         "test_transpose": {"choices": [0, 1]}},
            "models": {"gru": {"hidden_size": {"type": "int", "low": 8, "high": 16}, "embedding_dim": 6}}}


def cv_cfg(tmp_path, **kw):
    base = dict(study_name="cv", storage=f"sqlite:///{tmp_path}/s.db", output_dir=str(tmp_path / "out"),
                dataset="synthetic", model="gru", search_space=FIXED, n_trials=1, epochs=1, folds=3,
                fold_jobs=1, device="cpu", plot=False, live=False, pruner="none")
    base.update(kw)
    return cl.SearchConfig(**base)


@pytest.mark.slow
def test_a_cross_validated_trial_is_the_notes_weighted_mean_of_the_same_folds_every_trial_sees(tmp_path):
    res = cl.run_search(cv_cfg(tmp_path, search_space=SEARCHED, n_trials=5, sampler="random"))
    trials = res.study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 5
    # The folds of every melody but the test ones (train_best's), which no trial touches.
    data = cl.prepare(load_dataset("synthetic"), 0.1, 0.1, 42)
    test = set(data.splits.index["test"])
    kept = [m for i, m in enumerate(data.data.melodies) if i not in test]
    notes = [sum(len(kept[i]) for i in fold) for _, fold in kfold(kept, 3, 42)]
    assert len(test) == 10 and sum(notes) == sum(len(m) for m in kept)
    for t in trials:
        folds = t.user_attrs["folds"]
        assert [f["notes"] for f in folds] == notes        # crossval's folds, for every trial
        mean = sum(f["notes"] * f["nats_per_note"] for f in folds) / sum(notes)
        assert t.value == pytest.approx(mean)
        assert t.user_attrs["bits_per_note"] == pytest.approx(mean / 0.6931471805599453)
        assert t.intermediate_values[2] == pytest.approx(t.value)   # the running mean, fold by fold
        # The per-fold mean (Pearce 2005) and the mean over melodies (IDyOM's software) beside it.
        assert t.user_attrs["fold_mean_bits_per_note"] == pytest.approx(
            sum(f["nats_per_note"] for f in folds) / 3 / 0.6931471805599453)
        assert 0 < t.user_attrs["melody_mean_bits_per_note"] < 7
    report = (tmp_path / "out" / "optimization_report.txt").read_text()
    assert "3 folds of every melody but the 0.1 held out for train_best's test" in report
    # The analysis compares the top trials with the best, fold by fold.
    diffs = analysis.fold_differences(res.study, 5)
    assert list(diffs["trial"]) == [t.number for t in sorted(trials, key=lambda t: t.value)]
    assert diffs.iloc[0]["difference"] == 0 and (diffs["difference"] >= 0).all()
    # The difference is that of the values the trials are ranked by (pooled over every note).
    assert list(diffs["difference"]) == pytest.approx(list(diffs["bits/note"] - diffs["bits/note"].iloc[0]))
    assert (diffs["ci95_low"] <= diffs["difference"]).all() and (diffs["difference"] <= diffs["ci95_high"]).all()
    assert plots.fold_differences_figure(diffs).axes[0].get_title().startswith("How much of the lead is luck? Each against the best")
    # ... and the analysis notebook draws it, with every other figure, for a cross-validated study.
    nb = run_notebook("analysis", tmp_path / "analysis.ipynb", study_name="cv", storage=f"sqlite:///{tmp_path}/s.db")
    assert not [o for o in outputs_of(nb) if o.get("output_type") == "error"]
    assert "Only for a cross-validated study" not in "".join(o.get("text", "") for o in outputs_of(nb))


def test_crossval_and_a_one_trial_search_give_the_same_figure_and_its_file_runs_in_both(tmp_path, capsys):
    # With no test melodies held out, the search's folds are crossval's (over every melody).
    res = cl.run_search(cv_cfg(tmp_path, test_fraction=0))
    trial = res.study.best_trial
    best = tmp_path / "out" / "best_hyperparameters.json"
    params = json.loads(best.read_text())
    assert params == {"model": "gru", "hidden_size": 12, "embedding_dim": 6, "learning_rate": 0.01,
                      "batch_size": 16, "transpose": 0, "epochs": 1, "val_fraction": 0.1,
                      "test_transpose": 0, "ensemble": 1}
    capsys.readouterr()
    assert crossval_main(["--dataset", "synthetic", "--folds", "3", "--params", str(best), "--jobs", "1",
                          "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bits_per_note"] == pytest.approx(trial.user_attrs["bits_per_note"], abs=1e-6)
    assert [f["n_notes"] for f in result["per_fold"]] == [f["notes"] for f in trial.user_attrs["folds"]]
    # ... and train_best takes it as it is: the same model, training and scoring.
    cfg = cl.TrainBestConfig(best_params=str(best), dataset="synthetic", output_dir=str(tmp_path / "best"),
                             device="cpu", n_samples=0)
    chosen = best_mod.best_configuration(cfg)
    assert chosen.epochs == 1 and chosen.extras["ensemble"] == 1 and chosen.extras["test_transpose"] == 0
    run = best_mod.train_best(cfg, chosen)
    assert run.family == "gru" and run.hparams["hidden_size"] == 12


def test_train_best_of_a_cross_validated_study_trains_as_its_best_trial_did(tmp_path):
    space = {**FIXED, "training": {**FIXED["training"], "test_transpose": 1, "val_fraction": 0.0}}
    cl.run_search(cv_cfg(tmp_path, search_space=space, epochs=2))
    cfg = cl.TrainBestConfig(study_name="cv", storage=f"sqlite:///{tmp_path}/s.db",
                             output_dir=str(tmp_path / "best"), device="cpu", n_samples=0)
    chosen = best_mod.best_configuration(cfg)
    assert chosen.epochs == 2 and chosen.extras["test_transpose"] == 1 and chosen.extras["val_fraction"] == 0
    run = best_mod.train_best(cfg, chosen)
    assert run.history.epochs_trained == 2          # none held out: exactly the epochs


def test_a_clearly_worse_configuration_is_pruned_between_folds(tmp_path):
    space = {**FIXED, "training": {**FIXED["training"], "learning_rate": {"choices": [0.01, 1e-6]}}}
    cfg = cv_cfg(tmp_path, search_space=space, pruner="median", folds=4)
    cl.run_search(cfg)                              # the defaults first: learning rate 0.01
    study = optuna.load_study(study_name="cv", storage=cfg.storage)
    study.enqueue_trial({"learning_rate": 1e-6})
    res = cl.run_search(cfg)
    worse = res.study.trials[-1]
    assert worse.state == TrialState.PRUNED and worse.params["learning_rate"] == 1e-6
    assert len(worse.user_attrs["folds"]) < 4       # stopped between folds, before the last
    assert len(worse.intermediate_values) == len(worse.user_attrs["folds"])
    on = worse.user_attrs["pruned_on"]
    assert on["step"] == max(worse.intermediate_values) and on["best"] > on["median"] and on["trials"] >= 1


def test_the_resume_guard_covers_folds(tmp_path):
    cl.run_search(cv_cfg(tmp_path, search_space={**FIXED, "models": {"markov": {"order": 1}}}, model="markov"))
    with pytest.raises(ConfigError, match=r"folds is 4 now but 3 in the study"):
        cl.run_search(cv_cfg(tmp_path, search_space={**FIXED, "models": {"markov": {"order": 1}}},
                             model="markov", folds=4))


def test_a_space_takes_crossvals_settings_and_refuses_bad_combinations_by_name(tmp_path):
    space = {"training": {"weight_average": {"choices": [0.0, 0.995]}, "test_transpose": {"type": "int", "low": 0, "high": 3},
                          "val_fraction": {"choices": [0.0, 0.1]}, "epochs": {"type": "int", "low": 5, "high": 20},
                          "ensemble": 1},
             "models": {"lstm": {"context": {"choices": ["none", "duration+metre+phrase+key"]},
                                 "memory_order": {"choices": [0, 6]},
                                 "memory_rhythm": {"type": "float", "low": 0.25, "high": 1.0}}}}
    cfg = cv_cfg(tmp_path, model="lstm", search_space=space)
    assert set(cfg.space.training) == {"weight_average", "test_transpose", "val_fraction", "epochs", "ensemble"}
    # memory_rhythm is drawn only where the trial's model can take it.
    study = optuna.create_study()
    for context, order in (("none", 6), ("duration+metre+phrase+key", 0), ("duration+metre+phrase+key", 6)):
        study.enqueue_trial({"context": context, "memory_order": order})
        _, hparams, training = cfg.space.suggest(study.ask())
        assert ("memory_rhythm" in hparams) == (context != "none" and order == 6)
    bad = [
        ({**space, "models": {"lstm": {"memory_rhythm": 0.5}}}, {}, r"models.lstm.memory_rhythm needs the melody memory"),
        ({"training": {"test_transpose": {"type": "int", "low": 0, "high": 13}}}, {}, r"test_transpose"),
        ({"training": {"weight_average": {"choices": [0.5, 1.5]}}}, {}, r"training.weight_average: weight_average"),
        ({"training": {"val_fraction": {"choices": [0.0, 0.1]}}}, {"folds": 0},
         r"training.val_fraction is searchable only in a cross-validated search"),
        ({"training": {"ensemble": 2}}, {"folds": 0}, r"training.ensemble is searchable only"),
    ]
    for bad_space, kw, message in bad:
        with pytest.raises(ConfigError, match=message):
            cv_cfg(tmp_path, model="lstm", search_space=bad_space, **kw)
    with pytest.raises(ConfigError, match=r"pretrain 'chorales' needs a cross-validated search"):
        cv_cfg(tmp_path, folds=0, pretrain="chorales")


def test_the_paired_pruner_stops_a_worse_cross_validated_trial_on_its_melodies(tmp_path):
    """pruner wilcoxon: each cross-validated trial reports every melody's nats/note (its step the
    melody's fixed id); a clearly worse configuration is stopped after its first fold, saying on
    how many paired melodies and at what p-value; the value stays the pooled nats/note."""
    space = {"training": {"learning_rate": 0.01, "batch_size": 16, "transpose": 0},
             "models": {"gru": {"hidden_size": {"type": "int", "low": 1, "high": 12}, "embedding_dim": 6}}}
    res = cl.run_search(cv_cfg(tmp_path, search_space=space, pruner="wilcoxon", n_trials=4, sampler="random",
                               epochs=2, n_sequences=60))
    trials = res.study.trials
    first = trials[0]
    assert first.state == TrialState.COMPLETE and first.params["hidden_size"] == 12
    kept = set(range(60)) - set(cl.prepare(load_dataset("synthetic", n_sequences=60), 0.1, 0.1, 42).splits.index["test"])
    assert set(first.intermediate_values) == kept                  # every melody but the test ones, once
    assert first.value == pytest.approx(sum(f["notes"] * f["nats_per_note"] for f in first.user_attrs["folds"])
                                        / sum(f["notes"] for f in first.user_attrs["folds"]))
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.params["hidden_size"] < 12 for t in pruned)
    evidence = pruned[0].user_attrs["pruned_on"]
    assert evidence["melodies"] == len(pruned[0].intermediate_values) < len(kept) and evidence["p_value"] < 0.1
    assert len(pruned[0].user_attrs["folds"]) == 1                  # stopped after its first fold
    with pytest.raises(ConfigError, match="pruner wilcoxon .* needs cross-validated trials"):
        cv_cfg(tmp_path, pruner="wilcoxon", folds=0)


def test_the_default_pruner_is_wilcoxon_with_folds_and_median_without(tmp_path):
    """pruner auto, the default: the pruner measured better for each kind of study
    (benchmarks/cv_pruners.py for cross-validated ones)."""
    assert cl.SearchConfig().pruner == "median"
    assert cv_cfg(tmp_path, pruner="auto").pruner == "wilcoxon"
    assert cv_cfg(tmp_path, pruner="auto", folds=0).pruner == "median"
