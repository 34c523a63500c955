"""The cross-validation command: folds, JSON, errors."""
from __future__ import annotations

import json
import subprocess

from conftest import PYTHON, ROOT


def _run(*args):
    return subprocess.run([PYTHON, "-m", "chromasonic_lib.crossval", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_crossval_prints_folds_and_json():
    run = _run("--dataset", "synthetic", "--folds", "3", "--model", "markov", "--json")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert sum(line.startswith("fold ") for line in lines) == 3
    result = json.loads(lines[-1])
    # Every note of the collection is scored, each melody's first one too (100 × 64 notes).
    assert result["folds"] == 3 and result["n_notes"] == 100 * 64 and result["n_melodies"] == 100
    # The walk's entropy is 1.53 nats = 2.20 bits a step; a first note ln 88 = 6.46 bits: 2.27.
    assert 2.0 < result["bits_per_note"] < 2.5
    assert sum(f["n_notes"] for f in result["per_fold"]) == result["n_notes"]


def test_crossval_trains_a_neural_model_per_fold(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("model: gru\nhidden_size: 16\nembedding_dim: 8\nepochs: 1\nmin_epoch_tokens: 0\n"
                      "memory_order: 3\nmemory_alpha: 2.0\n")
    run = _run("--dataset", "synthetic", "--folds", "2", "--params", str(params), "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["model"] == "gru" and result["params"]["hidden_size"] == 16
    assert result["params"]["memory_order"] == 3


def test_crossval_averages_an_ensemble_per_fold(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("model: gru\nhidden_size: 8\nembedding_dim: 4\nepochs: 1\nmin_epoch_tokens: 0\n")
    run = _run("--dataset", "synthetic", "--folds", "2", "--params", str(params), "--ensemble", "2",
               "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["ensemble"] == 2 and result["n_notes"] == 100 * 64
    assert all(f["epochs"] == [1, 1] for f in result["per_fold"])      # one per member


def test_the_default_configuration_remembers_the_melody():
    from chromasonic_lib.config import CrossvalConfig
    from chromasonic_lib.models import MelodyMemory, build_model, split_params
    cfg = CrossvalConfig()
    hparams, _ = split_params(cfg.model, cfg.settings)
    assert isinstance(build_model(cfg.model, hparams), MelodyMemory)


def test_crossval_bad_input_is_one_clear_line():
    run = _run("--dataset", "synthetic", "--folds", "1")
    assert run.returncode == 2
    assert run.stderr.strip() == "error: folds must be an integer ≥ 2, got 1"
    run = _run("--dataset", "synthetic", "--ensemble", "0")
    assert run.returncode == 2
    assert run.stderr.strip() == "error: ensemble must be a positive integer, got 0"
