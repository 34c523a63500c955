"""Musical context: parsed from scores, cached, encoded, batched, transposed and read causally."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
from conftest import PYTHON, ROOT

from chromasonic_lib.data import MelodyTensor, cache, load_dataset, load_notes
from chromasonic_lib.data.context import CONTEXT_FEATURES, MINOR, context_names, in_key
from chromasonic_lib.data.encodings import GridEncoding, PitchEncoding
from chromasonic_lib.data.files import parse_score_file
from chromasonic_lib.errors import ConfigError, DataError
from chromasonic_lib.models import MelodyMemory, build_model

ALL = ("duration", "metre", "phrase", "key")


@pytest.fixture
def tiny_score(tmp_path):
    """A 4/4 bar in G major (a rest, a fermata), then a 3/4 bar under a bare one-flat signature
    (F major or D minor, the mode not written) ending on D."""
    from music21 import expressions, key, meter, note, stream
    part = stream.Part()
    first = stream.Measure(number=1)
    first.append([meter.TimeSignature("4/4"), key.Key("G")])
    fermata = note.Note("B4", quarterLength=1)
    fermata.expressions.append(expressions.Fermata())
    first.append([note.Note("G4", quarterLength=1), note.Rest(quarterLength=1),
                  note.Note("A4", quarterLength=1), fermata])
    second = stream.Measure(number=2)
    second.append([meter.TimeSignature("3/4"), key.KeySignature(-1)])
    second.append([note.Note("F4", quarterLength=0.5), note.Note("E4", quarterLength=0.5),
                   note.Note("D4", quarterLength=2)])
    part.append([first, second])
    path = tmp_path / "tiny.musicxml"
    part.write("musicxml", fp=str(path))
    return path


def test_a_tiny_score_gives_each_note_its_context(tiny_score):
    notes = parse_score_file(tiny_score)[0]
    assert notes.pitches.tolist() == [67, -1, 69, 71, 65, 64, 62]
    c = notes.context
    assert c.bar_offsets.tolist() == [0, 1, 2, 3, 0, 0.5, 1]
    assert c.metres.tolist() == [[4, 4]] * 4 + [[3, 4]] * 3
    assert c.phrase_ends.tolist() == [False, False, False, True, False, False, True]   # fermata, end
    # G major as written; then F major or D minor, read from the notes before each note alone:
    # nothing heard yet, then F, then F and E all say F major (the final D is never read).
    assert c.keys.tolist() == [7] * 4 + [5] * 3
    ids = PitchEncoding().encode_context(notes)                   # the rest has no token
    assert ids.tolist() == [[6, 0, 0, 7], [6, 8, 0, 7], [6, 12, 1, 7],          # quarters in 4/4
                            [4, 32, 0, 5], [4, 34, 0, 5], [8, 36, 1, 5]]        # 3/4: block 1
    grid = GridEncoding()
    steps = grid.encode_context(notes)
    assert len(steps) == len(grid.encode(notes)) == 16 + 12
    assert steps[:, 0].tolist() == list(range(16)) + list(range(32, 44))        # every sixteenth
    assert steps[:, 1].tolist() == [7] * 16 + [5] * 12


def test_context_names_name_the_bad_value_and_the_allowed_ones():
    assert context_names("key+duration") == context_names(["duration", "key"]) == ("duration", "key")
    assert context_names("") == context_names("none") == context_names([]) == ()
    with pytest.raises(ConfigError, match=r"'tempo' is not a context feature; allowed: duration, metre, "
                                          r"phrase, key \(got \['tempo'\]\)"):
        context_names(["tempo"])


def test_an_old_cache_entry_is_parsed_again(tmp_path, monkeypatch, tiny_score):
    import chromasonic_lib.data as data_mod
    monkeypatch.setenv("CHROMASONIC_CACHE", str(tmp_path / "cache"))
    folder = tiny_score.parent
    path = cache.entry_path(str(folder), [tiny_score])
    assert cache.FORMAT_VERSION >= 3 and path.name.endswith(f"-v{cache.FORMAT_VERSION}.npz")
    # An entry as version 2 wrote it, notes without context, where this version looks.
    path.parent.mkdir(parents=True)
    np.savez(path, pitches=np.array([60, 62], np.int16), durations=np.ones(2, np.float32),
             lengths=np.array([2]), meta=np.array(json.dumps({"files": [], "skipped": []})))
    calls = []
    real = data_mod.parse_files
    monkeypatch.setattr(data_mod, "parse_files", lambda *a, **k: calls.append(1) or real(*a, **k))
    melodies, _ = load_notes(str(folder))
    assert calls and melodies[0].context.keys.tolist()[-1] == 5     # F major, as heard before the D
    again, _ = load_notes(str(folder))                           # now a hit, context and all
    assert len(calls) == 1 and again[0].context.phrase_ends.tolist() == melodies[0].context.phrase_ends.tolist()


def test_the_batch_gives_each_target_its_own_context_and_transposition_moves_the_tonic():
    contexts = [np.array([[1, 7], [2, 7], [3, MINOR + 2]]), np.array([[4, MINOR + 11], [5, 0]])]
    data = MelodyTensor([np.array([10, 11, 12]), np.array([20, 21])], contexts=contexts,
                        context_features=("metre", "key"))
    idx = torch.tensor([0, 1])
    x, y = data.batch(idx, bos=88)
    c = data.context(idx, ("metre", "key"), x.shape[1])
    assert y[0].tolist() == [10, 11, 12] and c["metre"][0].tolist() == [1, 2, 3]   # note t's at step t
    shifted = data.context(idx, ("key",), x.shape[1], torch.tensor([-8, 3]))
    # G major down 8 = B major; D minor down 8 = F# minor; B minor up 3 = D minor; C up 3 = Eb.
    assert shifted["key"][0].tolist() == [11, 11, MINOR + 6]
    assert shifted["key"][1, :2].tolist() == [MINOR + 2, 3]
    with pytest.raises(DataError, match="'duration', which these melodies do not have"):
        data.context(idx, ("duration",), 3)


def _context(B: int, T: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randint(0, CONTEXT_FEATURES[n], (B, T), generator=g) for n in ALL}


def _model(family: str, memory: bool = False):
    hp = {"transformer": {"d_model": 16, "nhead": 2, "num_layers": 2, "dim_feedforward": 32},
          }.get(family, {"embedding_dim": 8, "hidden_size": 12, "num_layers": 2})
    hp = {**hp, "context": list(ALL), **({"memory_order": 3} if memory else {})}
    return build_model(family, hp, vocab_size=10, seed=0).eval()


FAMILIES = [("rnn", False), ("lstm", False), ("gru", False), ("transformer", False),
            ("lstm", True), ("transformer", True)]


@pytest.mark.parametrize("family,memory", FAMILIES)
def test_with_context_the_output_at_t_knows_nothing_after_t_but_note_ts_own_context(family, memory):
    model = _model(family, memory)
    B, T, t = 3, 12, 5
    x = torch.randint(0, 10, (B, T))
    x[:, 0] = 10                                   # the start token
    x[:, 1:4] = torch.tensor([1, 2, 1])            # a repeat, so the memory has counts to use
    ctx = _context(B, T)
    out = model(x, ctx)
    later = x.clone()
    later[:, t + 1:] = (later[:, t + 1:] + 3) % 10     # note t's pitch (input t+1) and every later one
    later_ctx = {n: v.clone() for n, v in ctx.items()}
    for n, v in later_ctx.items():
        v[:, t + 1:] = (v[:, t + 1:] + 1) % CONTEXT_FEATURES[n]
    assert torch.allclose(model(later, later_ctx)[:, :t + 1], out[:, :t + 1], atol=1e-5)
    own = {n: v.clone() for n, v in ctx.items()}
    own["duration"][:, t] = (own["duration"][:, t] + 5) % CONTEXT_FEATURES["duration"]
    changed = model(x, own)
    assert torch.allclose(changed[:, :t], out[:, :t], atol=1e-5)
    assert not torch.allclose(changed[:, t], out[:, t], atol=1e-5)       # its own duration counts


@pytest.mark.parametrize("family,memory", FAMILIES)
def test_stepping_with_context_gives_what_forward_gives(family, memory):
    model = _model(family, memory)
    x = torch.randint(0, 10, (2, 9))
    x[:, 0] = 10
    ctx = _context(2, 9, seed=1)
    full = model(x, ctx)
    state = model.start(2)
    for t in range(9):
        out, state = model.step(state, x[:, t], {n: v[:, t] for n, v in ctx.items()})
        assert torch.allclose(out, full[:, t], atol=1e-4)


def test_without_context_a_model_is_what_it_was_and_with_it_needs_it():
    plain, reading = build_model("lstm", {}, 10, seed=0), build_model("lstm", {"context": "key"}, 10, seed=0)
    assert not any("context" in k for k in plain.state_dict())         # old checkpoints load
    assert {k for k in reading.state_dict() if "context" in k} == {"context_embed.tables.key.weight"}
    assert all(torch.equal(v, reading.state_dict()[k]) for k, v in plain.state_dict().items())
    with pytest.raises(ConfigError, match="reads the context key of each note and was given none"):
        reading(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="context is not a hyperparameter of markov"):
        build_model("markov", {"context": ["key"]})


def test_a_checkpoint_records_the_context(tmp_path):
    from chromasonic_lib.checkpoints import load_checkpoint, save_checkpoint
    model = _model("gru", memory=True)
    path = save_checkpoint(tmp_path / "m.pt", model, "gru", {"embedding_dim": 8, "hidden_size": 12,
                           "num_layers": 2, "memory_order": 3, "context": list(ALL)}, "pitch")
    loaded, _ = load_checkpoint(path)
    x, ctx = torch.randint(0, 10, (2, 6)), _context(2, 6)
    assert isinstance(loaded, MelodyMemory) and torch.allclose(loaded(x, ctx), model(x, ctx))


def test_training_and_evaluation_give_the_model_its_context():
    from chromasonic_lib.config import TrainConfig
    from chromasonic_lib.data import from_token_lists, prepare
    from chromasonic_lib.training import evaluate, train
    data = prepare(load_dataset("synthetic", n_sequences=20, sequence_length=16, seed=2), 0.2, 0.2, 2)
    assert data.train.context_features == ALL
    model = build_model("gru", {"embedding_dim": 8, "hidden_size": 8, "context": list(ALL)}, 88, seed=0)
    history = train(model, data.train, data.val, TrainConfig(epochs=1, min_epoch_tokens=0))
    assert np.isfinite(history.val_loss[0]) and evaluate(model, data.test).n_notes == data.test.n_predicted
    tokens = from_token_lists([[1, 2, 3, 4]] * 4, [[1, 2, 3]])
    with pytest.raises(DataError, match="token lists have no notes behind them"):
        train(model, tokens.train, tokens.val, TrainConfig(epochs=1, min_epoch_tokens=0))


@pytest.mark.parametrize("settings,error", [
    ("model: lstm\ncontext: [tempo]\n", r"context: 'tempo' is not a context feature; allowed: duration, metre, "
                                        r"phrase, key \(got \['tempo'\]\)"),
    ("model: markov\ncontext: [key]\n", r"context: markov counts pitches only and reads no context"),
    ("model: gru\ncontext: duration+key\nencoding: grid\n", r"the grid encoding gives no 'duration' context, "
                                                           r"got 'duration\+key'; it gives metre, key"),
])
def test_crossval_settings_name_a_bad_context(tmp_path, settings, error):
    from chromasonic_lib.config import CrossvalConfig
    params = tmp_path / "p.yaml"
    params.write_text(settings.replace("encoding: grid\n", ""))
    encoding = "grid" if "encoding: grid" in settings else "pitch"
    with pytest.raises(ConfigError, match=error):
        CrossvalConfig("synthetic", encoding, params=str(params))


def test_crossval_trains_context_models_on_a_few_chorales(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("model: lstm\nhidden_size: 16\nembedding_dim: 8\nepochs: 1\nmin_epoch_tokens: 0\n"
                      "context: [duration, metre, phrase, key]\nmemory_order: 2\n")
    run = subprocess.run([PYTHON, "-m", "chromasonic_lib.crossval", "--dataset", "chorales-other",
                          "--limit", "12", "--folds", "2", "--params", str(params), "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["params"]["context"] == list(ALL) and 0 < result["bits_per_note"] < 7


# ---------------------------------------------------------------- search, train_best, sampling

TWO_CONTEXTS = {"models": {"lstm": {"embedding_dim": 8, "hidden_size": 8,
                                    "context": {"choices": ["key", list(ALL)]}}}}


def test_a_search_space_offers_context_sets_as_strings_and_starts_without_context():
    from chromasonic_lib.search.space import load_space
    space = load_space({"models": {"gru": {"context": {"choices": [list(ALL), [], "key+metre"]}}}}, "gru", "pitch")
    assert space.models["gru"]["context"].choices == ["duration+metre+phrase+key", "none", "metre+key"]
    assert space.default_trials() == [{"context": "none"}]             # the defaults read no context
    assert load_space(TWO_CONTEXTS, "lstm", "pitch").default_trials()[0]["context"] == "key"   # none not offered
    with pytest.raises(ConfigError, match=r"search_space: models.lstm.context: the grid encoding gives no "
                                          r"'duration' context, got \['duration', 'metre', 'phrase', 'key'\]; "
                                          r"it gives metre, key"):
        load_space(TWO_CONTEXTS, "lstm", "grid")


def test_a_search_over_context_on_a_few_chorales_records_it_and_its_best_checkpoint_reads_it(tmp_path):
    import chromasonic_lib as cl
    from chromasonic_lib.search.results import trial_config
    from chromasonic_lib.training import evaluate
    data = cl.prepare(load_dataset("chorales-other", limit=12), 0.2, 0.0, 42)
    out = tmp_path / "out"
    cfg = cl.SearchConfig(study_name="ctx", storage=f"sqlite:///{tmp_path}/s.db", output_dir=str(out),
                          dataset="chorales-other", model="lstm", search_space=TWO_CONTEXTS, n_trials=2,
                          epochs=1, test_fraction=0.0, val_fraction=0.2, device="cpu", plot=False, live=False,
                          seed=0)       # whose second trial draws the other set
    result = cl.run_search(cfg, data)
    contexts = [trial_config(t)["context"] for t in result.study.trials]
    assert contexts[0] == "key" and set(contexts) == {"key", "duration+metre+phrase+key"}
    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert best["context"] == trial_config(result.study.best_trial)["context"]
    model, meta = cl.load_checkpoint(out / "best_model.pt")
    assert model.context == context_names(best["context"]) != ()
    assert evaluate(model, data.val).nats_per_note == pytest.approx(result.best_value, rel=1e-5)
    with pytest.raises(ConfigError, match="search_space: models.lstm.context: the grid encoding"):
        cl.SearchConfig(encoding="grid", search_space=TWO_CONTEXTS)


def _reading(family: str, memory: bool = False, vocab_size: int = 88):
    hp = {"transformer": {"d_model": 16, "nhead": 2, "num_layers": 2, "dim_feedforward": 32},
          }.get(family, {"embedding_dim": 8, "hidden_size": 12, "num_layers": 2})
    return build_model(family, {**hp, "context": list(ALL), **({"memory_order": 3} if memory else {})},
                       vocab_size, seed=0).eval()


def _midi_notes(path) -> list[tuple[int, int, int]]:
    """(pitch, start tick, end tick) of each note of a one-track MIDI file."""
    import mido
    t, starts, notes = 0, {}, []
    for msg in mido.MidiFile(str(path)).tracks[0]:
        t += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            starts[msg.note] = t
        elif msg.type in ("note_on", "note_off"):
            notes.append((msg.note, starts.pop(msg.note), t))
    return notes


@pytest.mark.parametrize("family,memory", [("lstm", True), ("transformer", False)])
def test_sampling_in_a_rhythm_reads_it_as_the_full_pass_does_and_writes_its_durations(
        tiny_score, tmp_path, family, memory):
    from chromasonic_lib import generate
    model, enc = _reading(family, memory), PitchEncoding()
    rhythm = generate.repeat_rhythm(parse_score_file(tiny_score)[0], 4)    # 4 × 6 notes, a rest each
    assert rhythm.context.bar_offsets.tolist() == [0, 1, 2, 3, 0, 0.5, 1] * 4   # whole bars: as it was
    context = generate.rhythm_context(model, enc, rhythm)
    draws = [generate.sample(model, [46], 100, 1.0, 0, torch.Generator().manual_seed(3), incremental=incremental,
                             context=context) for incremental in (True, True, False)]
    # Seeded, the rhythm's length, and the steps draw what the full forward pass with context would.
    assert draws[0] == draws[1] == draws[2] and len(draws[0]) == 24 and draws[0][0] == 46
    notes = enc.decode(draws[0], rhythm)
    assert notes.durations.tolist() == rhythm.durations.tolist()          # the rests kept
    assert notes.pitches[notes.pitches >= 0].tolist() == [t + 21 for t in draws[0]]
    written = _midi_notes(generate.write_midi(tmp_path / "m.mid", notes))
    starts = np.cumsum(np.concatenate([[0], rhythm.durations[:-1]]))[rhythm.pitches >= 0]
    ends = starts + rhythm.durations[rhythm.pitches >= 0]
    assert [(s, e) for _, s, e in written] == [(round(s * 480), round(e * 480)) for s, e in zip(starts, ends)]
    with pytest.raises(ConfigError, match="reads the context duration\\+metre\\+phrase\\+key of each note "
                                          "and sampling was given none"):
        generate.sample(model, [], 8)


def test_a_rhythm_s_key_moves_as_little_as_fits_the_primer():
    from chromasonic_lib import generate
    assert generate.key_shift([60, 62, 64], 7) == 0           # C D E: in G major already
    assert generate.key_shift([60, 62, 63], 0) == -2          # C D Eb: Bb major, not C
    assert generate.key_shift([61, 66], MINOR + 9) == -1      # C# F#: G# minor, not A minor
    assert generate.key_shift([], MINOR + 9) == 0


@pytest.fixture(scope="module")
def tunes(tmp_path_factory):
    """Twelve short ABC tunes, each with a rhythm, metre and key of its own."""
    folder = tmp_path_factory.mktemp("tunes")
    bars = {"3/4": ["G2 A2 B2", "c4 B2", "A3 B A2", "B2 c2 d2", "d4 c2", "G6"],
            "4/4": ["G2 A2 B2 c2", "d4 c2 B2", "A3 B A2 G2", "B c d e d4", "d6 c2", "G8"]}
    rng = np.random.default_rng(0)
    for i in range(12):
        metre = "3/4" if i % 2 else "4/4"
        body = " | ".join(bars[metre][j] for j in rng.integers(0, 5, 3)) + " | " + bars[metre][5]
        (folder / f"tune{i:02d}.abc").write_text(
            f"X:{i + 1}\nT:tune {i}\nM:{metre}\nL:1/8\nK:{['G', 'D', 'Em', 'F'][i % 4]}\n{body} |]\n")
    return folder


def test_generated_samples_take_a_training_melody_s_rhythm_and_say_which(tunes, tmp_path):
    from types import SimpleNamespace
    from chromasonic_lib import best
    from chromasonic_lib.data import prepare
    data = prepare(load_dataset(str(tunes)), 0.2, 0.2, 1)
    run = SimpleNamespace(model=_reading("gru", memory=True), data=data, output_dir=tmp_path,
                          configuration=SimpleNamespace(data=SimpleNamespace(seed=5)))
    cfg = SimpleNamespace(n_samples=3, sample_length=64, temperature=1.0, top_k=0, primer_notes=[])
    samples = best.generate_samples(run, cfg)
    assert [s.tokens for s in samples] == [s.tokens for s in best.generate_samples(run, cfg)]    # seeded
    train = set(data.splits.index["train"])
    for s in samples:
        k = int(s.rhythm.split("melody ")[1].split()[0])
        melody = data.data.notes[k]
        assert k in train and f"in the rhythm of melody {k} of {tunes} (a training melody)" in s.describe()
        assert s.tokens[0] == data.data.melodies[k][0] and len(s.tokens) == len(data.data.melodies[k])
        assert s.notes.durations.tolist() == melody.durations[melody.pitches >= 0].tolist()   # no rests here
        assert [e - b for _, b, e in _midi_notes(s.midi)] == [round(d * 480) for d in s.notes.durations]
    # A primer of pitch names has no rhythm: a training melody's, its key moved to fit the primer.
    [primed] = best.generate_samples(run, cfg, n=1, length=4, primer=[61, 63, 66])
    assert primed.tokens[:3] == [40, 42, 45] and len(primed.tokens) == 4
    assert in_key([61, 63, 66], primed.notes.context.keys[:3]).all()
    # A primer melody with a rhythm goes on in it, over and over.
    melody = data.data.notes[data.splits.index["val"][0]]
    [own] = best.generate_samples(run, cfg, n=1, length=3 * len(melody), primer=melody)
    assert own.rhythm.startswith("rhythm of the primer melody, 3 times over")
    assert own.notes.durations.tolist() == np.tile(melody.durations, 3).tolist()


def test_in_the_grid_a_context_model_takes_a_melody_s_bars_and_key_and_writes_its_own_durations(tunes, tmp_path):
    from types import SimpleNamespace
    from chromasonic_lib import best
    from chromasonic_lib.data import prepare
    data = prepare(load_dataset(str(tunes), "grid"), 0.2, 0.2, 1)
    model = build_model("gru", {"embedding_dim": 8, "hidden_size": 8, "context": "metre+key"}, data.vocab_size, seed=0)
    run = SimpleNamespace(model=model, data=data, output_dir=tmp_path,
                          configuration=SimpleNamespace(data=SimpleNamespace(seed=5)))
    cfg = SimpleNamespace(n_samples=1, sample_length=500, temperature=1.0, top_k=0, primer_notes=[])
    [s] = best.generate_samples(run, cfg)
    k = int(s.rhythm.split("melody ")[1].split()[0])
    assert s.rhythm.startswith("bars and key of melody") and len(s.tokens) == len(data.data.melodies[k])
    assert s.notes.durations.sum() == len(s.tokens) * 0.25            # the grid's own sixteenths


@pytest.mark.slow
def test_train_best_notebook_trains_a_context_model_from_its_study_and_writes_in_real_rhythms(tunes, tmp_path):
    import re
    import chromasonic_lib as cl
    from conftest import outputs_of, run_notebook
    storage, out = f"sqlite:///{tmp_path}/s.db", tmp_path / "best"
    space = {"models": {"gru": {"embedding_dim": 8, "hidden_size": 8, "context": list(ALL)}}}
    cl.run_search(cl.SearchConfig(study_name="tunes", storage=storage, output_dir=str(tmp_path / "search"),
                                  dataset=str(tunes), model="gru", search_space=space, n_trials=1, epochs=2,
                                  val_fraction=0.2, test_fraction=0.2, device="cpu", plot=False, live=False))
    nb = run_notebook("train_best", tmp_path / "train_best.ipynb", study_name="tunes", storage=storage,
                      output_dir=str(out), n_samples=2, sample_length=64)
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["params"]["context"] == list(ALL) and np.isfinite(metrics["test"]["nats_per_note"])
    assert torch.load(out / "model.pt", weights_only=True)["hparams"]["context"] == list(ALL)
    text = "".join(o.get("text", "") for o in outputs_of(nb))
    rhythms = [int(k) for k in re.findall(r"sample_\d: .* in the rhythm of melody (\d+) of ", text)]
    assert len(rhythms) == 2
    notes = load_dataset(str(tunes)).notes
    for i, k in enumerate(rhythms, 1):
        written = _midi_notes(out / f"sample_{i}.mid")
        assert [e - b for _, b, e in written] == [round(d * 480) for d in notes[k].durations]


def test_listen_test_statistics_count_bars_fermatas_keys_and_compare_histograms(tiny_score):
    from chromasonic_lib import melodystats
    from chromasonic_lib.data.encodings import Notes
    score = parse_score_file(tiny_score)[0]         # G (rest) A B(fermata) | F E D: 4/4, then 3/4
    stats = melodystats.statistics([score])
    assert stats["notes per melody"] == 6 and stats["fermata notes (%)"] == pytest.approx(100 * 2 / 6)
    assert stats["notes per bar"] == pytest.approx(6 / (7 / 4))       # 7 quarters in 4/4 bars, as it starts
    assert stats["in the given key (%)"] == 100 and stats["pitch range (semitones)"] == 71 - 62
    eighths = Notes(np.array([60, 61, 60], np.int16), np.full(3, 0.5, np.float32))     # no context
    assert np.isnan(melodystats.statistics([eighths])["fermata notes (%)"])
    assert melodystats.distances([score], [score]) == {"duration histogram distance": 0.0,
                                                       "interval histogram distance": 0.0}
    # A third of the score's notes are eighths, the rest longer.
    assert melodystats.distances([eighths], [score])["duration histogram distance"] == pytest.approx(2 / 3)
    table = melodystats.comparison_table([score], plain=[eighths])
    assert json.loads(melodystats.as_json(table))["plain"]["notes per bar"] is None


def test_a_key_the_score_does_not_write_is_read_from_the_notes_before_each_note_alone():
    import numpy as np

    from chromasonic_lib.data.keys import ALL_KEYS, heard_keys, relative_pair
    rng = np.random.default_rng(0)
    for candidates in (relative_pair(5), ALL_KEYS):
        pcs = rng.integers(-1, 12, 40)
        weights = rng.choice([0.5, 1.0, 2.0], 40)
        keys = heard_keys(pcs, weights, candidates)
        for t in (0, 7, 25):
            changed = pcs.copy()
            changed[t:] = rng.integers(-1, 12, 40 - t)          # note t and every one after it
            assert heard_keys(changed, weights, candidates)[: t + 1].tolist() == keys[: t + 1].tolist()
        assert keys[0] == candidates[0]                          # nothing heard: the major key
    # An A minor tune under a bare no-sharp signature is heard as A minor once its notes say so.
    assert heard_keys(np.array([9, 0, 4, 9, 8, 9]), np.ones(6), relative_pair(0)).tolist() == \
        [0] + [MINOR + 9] * 5
