"""The cross-validation command: folds, JSON, errors."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PYTHON, ROOT


def _run(*args, env=None, jobs="1"):
    """crossval, its folds one after another unless ``jobs`` says otherwise (tiny folds train
    faster than worker processes start)."""
    return subprocess.run([PYTHON, "-m", "chromasonic_lib.crossval", "--jobs", jobs, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)


def _run_params(tmp_path, text, *args, env=None, jobs="1"):
    """crossval with a params file holding ``text``: the finished process and its JSON result."""
    params = tmp_path / "p.yaml"
    params.write_text(text)
    run = _run("--params", str(params), "--json", *args, env=env, jobs=jobs)
    assert run.returncode == 0, run.stderr
    return run, json.loads(run.stdout.strip().splitlines()[-1])


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
    folds = [f["bits_per_note"] for f in result["per_fold"]]
    assert result["fold_sem"] == pytest.approx(np.std(folds, ddof=1) / np.sqrt(3))
    assert f"(SEM {result['fold_sem']:.3f}, ±{result['fold_std']:.3f} across 3 folds" in run.stdout
    assert "folds: 100 melodies in 100 groups: no copies kept together" in run.stdout


def test_crossval_trains_a_neural_model_per_fold(tmp_path):
    _, result = _run_params(tmp_path, "model: gru\nhidden_size: 16\nembedding_dim: 8\nepochs: 1\n"
                            "min_epoch_tokens: 0\nmemory_order: 3\nmemory_alpha: 2.0\n",
                            "--dataset", "synthetic", "--folds", "2")
    assert result["model"] == "gru" and result["params"]["hidden_size"] == 16
    assert result["params"]["memory_order"] == 3


def test_crossval_averages_an_ensemble_per_fold(tmp_path):
    _, result = _run_params(tmp_path, "model: gru\nhidden_size: 8\nembedding_dim: 4\nepochs: 1\n"
                            "min_epoch_tokens: 0\n", "--dataset", "synthetic", "--folds", "2", "--ensemble", "2")
    assert result["ensemble"] == 2 and result["n_notes"] == 100 * 64
    assert all(f["epochs"] == [1, 1] for f in result["per_fold"])      # one per member


def test_folds_trained_at_once_score_as_they_do_one_after_another(tmp_path):
    text = "model: gru\nhidden_size: 8\nembedding_dim: 4\nepochs: 2\nmin_epoch_tokens: 0\n"
    args = ("--dataset", "synthetic", "--folds", "3")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}     # one thread a fold either way
    _, alone = _run_params(tmp_path, text, *args, env=env, jobs="1")
    run, together = _run_params(tmp_path, text, *args, env=env, jobs="2")
    assert alone["jobs"] == 1 and together["jobs"] == 2
    assert [f["fold"] for f in together["per_fold"]] == [0, 1, 2]
    assert together["per_fold"] == alone["per_fold"] and together["bits_per_note"] == alone["bits_per_note"]
    assert sorted(line[:9] for line in run.stdout.splitlines() if line.startswith("fold ")) == \
        ["fold  1/3", "fold  2/3", "fold  3/3"]
    # A fold that fails in its worker ends the run with its error: no other fold goes on.
    huge = tmp_path / "huge.yaml"
    huge.write_text(text.replace("embedding_dim: 4", "embedding_dim: 1000000000000"))
    failed = _run(*args, "--params", str(huge), jobs="2")
    assert failed.returncode != 0 and "fold " not in failed.stdout
    assert "Traceback" in failed.stderr and "alloc" in failed.stderr.lower()
    bad = _run(*args, "--params", str(tmp_path / "p.yaml"), jobs="-1")
    assert bad.returncode == 2 and "jobs must be a non-negative integer, got -1" in bad.stderr


def test_crossval_can_train_on_every_training_melody_for_fixed_epochs(tmp_path):
    run, result = _run_params(tmp_path, "model: gru\nhidden_size: 8\nembedding_dim: 4\nepochs: 2\n"
                              "min_epoch_tokens: 0\nval_fraction: 0\n", "--dataset", "synthetic", "--folds", "2")
    assert result["val_fraction"] == 0 and "val_fraction" not in result["params"]
    assert all(f["epochs"] == 2 for f in result["per_fold"]) and result["n_notes"] == 100 * 64
    assert "trained on every training melody for 2 epochs" in run.stdout
    bad = _run("--dataset", "synthetic", "--params", str(tmp_path / "p.yaml"), "--val-fraction", "0.9")
    assert bad.returncode == 2 and "--val-fraction must be a number in [0, 0.5]" in bad.stderr


def _abc_folder(folder, tunes):
    folder.mkdir()
    for i, (key, notes) in enumerate(tunes):
        (folder / f"t{i}.abc").write_text(f"X:1\nT:T{i}\nM:4/4\nL:1/4\nK:{key}\n{notes}|\n")
    return str(folder)


def _two_collections(tmp_path):
    """Two folders of four ABC tunes: the second holds a copy of the first's first tune."""
    tested = _abc_folder(tmp_path / "tested", [
        ("C", "CDEF GABc cBAG FEDC EGce dBGB"), ("C", "EEFG GFED CCDE E2D2 EDCD"),
        ("C", "GEcE GEcE FDBD FDBD ECGC"), ("C", "cBAG AGFE GFED C4 DEFD")])
    other = _abc_folder(tmp_path / "other", [
        ("D", "DEFG ABcd dcBA GFED FAdf ecAc"),          # the first tested tune, a tone higher
        ("C", "CEGc BGDB CEGE FAcA GBdB"), ("C", "AAGF EDCB, A,B,CD EFGA BcBA"),
        ("C", "cdcB AGAB cdec BAGF EDEF")])
    return tested, other


