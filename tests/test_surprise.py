"""Per-note scores: every note's probability, information content and entropy (surprise.py),
out of fold from crossval and for any melodies from a checkpoint."""
from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import PYTHON, ROOT

from chromasonic_lib.checkpoints import save_checkpoint
from chromasonic_lib.config import CrossvalConfig
from chromasonic_lib.data import MelodySet, get_encoding, load_dataset
from chromasonic_lib.data.encodings import Notes
from chromasonic_lib.errors import ConfigError
from chromasonic_lib.generate import write_midi
from chromasonic_lib.models import build_model
from chromasonic_lib.surprise import main, per_melody, score_notes, surprise
from chromasonic_lib.training import evaluate
from chromasonic_lib.transposition import TranspositionAverage

COLUMNS = ["dataset.id", "melody.id", "melody.name", "note.id", "onset", "dur", "cpitch", "note",
           "probability", "information.content", "entropy", "fold"]


@pytest.fixture(scope="module")
def crossval_notes(tmp_path_factory):
    """crossval of the markov model on the synthetic walks, 3 folds, with --per-note: (JSON, table)."""
    out = tmp_path_factory.mktemp("cv") / "notes.csv"
    run = subprocess.run([PYTHON, "-m", "chromasonic_lib.crossval", "--jobs", "1", "--dataset", "synthetic",
                          "--folds", "3", "--model", "markov", "--per-note", str(out), "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout, json.loads(run.stdout.strip().splitlines()[-1]), pd.read_csv(out)


def test_crossval_per_note_file_is_every_note_and_averages_to_the_headline(crossval_notes):
    stdout, result, table = crossval_notes
    assert list(table.columns[:len(COLUMNS)]) == COLUMNS      # reads back under IDyOM's names
    assert len(table) == result["n_notes"] == 100 * 64        # every note, each melody's first too
    mean = table["information.content"].mean()
    assert f"{mean:.3f} bits/note" in stdout
    assert mean == pytest.approx(result["bits_per_note"], abs=1e-9)
    for fold in result["per_fold"]:          # each fold's figure is the mean of its own notes
        assert table.loc[table["fold"] == fold["fold"] + 1, "information.content"].mean() == \
            pytest.approx(fold["bits_per_note"], abs=1e-9)
    # note.id restarts at 1 in every melody and counts its notes in order.
    assert (table.groupby("melody.id")["note.id"].apply(lambda s: list(s) == list(range(1, len(s) + 1)))).all()
    assert table["melody.id"].nunique() == 100
    # The per-melody means (IDyOM's :detail 2) are in the JSON, their note-weighted mean the headline.
    melodies = pd.DataFrame(result["per_melody"])
    assert len(melodies) == 100 and (melodies["n.notes"] == 64).all()
    assert np.average(melodies["mean.information.content"], weights=melodies["n.notes"]) == \
        pytest.approx(result["bits_per_note"])


def test_ic_is_minus_log2_probability_and_entropy_is_in_range(crossval_notes):
    _, _, table = crossval_notes
    assert np.allclose(table["information.content"], -np.log2(table["probability"]))
    assert (table["entropy"] >= 0).all() and (table["entropy"] <= math.log2(88) + 1e-9).all()


def test_a_hand_checked_markov_probability():
    # Order 1, alpha 1, over the 88 keys, counted on one melody 10 12 10 14: a unigram of
    # 10: 2, 12: 1, 14: 1, and after 10 once 12 and once 14.
    model = build_model("markov", {"order": 1, "alpha": 1.0}, 88)
    train = MelodySet("hand", get_encoding("pitch"), [np.array([10, 12, 10, 14])])
    t = train.tensor([0])
    model.fit(t.tokens, t.lengths)
    test = MelodySet("hand", get_encoding("pitch"), [np.array([10, 12])])
    table = surprise(model, test, device="cpu")
    first = (2 + 1 / 88) / (4 + 1)                    # order 0: the unigram smoothed toward uniform
    second = (1 + 1 * (1 + 1 / 88) / 5) / (2 + 1)     # 12 after 10, smoothed toward order 0
    assert table["probability"].tolist() == pytest.approx([first, second], rel=1e-6)
    assert table["cpitch"].tolist() == [31, 33] and table["note"].tolist() == ["G1", "A1"]
    assert table["melody.id"].tolist() == ["hand#1", "hand#1"]


def test_scores_agree_with_evaluate_for_a_wrapped_context_model():
    # A memory, context and a transposition average: the per-note mean is evaluate's figure.
    data = load_dataset("chorales-185", limit=4)
    model = build_model("gru", {"hidden_size": 8, "embedding_dim": 4, "memory_order": 2,
                                "context": ["duration", "metre", "phrase", "key"]}, 88)
    model = TranspositionAverage(model, 2)
    tensor = data.tensor([0, 1, 2, 3])
    scores = score_notes(model, tensor, batch_size=3, distributions=True)
    metrics = evaluate(model, tensor, batch_size=3)
    assert len(scores) == metrics.n_notes
    assert scores.bits_per_note == pytest.approx(metrics.bits_per_note, rel=1e-6)
    assert scores.distribution.shape == (len(scores), 88)
    assert np.allclose(scores.distribution.sum(1), 1, atol=1e-5)
    assert np.allclose(scores.distribution[np.arange(len(scores)), scores.token], np.exp(scores.log_prob))


def test_the_table_of_a_chorale_has_its_onsets_and_score_context():
    data = load_dataset("chorales-185", limit=2)
    model = build_model("markov", {}, 88)
    t = data.tensor([0])
    model.fit(t.tokens, t.lengths)
    table = surprise(model, data, [1], device="cpu")
    notes = data.notes[1]
    assert table["melody.id"].iloc[0] == "bach/bwv254.mxl:Soprano" and table["melody.name"].iloc[0] == "bwv254"
    sounding = notes.pitches >= 0
    assert table["dur"].tolist() == pytest.approx(notes.durations[sounding].tolist())
    assert table["onset"].iloc[0] == 0 and table["onset"].is_monotonic_increasing
    assert table["phrase"].iloc[0] == 1 and table["phrase"].iloc[-1] == -1
    assert set(table["metre"]) == {"4/4"} and table["model.context"].iloc[0] == "none"


def test_surprise_scores_a_folder_and_names_a_broken_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHROMASONIC_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "stimuli"
    folder.mkdir()
    for name, pitches in (("a.mid", [60, 62, 64, 65, 67]), ("b.mid", [67, 65, 64, 62, 60, 62])):
        write_midi(folder / name, Notes(np.array(pitches, np.int16), np.full(len(pitches), 1.0, np.float32)))
    (folder / "broken.mid").write_bytes(b"this is not a MIDI file")
    model = build_model("markov", {"order": 2}, 88)
    t = MelodySet("x", get_encoding("pitch"), [np.array([39, 41, 43, 44, 46, 44, 43, 41, 39])]).tensor([0])
    model.fit(t.tokens, t.lengths)
    checkpoint = save_checkpoint(tmp_path / "model.pt", model, "markov", {"order": 2}, "pitch")
    out = tmp_path / "notes.csv"
    assert main(["--model", str(checkpoint), "--melodies", str(folder), "--out", str(out),
                 "--distributions", str(tmp_path / "d.npz")]) == 0
    printed = capsys.readouterr()
    assert "broken.mid" in printed.err and "skipped" in printed.err
    table = pd.read_csv(out)
    assert table["melody.id"].drop_duplicates().tolist() == ["a.mid", "b.mid"]
    assert len(table) == 11 and table["onset"].tolist()[:3] == [0, 1, 2]
    with np.load(tmp_path / "d.npz") as z:
        assert z["probabilities"].shape == (11, 88) and z["vocabulary"][39] == "C4"
        assert z["note_id"].tolist() == table["note.id"].tolist()
    assert "11 notes of 2 melodies" in printed.out


def test_surprise_names_a_bad_output_and_a_missing_model(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "none.pt"), "--melodies", "x", "--out", "n.txt"]) == 2
    assert "out must be a .csv or .parquet file, got 'n.txt'" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "none.pt"), "--melodies", "x", "--out", str(tmp_path / "n.csv")]) == 2
    assert "model: no such checkpoint file" in capsys.readouterr().err


