"""train_best follows its study: the data, split, seed and epochs the search measured its trials on."""
from __future__ import annotations

import json
import logging
import sys
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

import chromasonic_lib as cl
from chromasonic_lib import best, generate, widgets
from chromasonic_lib.data.encodings import REST, Notes
from chromasonic_lib.paths import resolve
from test_search import tiny_cfg

# The study's settings: none of them train_best's own defaults.
STUDY = dict(dataset="synthetic", n_sequences=30, sequence_length=20, seed=7, val_fraction=0.1,
             test_fraction=0.2, epochs=3)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    cfg = tiny_cfg(tmp, **STUDY)
    cl.run_search(cfg)
    return cfg


def _train_best_cfg(study, tmp_path, **kw) -> cl.TrainBestConfig:
    return cl.TrainBestConfig(study_name=study.study_name, storage=study.storage,
                              output_dir=str(tmp_path / "best"), device="cpu", **kw)


def _tokens(melodies) -> list[list[int]]:
    return [m.tolist() for m in melodies]


def test_train_best_trains_and_tests_on_the_study_s_data_split_and_epochs(study, tmp_path, caplog):
    cfg = _train_best_cfg(study, tmp_path)
    with caplog.at_level(logging.WARNING, logger="chromasonic_lib"):
        chosen = best.best_configuration(cfg)
    assert not caplog.records                          # nothing given, so nothing differs
    s = optuna.load_study(study_name=study.study_name, storage=study.storage)
    assert chosen.study_name == "t" and chosen.trial == s.best_trial.number
    assert chosen.data == cl.DataConfig(**{k: v for k, v in STUDY.items() if k != "epochs"})
    assert chosen.epochs == 3

    run = best.train_best(cfg, chosen)
    expected = cl.prepare(cl.load_dataset("synthetic", "pitch", 30, 20, 7), 0.1, 0.2, 7)
    assert _tokens(run.data.splits.test) == _tokens(expected.splits.test)
    assert _tokens(run.data.splits.train) == _tokens(expected.splits.train)
    assert run.history.epochs_trained == 3             # the search's 3, not 30
    metrics = json.loads((tmp_path / "best" / "test_metrics.json").read_text())
    assert {k: metrics[k] for k in ("study_name", "trial", "dataset", "encoding", "seed", "val_fraction",
                                    "test_fraction", "n_sequences", "sequence_length", "n_test_melodies",
                                    "epochs", "epochs_trained")} == dict(
        study_name="t", trial=s.best_trial.number, dataset="synthetic", encoding="pitch", seed=7,
        val_fraction=0.1, test_fraction=0.2, n_sequences=30, sequence_length=20, n_test_melodies=6,
        epochs=3, epochs_trained=3)
    assert np.isfinite(metrics["test"]["nats_per_note"])


def test_a_value_given_that_differs_from_the_study_s_says_what_it_changes(study, tmp_path, caplog):
    cfg = _train_best_cfg(study, tmp_path, seed=11, epochs=5, encoding="grid", val_fraction=0.1)
    with caplog.at_level(logging.WARNING, logger="chromasonic_lib"):
        chosen = best.best_configuration(cfg)
    text = caplog.text
    assert "seed 11 differs from the study's 7: the test split may overlap the search's training " \
           "melodies" in text
    assert "epochs 5 differs from the study's 3: it trains longer than the search's trials did" in text
    assert "encoding 'grid' differs from the study's 'pitch': the test scores won't compare" in text
    assert "val_fraction" not in text                  # given, but the study's own value
    assert (chosen.data.seed, chosen.data.encoding, chosen.epochs) == (11, "grid", 5)
    assert (chosen.data.n_sequences, chosen.data.test_fraction) == (30, 0.2)   # the rest: the study's