def test_pretraining_leaves_out_every_copy_of_a_tested_tune(tmp_path):
    tested, other = _two_collections(tmp_path)
    text = ("model: gru\nhidden_size: 8\nembedding_dim: 4\nepochs: 1\nmin_epoch_tokens: 0\n"
            f"val_fraction: 0\npretrain: {other}\npretrain_epochs: 2\n")
    args = ("--dataset", tested, "--folds", "2")
    env = {**os.environ, "CHROMASONIC_CACHE": str(tmp_path / "cache")}
    run, result = _run_params(tmp_path, text, *args, env=env)
    assert result["pretrain"]["left_out"] == 1 and result["pretrain"]["melodies"] == 3
    assert result["pretrain"]["epochs"] == 2 and "pretrain" not in result["params"]
    assert f"pretrained on 3 melodies of {other} (1 left out as copies of {tested}'s tunes): 2 epochs" \
        in run.stdout
    # Again: the same weights, read back instead of trained, so the same bits/note.
    again, repeat = _run_params(tmp_path, text, *args, env=env)
    assert "(1 left out as copies of" in again.stdout and ": the weights saved in " in again.stdout
    assert repeat["bits_per_note"] == result["bits_per_note"] and repeat["pretrain"]["cached"]
    # A damaged file is trained again (and replaced), not a crash.
    Path(repeat["pretrain"]["cached"]).write_bytes(b"not a checkpoint")
    _, mended = _run_params(tmp_path, text, *args, env=env)
    assert mended["bits_per_note"] == result["bits_per_note"] and not mended["pretrain"]["cached"]
    params = tmp_path / "p.yaml"
    same = _run("--dataset", tested, "--params", str(params), "--pretrain", tested)
    assert same.returncode == 2 and "pretrain must be another collection" in same.stderr
    counted = _run("--dataset", tested, "--model", "markov", "--pretrain", other)
    assert counted.returncode == 2 and "pretrain needs a neural model" in counted.stderr


