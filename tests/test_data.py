"""Melody sources, encodings, splits, augmentation and the cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from chromasonic_lib.data import MelodyTensor, kfold, load_dataset, melody_groups, split, synthetic
from chromasonic_lib.data.splits import epoch_batches, n_batches
from chromasonic_lib.data.encodings import GridEncoding, Notes, PitchEncoding, fold_into_keyboard
from chromasonic_lib.errors import DataError


def test_pitch_encoding_maps_piano_keys_and_folds_outside_notes_by_octaves():
    enc = PitchEncoding()
    notes = Notes(np.array([21, 60, 108, 12, 120, -1], dtype=np.int16), np.ones(6, np.float32))
    # MIDI 12 (C0) moves up one octave to C1 = 24 → key 3; 120 (C9) down one to C8 = 108 → key 87.
    assert enc.encode(notes).tolist() == [0, 39, 87, 3, 87]
    assert fold_into_keyboard(np.array([12, 120, 5])).tolist() == [24, 108, 29]


def test_grid_round_trips_notes_with_rhythm_and_rests():
    enc = GridEncoding()
    notes = Notes(np.array([60, -1, 62, 64], dtype=np.int16), np.array([1.0, 0.5, 0.25, 2.0], np.float32))
    tokens = enc.encode(notes)
    assert tokens.tolist() == [39, 88, 88, 88, 89, 89, 41, 43] + [88] * 7
    back = enc.decode(tokens)
    assert back.pitches.tolist() == notes.pitches.tolist()
    assert back.durations.tolist() == notes.durations.tolist()


def test_synthetic_same_seed_same_data_and_steps_follow_the_weights():
    a = load_dataset("synthetic", n_sequences=300, sequence_length=64, seed=7)
    b = load_dataset("synthetic", n_sequences=300, sequence_length=64, seed=7)
    assert all((x == y).all() for x, y in zip(a.melodies, b.melodies))
    steps = np.concatenate([np.diff(m.astype(int)) for m in a.melodies])
    inner = np.concatenate([np.diff(m.astype(int))[(m[:-1] > 1) & (m[:-1] < 86)] for m in a.melodies])
    assert set(np.unique(steps)) <= {-2, -1, 0, 1, 2}
    freqs = np.array([(inner == s).mean() for s in (-2, -1, 0, 1, 2)])
    assert np.allclose(freqs, np.array([1, 2, 3, 2, 1]) / 9, atol=0.01)


def test_oracle_loss_is_the_step_entropy_away_from_the_edges():
    """Every note scored, as the models are: the first at the uniform start's ln 88."""
    entropy = -sum(p * np.log(p) for p in np.array([1, 2, 3, 2, 1]) / 9)
    middle = [np.array([40, 41, 41, 39, 40, 42])]
    manual = -np.mean(np.log(np.array([1 / 88, 2 / 9, 3 / 9, 1 / 9, 2 / 9, 1 / 9])))
    assert synthetic.oracle_loss(middle) == pytest.approx(manual)
    data = load_dataset("synthetic", n_sequences=200, sequence_length=64, seed=3)
    assert abs(synthetic.oracle_loss(data.melodies) - (63 * entropy + np.log(88)) / 64) < 0.03
    # At the bottom key, "down" steps are clamped into "stay": P(stay at 0) = 6/9.
    assert synthetic.oracle_loss([np.array([0, 0])]) == pytest.approx((np.log(88) - np.log(6 / 9)) / 2)