def test_a_best_params_file_uses_the_values_given_or_the_defaults(study, tmp_path, caplog):
    params = tmp_path / "best_hyperparameters.json"
    params.write_text((study.output_path / "best_hyperparameters.json").read_text())
    with caplog.at_level(logging.WARNING, logger="chromasonic_lib"):
        defaults = best.best_configuration(cl.TrainBestConfig(best_params=str(params)))
    assert defaults.data == cl.DataConfig() and defaults.epochs == cl.TrainBestConfig.FILE_EPOCHS == 30
    assert defaults.study_name is None and defaults.trial is None
    assert not caplog.records

    cfg = cl.TrainBestConfig(best_params=str(params), output_dir=str(tmp_path / "best"), device="cpu",
                             dataset="synthetic", n_sequences=30, sequence_length=20, seed=3, epochs=2)
    run = best.train_best(cfg, best.best_configuration(cfg))
    expected = cl.prepare(cl.load_dataset("synthetic", "pitch", 30, 20, 3), 0.1, 0.1, 3)
    assert _tokens(run.data.splits.test) == _tokens(expected.splits.test)
    metrics = json.loads((tmp_path / "best" / "test_metrics.json").read_text())
    assert (metrics["study_name"], metrics["trial"], metrics["seed"], metrics["test_fraction"],
            metrics["n_test_melodies"], metrics["epochs"]) == (None, None, 3, 0.1, 3, 2)