def test_every_fold_also_trains_on_another_collection_less_copies_of_tested_tunes(tmp_path, monkeypatch):
    from chromasonic_lib import crossval, folds
    from chromasonic_lib.config import CrossvalConfig
    tested, other = _two_collections(tmp_path)
    run = _run("--dataset", tested, "--folds", "2", "--model", "markov", "--val-fraction", "0",
               "--also-train-on", other, "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["also_train_on"] == {"dataset": other, "melodies": 3, "left_out": 1}
    assert f"every fold also trains on 3 melodies of {other} (1 left out as copies of {tested}'s tunes)" \
        in run.stdout and "every fold also trained on 3 melodies of" in run.stdout
    assert result["n_melodies"] == 4        # only the tested collection is scored
    # Each fold trains on its own training melodies and the 3 others; nothing else is scored.
    trained = []

    def spy(make_model, train_data, val_data, cfg, n=1, on_epoch=None):
        trained.append((sorted(train_data.host_lengths.tolist()), val_data))
        return real(make_model, train_data, val_data, cfg, n, on_epoch)
    real = folds.train_ensemble
    monkeypatch.setattr(folds, "train_ensemble", spy)
    cfg = CrossvalConfig(dataset=tested, folds=2, model="markov", params="", val_fraction=0,
                         also_train_on=other, jobs=1)
    crossval.run_crossval(cfg)
    # Fold 1 tests 35 of the 79 tested notes and trains on the other 44, fold 2 the reverse;
    # both also on the three other tunes of 20 notes (the fourth is a copy).
    assert [len(lengths) for lengths, _ in trained] == [5, 5]
    assert [sum(lengths) for lengths, _ in trained] == [44 + 60, 35 + 60]
    assert all(lengths.count(20) >= 3 and val is None for lengths, val in trained)
    same = _run("--dataset", tested, "--model", "markov", "--also-train-on", tested)
    assert same.returncode == 2 and "--also-train-on must be another collection" in same.stderr


@pytest.mark.parametrize("base", ["crossval", "crossval_context"])
def test_the_pretrained_files_are_their_base_configurations_plus_essen(base):
    from chromasonic_lib.config import CrossvalConfig
    plain, pretrained, more = (CrossvalConfig(params=f"params/{name}.yaml")
                               for name in (base, f"{base}_pretrained", f"{base}_more_data"))
    assert (pretrained.pretrain, pretrained.pretrain_epochs, plain.pretrain) == ("essen", 5, "")
    assert pretrained.settings == plain.settings and pretrained.test_transpose == plain.test_transpose
    # ... and the _more_data files those plus the other chorales in every fold's training.
    assert (more.also_train_on, pretrained.also_train_on) == ("chorales", "")
    assert (more.pretrain, more.pretrain_epochs, more.settings, more.test_transpose) == \
        ("essen", 5, plain.settings, plain.test_transpose)


def test_the_default_configuration_remembers_the_melody():
    from chromasonic_lib.config import CrossvalConfig
    from chromasonic_lib.models import MelodyMemory, build_model, split_params
    cfg = CrossvalConfig()
    hparams, _ = split_params(cfg.model, cfg.settings)
    assert isinstance(build_model(cfg.model, hparams), MelodyMemory)


def test_compare_runs_both_on_the_same_folds_and_pairs_them(tmp_path):
    a, b = tmp_path / "order1.yaml", tmp_path / "order3.yaml"
    a.write_text("model: markov\norder: 1\n")
    b.write_text("model: markov\norder: 3\n")
    run = _run("--dataset", "chorales-185", "--limit", "20", "--folds", "3", "--compare", str(a), str(b), "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["a"]["params"]["order"] == 1 and result["b"]["params"]["order"] == 3
    assert [f["n_notes"] for f in result["a"]["per_fold"]] == [f["n_notes"] for f in result["b"]["per_fold"]]
    diffs = [f["b"] - f["a"] for f in result["per_fold"]]
    assert [f["difference"] for f in result["per_fold"]] == pytest.approx(diffs)
    half = 4.302653 * np.std(diffs, ddof=1) / np.sqrt(3)        # t(0.975, 2 dof)
    assert result["ci95"] == pytest.approx([np.mean(diffs) - half, np.mean(diffs) + half])
    assert result["better"] == ("B" if np.mean(diffs) < 0 else "A")
    assert result["excludes_zero"] == (result["ci95"][0] > 0 or result["ci95"][1] < 0)
    assert "fold_sem" in result["a"] and result["groups"]["melodies"] == result["a"]["n_melodies"] == 20
    out = run.stdout
    assert sum(line.startswith("A fold ") for line in out.splitlines()) == 3
    assert "fold       A       B   B − A" in out
    assert f"   1  {result['per_fold'][0]['a']:.3f}   {result['per_fold'][0]['b']:.3f}  {diffs[0]:+.3f}" in out
    assert (f"mean of the per-fold differences B − A: {np.mean(diffs):+.3f} bits/note, 95 % interval "
            f"[{result['ci95'][0]:+.3f}, {result['ci95'][1]:+.3f}] (t, 2 dof)") in out


def test_compare_takes_each_files_model():
    run = _run("--dataset", "synthetic", "--folds", "2", "--model", "gru", "--compare",
               "params/crossval.yaml", "params/crossval_plain.yaml")
    assert run.returncode == 2
    assert run.stderr.strip() == ("error: --model: with compare, each params file names its own model; "
                                  "got model='gru'")


def test_crossval_bad_input_is_one_clear_line():
    run = _run("--dataset", "synthetic", "--folds", "1")
    assert run.returncode == 2
    assert run.stderr.strip() == "error: --folds must be an integer ≥ 2, got 1"
    run = _run("--dataset", "synthetic", "--ensemble", "0")
    assert run.returncode == 2
    assert run.stderr.strip() == "error: --ensemble must be a positive integer, got 0"
    # A search's params file names the search's settings: said by name, not a TypeError.
    run = _run("--dataset", "synthetic", "--params", "params/markov.yaml")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "params: params/markov.yaml has settings crossval does not take: dataset, n_trials, " \
           "study_name." in run.stderr


def test_a_mixture_averages_its_members_probabilities_note_by_note(tmp_path):
    """A params file of `mixture: [A, B]`: each member trained and scored on every fold as its own
    file says, and each note's probability the mean of theirs (the same folds, the same notes),
    whether the members train one after another or side by side."""
    a, b, mix = tmp_path / "order1.yaml", tmp_path / "order3.yaml", tmp_path / "mix.yaml"
    a.write_text("model: markov\norder: 1\n")
    b.write_text("model: markov\norder: 3\nalpha: 0.5\n")
    mix.write_text(f"mixture: [{a}, {b}]\n")
    tables = {}
    for name, path in (("a", a), ("b", b), ("mix", mix)):
        # The mixture's folds two at a time: each member of each fold trained in a worker of its own.
        run = _run("--dataset", "synthetic", "--folds", "3", "--params", str(path), "--json",
                   "--per-note", str(tmp_path / f"{name}.csv"), jobs="2" if name == "mix" else "1")
        assert run.returncode == 0, run.stderr
        tables[name] = pd.read_csv(tmp_path / f"{name}.csv")["probability"].to_numpy()
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert tables["mix"] == pytest.approx((tables["a"] + tables["b"]) / 2, rel=1e-5)
    assert result["model"] == "mixture" and [m["params_file"] for m in result["members"]] == [str(a), str(b)]
    assert result["params"] is None and all(m["params"] and m["epochs"] for m in result["members"])
    assert result["bits_per_note"] == pytest.approx(float(np.mean(-np.log2(tables["mix"]))), rel=1e-5)
    assert f"(the average of {a} and {b}, note by note)" in run.stdout


def test_a_mixture_of_a_context_and_a_pitch_only_lstm_runs(tmp_path):
    c, p, mix = tmp_path / "c.yaml", tmp_path / "p.yaml", tmp_path / "mix.yaml"
    c.write_text("model: lstm\nembedding_dim: 8\nhidden_size: 8\nepochs: 1\ncontext: [duration, metre, phrase, key]\n"
                 "memory_order: 2\nmemory_rhythm: 0.5\ntest_transpose: 1\n")
    p.write_text("model: lstm\nembedding_dim: 8\nhidden_size: 8\nepochs: 1\n")
    mix.write_text(f"mixture: [{c}, {p}]\n")
    run = _run("--dataset", "chorales-185", "--limit", "16", "--folds", "2", "--params", str(mix), "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(f["epochs"] == [1, 1] for f in result["per_fold"])     # one per member


def test_a_mixture_is_refused_by_name_where_it_cannot_run(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("model: markov\norder: 1\n")
    cases = {f"mixture: [{a}]\n": "mixture in '{mix}' must list two or more params files",
             f"mixture: [{a}, {a}]\norder: 2\n": "params '{mix}' is a mixture: it holds only `mixture`",
             f"mixture: [{a}, nope.yaml]\n": "mixture in '{mix}': member 'nope.yaml': params: file not found"}
    mix = tmp_path / "mix.yaml"
    for text, message in cases.items():
        mix.write_text(text)
        run = _run("--dataset", "synthetic", "--folds", "2", "--params", str(mix))
        assert run.returncode == 2 and message.format(mix=mix) in run.stderr, run.stderr
    mix.write_text(f"mixture: [{a}, {a}]\n")
    run = _run("--dataset", "synthetic", "--folds", "2", "--params", str(mix), "--test-transpose", "2")
    assert run.returncode == 2 and "give test_transpose in its members' files" in run.stderr