def test_crossval_config_checks_the_per_note_files():
    with pytest.raises(ConfigError, match="per_note must be a .csv or .parquet file, got 'notes.json'"):
        CrossvalConfig("synthetic", model="markov", params="", per_note="notes.json")
    with pytest.raises(ConfigError, match="distributions must be a .npz file"):
        CrossvalConfig("synthetic", model="markov", params="", distributions="d.csv")


def test_per_melody_means_and_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    from chromasonic_lib.surprise import write_table
    table = pd.DataFrame({"melody.id": ["a", "a", "b"], "melody.name": ["a", "a", "b"], "note.id": [1, 2, 1],
                          "information.content": [1.0, 3.0, 5.0], "entropy": [2.0, 2.0, 4.0]})
    means = per_melody(table)
    assert means["mean.information.content"].tolist() == [2.0, 5.0] and means["n.notes"].tolist() == [2, 1]
    write_table(table, tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), table)


def test_a_melody_memory_counts_only_the_melody_s_own_notes():
    # Scored beside another melody or alone, a melody's notes get the same probabilities.
    data = load_dataset("chorales-185", limit=3)
    model = build_model("markov", {"memory_order": 3, "memory_alpha": 2.0}, 88)
    t = data.tensor([0])
    model.fit(t.tokens, t.lengths)
    together = surprise(model, data, [1, 2], device="cpu")
    alone = surprise(model, data, [2], device="cpu")
    assert together[together["melody.name"] == "bwv255"]["probability"].tolist() == \
        pytest.approx(alone["probability"].tolist(), rel=1e-6)