def test_split_keeps_identical_melodies_on_one_side():
    base = [np.array([i, i + 1, i + 2]) for i in range(30)]
    melodies = base + [base[0].copy(), base[0].copy(), base[5].copy()]
    s = split(melodies, 0.2, 0.2, seed=3)
    sides = [{m.tobytes() for m in part} for part in (s.train, s.val, s.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert len(s.train) + len(s.val) + len(s.test) == len(melodies)


def _tunes(n: int, length: int = 40, seed: int = 0) -> list[np.ndarray]:
    """Unrelated random tunes in keys 20–69, no repeated notes, steps of up to a fifth."""
    rng = np.random.default_rng(seed)
    steps = rng.choice([-7, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 7], size=(n, length - 1))
    return [20 + np.concatenate([[19], 19 + np.cumsum(s)]) % 50 for s in steps]


def _fold_of(folds) -> dict[int, int]:
    return {i: f for f, (_, test) in enumerate(folds) for i in test}


def test_kfold_folds_are_disjoint_and_cover_everything():
    melodies = _tunes(23, 10)
    folds = kfold(melodies, 5, seed=0)
    tests = [set(t) for _, t in folds]
    assert set().union(*tests) == set(range(23))
    assert sum(len(t) for t in tests) == 23
    for train_idx, test_idx in folds:
        assert not set(train_idx) & set(test_idx)
        assert max(len(t) for t in tests) - min(len(t) for t in tests) <= 1


def test_kfold_keeps_transposed_copies_and_variants_with_their_originals():
    melodies = _tunes(30)
    melodies.append(melodies[3] + 5)                    # 30: melody 3 a fourth higher
    variant = np.repeat(melodies[7], 2)                 # 31: melody 7 with every note struck twice,
    variant[[20, 50]] += 1                              # two notes altered, and a note added
    melodies.append(np.insert(variant, 60, variant[59] + 2) - 2)    # a tone lower
    grid = np.array([39, 88, 88, 41, 88, 89, 43, 88, 44, 88, 89, 46, 88, 88])
    melodies += [grid, np.where(grid < 88, grid + 5, grid)]         # 32, 33: the grid encoding
    groups = melody_groups(melodies)
    assert (groups.n_identical, groups.n_transposed, groups.n_variants) == (0, 2, 1)
    assert "34 melodies in 31 groups: 3 copies (2 transposed, 1 near-identical)" in groups.describe()
    for seed in range(5):
        fold = _fold_of(kfold(melodies, 10, seed))
        assert fold[3] == fold[30] and fold[7] == fold[31] and fold[32] == fold[33]


def test_unrelated_tunes_sharing_an_opening_stay_apart():
    # Twenty tunes share their first 12 notes (a generic opening), then go their own ways.
    opening = _tunes(1, 12, seed=1)[0]
    melodies = [np.concatenate([opening, t]) for t in _tunes(20, 30, seed=2)]
    assert len(melody_groups(melodies).groups) == 20
    assert max(len(t) for _, t in kfold(melodies, 10, seed=0)) == 2


def test_split_keeps_transposed_copies_on_one_side_and_says_so():
    melodies = _tunes(30)
    melodies += [melodies[i] - 2 for i in range(10)]
    s = split(melodies, 0.2, 0.2, seed=3)
    sides = [{(m - m[0]).tobytes() for m in part} for part in (s.train, s.val, s.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert "40 melodies in 30 groups: 10 copies (10 transposed) kept together" in s.describe()


def test_transposition_never_leaves_the_keyboard():
    melodies = [np.array([0, 1, 2]), np.array([85, 87, 86]), np.array([40, 50, 45]), np.array([88, 30, 89])]
    data = MelodyTensor(melodies)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(4).repeat(500)
    shifts = data.random_shifts(idx, 12, gen)
    x, y = data.batch(idx, shifts, bos=90)
    assert (x[:, 0] == 90).all()                         # the start token never moves
    notes = x[:, 1:]                                     # notes 0..L-2
    keys = data.is_key[idx, : notes.shape[1]]
    assert notes[keys].min() >= 0 and notes[keys].max() <= 87
    original = data.tokens[idx, : notes.shape[1]]
    assert torch.equal(notes[~keys], original[~keys])   # hold/rest tokens and padding never move
    assert shifts[idx == 2].unique().numel() == 25       # the middle melody uses the whole ±12


def test_user_token_lists_beyond_the_keys_are_not_transposed_unless_asked():
    from chromasonic_lib.config import TrainConfig
    from chromasonic_lib.data import from_token_lists
    from chromasonic_lib.models import build_model
    from chromasonic_lib.training import train
    melodies = [[100 + (i * j) % 28 for j in range(12)] for i in range(10)]     # tokens up to 127
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(8).repeat(50)
    plain = from_token_lists(melodies[:8], melodies[8:], vocab_size=128)
    assert plain.vocab_size == 128 and plain.floor() is None
    assert (plain.train.random_shifts(idx, 12, gen) == 0).all()
    losses = [train(build_model("markov", {"order": 1}, 128), plain.train, plain.val,
                    TrainConfig(transpose=t)).best_val_loss for t in (0, 6)]
    assert losses[0] == losses[1]                          # the baseline's counts do not move either
    asked = from_token_lists(melodies[:8], melodies[8:], vocab_size=128, transposable=True)
    shifts = asked.train.random_shifts(idx, 12, gen)
    x, _ = asked.train.batch(idx, shifts, bos=128)
    assert (shifts != 0).any() and 0 <= x[:, 1:].min() and x[:, 1:].max() <= 127
    assert "user token lists (vocab 128)" in plain.describe() and "no transposition" in plain.describe()
    with pytest.raises(DataError, match=r"val_data\[1\]\[3\] is token 128, outside 0..127 \(vocab_size=128\)"):
        from_token_lists(melodies[:8], [melodies[8], [1, 2, 3, 128]], vocab_size=128)


def test_epoch_batches_see_every_melody_each_pass_in_batches_of_similar_length():
    rng = np.random.default_rng(0)
    melodies = [rng.integers(30, 60, int(n)) for n in rng.integers(10, 200, 100)]
    data = MelodyTensor(melodies)
    min_tokens = 3 * int(data.lengths.sum())            # three passes
    batches = epoch_batches(data, min_tokens, 16, torch.Generator().manual_seed(0))
    assert len(batches) == n_batches(data, min_tokens, 16) == 3 * 7
    seen = torch.cat(batches)
    assert sorted(seen.tolist()) == sorted(list(range(100)) * 3)
    # Padding: a batch is as long as its longest melody. Grouped, far less of it than drawn at random.
    def padded(bs):
        return sum(len(b) * int(data.lengths[b].max()) for b in bs)
    random_order = torch.randperm(300, generator=torch.Generator().manual_seed(1)) % 100
    assert padded(batches) < 0.75 * padded(random_order.split(16))
    again = epoch_batches(data, min_tokens, 16, torch.Generator().manual_seed(0))
    other = epoch_batches(data, min_tokens, 16, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))      # seeded
    assert any(not torch.equal(a, b) for a, b in zip(batches, other))


def test_padding_is_ignored_in_targets():
    data = MelodyTensor([np.array([1, 2, 3, 4]), np.array([5, 6])])
    x, y = data.batch(torch.tensor([0, 1]), bos=9)
    assert y[1].tolist() == [5, 6, -100, -100]
    assert x[1, :3].tolist() == [9, 5, 6]


def test_every_note_is_a_target_the_first_after_the_start_token():
    data = MelodyTensor([np.array([1, 2, 3, 4]), np.array([5, 6])])
    x, y = data.batch(torch.tensor([0, 1]), bos=9)
    assert x[0].tolist() == [9, 1, 2, 3] and y[0].tolist() == [1, 2, 3, 4]
    assert (y != -100).sum() == data.n_predicted == 6   # the collection's notes, all of them


@pytest.mark.parametrize("name,limit", [("chorales", 2), ("chorales-185", 1), ("essen/erk5", None),
                                        ("oneills", 1), ("ryans", 2), ("airds", 1)])
def test_each_corpus_loads_a_sample(name, limit):
    data = load_dataset(name, limit=limit)
    assert len(data.melodies) >= 1
    assert data.n_notes > 20
    lo, hi = data.pitch_range()
    assert 21 <= lo <= hi <= 108
    assert name.split("/")[0].split("-")[0] in data.describe()


def test_chorales_take_the_soprano_part_not_the_first():
    from music21 import corpus
    from chromasonic_lib.data.files import parse_score_file
    path = corpus.getWork("bwv1.6")     # opens with a horn part
    soprano = parse_score_file(path, "Soprano")[0]
    horn_first = [n.pitch.midi for n in corpus.parse(path).parts[0].flatten().notes][:5]
    sop_first = [n.pitch.midi for n in corpus.parse(path).parts["Soprano"].flatten().notes][:5]
    assert soprano.pitches[:5].tolist() == sop_first != horn_first


@pytest.fixture
def score_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CHROMASONIC_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "scores"
    folder.mkdir()
    (folder / "tune.abc").write_text("X:1\nT:Test\nM:4/4\nL:1/8\nK:C\nCDEF GABc|c2B2 A2G2|\n")
    (folder / "broken.mid").write_bytes(b"this is not a MIDI file")
    return folder


def test_folder_loader_reads_good_files_and_names_broken_ones(score_folder):
    data = load_dataset(str(score_folder))
    assert len(data.melodies) == 1
    assert data.melodies[0].tolist()[:4] == [39, 41, 43, 44]
    assert [name.endswith("broken.mid") for name, _ in data.skipped_files] == [True]
    assert data.skipped_files[0][1]     # the reason
    assert "1 unreadable files skipped" in data.describe()


def test_folder_of_only_broken_files_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CHROMASONIC_CACHE", str(tmp_path / "cache"))
    (tmp_path / "a.mid").write_bytes(b"junk")
    with pytest.raises(DataError, match="no melody"):
        load_dataset(str(tmp_path))


def test_cache_hit_and_invalidation_when_a_file_is_added(score_folder, monkeypatch):
    import chromasonic_lib.data as data_mod
    calls = []
    real = data_mod.parse_files
    monkeypatch.setattr(data_mod, "parse_files", lambda *a, **k: calls.append(1) or real(*a, **k))
    load_dataset(str(score_folder))
    load_dataset(str(score_folder), encoding="grid")     # same notes, other encoding: still a hit
    assert len(calls) == 1
    (score_folder / "second.abc").write_text("X:1\nT:Two\nM:4/4\nL:1/4\nK:G\nGABc|d4|\n")
    data = load_dataset(str(score_folder))
    assert len(calls) == 2 and len(data.melodies) == 2


def test_short_melodies_are_dropped_and_counted(tmp_path, monkeypatch):
    monkeypatch.setenv("CHROMASONIC_CACHE", str(tmp_path / "cache"))
    (tmp_path / "one.abc").write_text("X:1\nT:One note\nM:4/4\nL:1/4\nK:C\nC4|\n")
    (tmp_path / "two.abc").write_text("X:1\nT:Tune\nM:4/4\nL:1/4\nK:C\nCDEF|\n")
    data = load_dataset(str(tmp_path))
    assert len(data.melodies) == 1 and data.n_too_short == 1