def test_without_fluidsynth_the_metrics_and_samples_say_the_additive_synthesizer_made_the_audio(
        tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fluidsynth", None)       # `import fluidsynth` now fails
    params = tmp_path / "best_hyperparameters.json"
    params.write_text(json.dumps({"model": "gru", "embedding_dim": 8, "hidden_size": 16}))
    cfg = cl.TrainBestConfig(best_params=str(params), output_dir=str(tmp_path / "best"), device="cpu",
                             dataset="synthetic", n_sequences=30, sequence_length=20, epochs=1)
    run = best.train_best(cfg, best.best_configuration(cfg))
    additive = "additive synthesizer (FluidSynth not installed)"
    assert json.loads((tmp_path / "best" / "test_metrics.json").read_text())["audio"] == additive
    [sample] = best.generate_samples(run, cfg, n=1, length=8)
    assert sample.audio == additive and sample.describe().endswith(f"sample_1.wav rendered by {additive}")
    assert sample.wav.read_bytes() == generate.wav_bytes(generate.synthesize(sample.notes))


def test_an_ensemble_is_trained_tested_saved_and_sampled(tmp_path):
    from chromasonic_lib.models import Ensemble
    from chromasonic_lib.training import evaluate
    params = tmp_path / "best_hyperparameters.json"
    params.write_text(json.dumps({"model": "gru", "hidden_size": 8, "embedding_dim": 4, "learning_rate": 0.01}))
    cfg = cl.TrainBestConfig(best_params=str(params), output_dir=str(tmp_path / "best"), device="cpu",
                             dataset="synthetic", n_sequences=30, sequence_length=20, epochs=1, ensemble=2)
    run = best.train_best(cfg, best.best_configuration(cfg))
    assert isinstance(run.model, Ensemble) and len(run.histories) == 2
    assert run.test.n_notes == sum(len(m) for m in run.data.splits.test)     # every note
    metrics = json.loads((tmp_path / "best" / "test_metrics.json").read_text())
    assert metrics["ensemble"] == 2 and metrics["epochs_trained"] == [1, 1]
    # Every test note's IC beside the metrics, averaging to the test figure.
    notes = pd.read_csv(tmp_path / "best" / "test_notes.csv")
    assert len(notes) == run.test.n_notes and notes["melody.id"].nunique() == len(run.data.splits.test)
    assert notes["information.content"].mean() == pytest.approx(run.test.bits_per_note, rel=1e-5)
    loaded, meta = cl.load_checkpoint(tmp_path / "best" / "model.pt")
    assert meta["ensemble"] == 2
    assert evaluate(loaded, run.data.test).nats_per_note == pytest.approx(run.test.nats_per_note, rel=1e-5)
    [sample] = best.generate_samples(run, cfg, n=1, length=8)
    assert len(sample.tokens) == 8
    generated = best.sample_notes(run, [sample])     # the IC of what it wrote, under itself
    assert generated["note.id"].tolist() == list(range(1, 9)) and (generated["probability"] > 0).all()


def test_a_crossval_params_file_brings_its_pretraining_other_melodies_and_averages(tmp_path, monkeypatch):
    from test_crossval import _two_collections
    from chromasonic_lib.pretraining import pretrained
    tested, other = _two_collections(tmp_path)
    monkeypatch.setenv("CHROMASONIC_CACHE", str(tmp_path / "cache"))
    params = tmp_path / "crossval.yaml"
    params.write_text("model: gru\nhidden_size: 8\nembedding_dim: 4\nepochs: 2\nmin_epoch_tokens: 0\n"
                      f"test_transpose: 1\npretrain: {other}\npretrain_epochs: 2\nalso_train_on: {other}\n")
    cfg = cl.TrainBestConfig(best_params=str(params), dataset=tested, val_fraction=0.25, test_fraction=0.25,
                             output_dir=str(tmp_path / "best"), device="cpu")
    chosen = best.best_configuration(cfg)
    assert chosen.epochs == 2 and chosen.params == {"model": "gru", "hidden_size": 8, "embedding_dim": 4,
                                                    "min_epoch_tokens": 0}
    assert chosen.extras == {"test_transpose": 1, "pretrain": other, "pretrain_epochs": 2, "also_train_on": other,
                             "ensemble": 1, "val_fraction": None}
    assert f"first trained on {other} for at most 2 epochs; also trains on {other}" in chosen.describe()
    seen = {}

    def spy(make_model, train_data, val_data, train_cfg, n=1):
        seen.update(lengths=sorted(train_data.host_lengths.tolist()), start=make_model(0).state_dict())
        return real(make_model, train_data, val_data, train_cfg, n)
    real = best.train_ensemble
    monkeypatch.setattr(best, "train_ensemble", spy)
    run = best.train_best(cfg, chosen)
    # The training split's two melodies and the three other tunes (the fourth is a copy of a
    # tested one, so left out), starting from the weights pretrained on those three.
    own = sorted(len(m) for m in run.data.splits.train)
    assert len(seen["lengths"]) == len(own) + 3 and sum(seen["lengths"]) == sum(own) + 3 * 20
    metrics = json.loads((tmp_path / "best" / "test_metrics.json").read_text())
    assert metrics["also_train_on"] == {"dataset": other, "melodies": 3, "left_out": 1}
    assert (metrics["pretrain"]["melodies"], metrics["pretrain"]["left_out"], metrics["pretrain"]["epochs"]) \
        == (3, 1, 2)
    assert metrics["test_transpose"] == 1 and metrics["epochs"] == 2
    state, report = pretrained(other, 2, "gru", ({"hidden_size": 8, "embedding_dim": 4}, {"min_epoch_tokens": 0}),
                               run.data.data, cl.pick_device("cpu"), chosen.data.seed)
    assert report["cached"] and all(torch.equal(state[k], seen["start"][k]) for k in state)
    # A value given wins over the file's.
    assert best.best_configuration(cl.TrainBestConfig(best_params=str(params), dataset=tested,
                                                      test_transpose=0)).extras["test_transpose"] == 0


def test_the_shipped_crossval_files_train_as_they_cross_validate_and_bad_ones_are_named(tmp_path):
    more = best.best_configuration(cl.TrainBestConfig(best_params="params/crossval_context_more_data.yaml",
                                                      dataset="chorales-185"))
    assert more.extras == {"test_transpose": 3, "pretrain": "essen", "pretrain_epochs": 5,
                           "also_train_on": "chorales", "ensemble": 1, "val_fraction": None}
    assert more.epochs == 30 and more.params["context"] == ["duration", "metre", "phrase", "key"]
    with pytest.raises(cl.ConfigError, match="also_train_on must be another collection than the one trained"):
        best.best_configuration(cl.TrainBestConfig(best_params="params/crossval_more_data.yaml"))  # chorales
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: gru\nval_fraction: 0.7\n")      # crossval's share of each fold held out
    with pytest.raises(cl.ConfigError, match=r"best_params: val_fraction must be .*0\.5.*got 0\.7"):
        best.best_configuration(cl.TrainBestConfig(best_params=str(bad)))
    bad.write_text("model: markov\npretrain: essen\n")
    with pytest.raises(cl.ConfigError, match="pretrain needs a neural model"):
        best.best_configuration(cl.TrainBestConfig(best_params=str(bad)))
    bad.write_text("hidden_size: 8\n")
    with pytest.raises(cl.ConfigError, match="must name a model .* under 'model'"):
        best.best_configuration(cl.TrainBestConfig(best_params=str(bad)))
    with pytest.raises(cl.ConfigError, match=r"pretrain must be synthetic, one of chorales, .* got .no-such-collection. \(not found\)"):
        cl.TrainBestConfig(best_params=str(bad), pretrain="no-such-collection")
    # A search's params file: its settings are named before anything trains.
    with pytest.raises(cl.ConfigError, match="params/quick.yaml has settings train_best does not take: "
                                             "dataset, n_trials, study_name"):
        best.best_configuration(cl.TrainBestConfig(best_params="params/quick.yaml"))


def test_a_crossval_file_s_settings_give_way_to_parameters_and_its_model_goes_beside_its_name(tmp_path):
    def chosen(**kw):
        cfg = cl.TrainBestConfig(best_params="params/crossval_context_more_data.yaml", dataset="chorales-185", **kw)
        return cfg, best.best_configuration(cfg)
    cfg, default = chosen()
    assert cfg.output_path == resolve("runs/crossval_context_more_data/best")   # not the study's
    # A search's result file: its study's folder, not runs/best_hyperparameters/best for every study.
    result = tmp_path / "runs/chorales-lstm/best_hyperparameters.json"
    result.parent.mkdir(parents=True)
    result.write_text('{"model": "markov", "order": 2}')
    assert cl.TrainBestConfig(best_params=str(result)).output_path == resolve("runs/chorales-lstm/best")
    _, given = chosen(epochs=3, test_transpose=0, also_train_on="none", pretrain_epochs=2)
    assert given.epochs == 3 and given.extras == {"test_transpose": 0, "pretrain": "essen", "pretrain_epochs": 2,
                                                  "also_train_on": "", "ensemble": 1, "val_fraction": None}
    _, none = chosen(pretrain="none")
    assert none.extras["pretrain"] == "" and none.extras["also_train_on"] == "chorales"


def test_a_json_best_params_file_keeps_its_small_learning_rate_a_number(tmp_path):
    params = tmp_path / "best_hyperparameters.json"
    params.write_text(json.dumps({"model": "gru", "learning_rate": 1e-05, "hidden_size": 8}))
    assert '"learning_rate": 1e-05' in params.read_text()      # YAML 1.1 would read it as a string
    chosen = best.best_configuration(cl.TrainBestConfig(best_params=str(params)))
    assert chosen.params["learning_rate"] == 1e-05 and isinstance(chosen.params["learning_rate"], float)


def test_the_generator_panel_shows_its_piano_roll_from_0_on_a_figure_pyplot_does_not_hold(tmp_path, monkeypatch):
    """In JupyterLab the inline backend shows and closes every figure pyplot holds after each widget
    message, from the thread of a kernel subshell: the panel's own figure must not be one of them,
    or it is drawn twice at once (bars shifted left of 0) or closed before the panel shows it."""
    notes = Notes(np.array([60, 62, REST, 64], dtype=np.int16), np.full(4, 0.5, dtype=np.float32))
    sample = best.Sample([], notes, tmp_path / "s.mid", generate.write_wav(tmp_path / "s.wav", notes),
                         "sample_1", "test")
    monkeypatch.setattr(best, "generate_samples", lambda *args, **kw: [sample])
    shown = []          # (what the panel displayed, the figures pyplot held then)
    monkeypatch.setattr(widgets, "display", lambda obj, **kw: shown.append((obj, plt.get_fignums())))
    run = SimpleNamespace(configuration=SimpleNamespace(data=SimpleNamespace(seed=0)))
    panel = widgets.generator_panel(run, cl.TrainBestConfig(primer="C4 D4 E4"))
    plt.close("all")
    panel.children[1].children[1].click()                  # Generate
    figures = [(obj, held) for obj, held in shown if isinstance(obj, Figure)]
    assert len(figures) == 1, f"the panel displayed {[type(obj).__name__ for obj, _ in shown]}"
    fig, held = figures[0]
    assert held == [] and plt.get_fignums() == []
    ax = fig.axes[0]
    assert ax.get_xlim()[0] == 0 and min(bar.get_x() for bar in ax.patches) == 0
