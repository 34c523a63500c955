"""Sampling one token at a time as the full forward pass would, and melodies as sound: FluidSynth's
piano where it is installed, the additive synthesizer where not."""
from __future__ import annotations

import sys
import time
import wave

import mido
import numpy as np
import pytest
import torch

from chromasonic_lib import generate
from chromasonic_lib.models import Ensemble, build_model
from chromasonic_lib.data.encodings import REST, Notes
from conftest import fluidsynth_or_skip

BPM = 100.0
# Eight quarter notes with a quarter rest between: an onset every 1.2 s, each clearly separate.
PITCHES = [60, REST, 64, REST, 67, REST, 72, REST, 71, REST, 67, REST, 64, REST, 62]
SEPARATED = Notes(np.array(PITCHES, dtype=np.int16), np.ones(len(PITCHES), dtype=np.float32))


V = 12              # a small vocabulary: contexts recur, so the memory has something to count
SMALL = {"rnn": {"embedding_dim": 16, "hidden_size": 24, "num_layers": 2},
         "transformer": {"d_model": 32, "nhead": 4, "num_layers": 2, "dim_feedforward": 64},
         "markov": {"order": 2}}
FAMILIES = ["rnn", "lstm", "gru", "transformer", "markov"]


def melodies() -> torch.Tensor:
    """Three random 40-note melodies [3, 40], each singing notes 2-17 again at 20-35."""
    x = torch.randint(0, V, (3, 40), generator=torch.Generator().manual_seed(0))
    x[:, 20:36] = x[:, 2:18]
    return x


def small_model(name: str, memory_order: int = 0, seed: int = 0) -> torch.nn.Module:
    hparams = {**SMALL.get(name, SMALL["rnn"]), "memory_order": memory_order}
    model = build_model(name, hparams, V, seed=seed)
    if name == "markov":
        x = melodies()
        model.fit(x, torch.full((len(x),), x.shape[1]))
    return model.eval()


def small_ensemble() -> Ensemble:
    return Ensemble([small_model("lstm", 3), small_model("transformer"), small_model("markov", 2)]).eval()


CASES = [(name, order) for name in FAMILIES for order in (0, 3)] + [("ensemble", 0)]


def case_model(name: str, memory_order: int) -> torch.nn.Module:
    return small_ensemble() if name == "ensemble" else small_model(name, memory_order)


@pytest.mark.parametrize("name, memory_order", CASES)
@torch.no_grad()
def test_stepping_gives_the_full_forward_pass_distribution_at_every_step(name, memory_order):
    model, x = case_model(name, memory_order), melodies()
    inputs = torch.cat([torch.full((len(x), 1), V), x[:, :-1]], 1)   # the start token, then notes
    full = torch.log_softmax(model(inputs).float(), -1)
    state, steps = model.start(len(x)), []
    for t in range(inputs.shape[1]):
        out, state = model.step(state, inputs[:, t])
        steps.append(torch.log_softmax(out.float(), -1))
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, memory_order", CASES)
def test_incremental_sampling_draws_the_full_prefix_samplers_melody(name, memory_order):
    model = case_model(name, memory_order)
    for primer, top_k in (([], 0), ([3, 5, 7, 3, 5], 4)):
        melodies = [generate.sample(model, primer, 60, 0.8, top_k, torch.Generator().manual_seed(1),
                                    incremental=incremental) for incremental in (True, False)]
        assert melodies[0] == melodies[1]
        assert len(melodies[0]) == 60 and melodies[0][:len(primer)] == primer


def test_incremental_sampling_reads_each_token_once(monkeypatch):
    model, calls = small_model("lstm", 3), []
    step = model.step
    monkeypatch.setattr(model, "step", lambda state, tokens: calls.append(tokens) or step(state, tokens))
    monkeypatch.setattr(model, "forward", lambda x: pytest.fail("the whole prefix was run"))
    tokens = generate.sample(model, [3, 5], 50)
    assert [int(t) for t in calls] == [V] + tokens[:-1]


def _write(tmp_path, notes: Notes) -> tuple[mido.MidiFile, np.ndarray]:
    midi = mido.MidiFile(str(generate.write_midi(tmp_path / "m.mid", notes, BPM)))
    with wave.open(str(generate.write_wav(tmp_path / "m.wav", notes, BPM))) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, generate.SAMPLE_RATE)
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768
    return midi, audio


def note_starts(midi: mido.MidiFile) -> list[float]:
    """Seconds at which the MIDI file's notes start."""
    t, starts = 0.0, []
    for msg in midi:                       # iterating a MidiFile gives delta times in seconds
        t += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            starts.append(t)
    return starts


def onsets(audio: np.ndarray, sr: int = generate.SAMPLE_RATE, frame: float = 0.01) -> list[float]:
    """Starts of the 10 ms frames whose level jumps more than 10 dB above the frame before, within
    30 dB of the loudest; a jump within 100 ms of the last onset belongs to that note's attack."""
    hop = int(sr * frame)
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    level = 10 * np.log10((frames.astype(np.float64) ** 2).mean(1) + 1e-12)
    rise = np.diff(level, prepend=-120.0)
    found: list[float] = []
    for t in np.flatnonzero((rise > 10) & (level > level.max() - 30)) * hop / sr:
        if not found or t - found[-1] > 0.1:
            found.append(float(t))
    return found


def assert_onsets_match(audio: np.ndarray, midi: mido.MidiFile, tolerance: float = 0.05):
    expected, found = note_starts(midi), onsets(audio)
    assert len(found) == len(expected), f"onsets at {found}, notes at {expected}"
    assert np.abs(np.array(found) - np.array(expected)).max() <= tolerance, (found, expected)


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt((audio ** 2).mean()))


def test_fluidsynth_plays_the_midi_file_on_a_piano(tmp_path):
    version = fluidsynth_or_skip()
    assert generate.audio_source() == f"FluidSynth {version} with TimGM6mb.sf2 (General MIDI piano)"
    midi, audio = _write(tmp_path, SEPARATED)
    seconds = len(audio) / generate.SAMPLE_RATE
    assert midi.length == pytest.approx(15 * 0.6)
    # The notes, then a second for the release and reverb (the additive synthesizer adds 0.25 s).
    assert midi.length + 0.9 <= seconds <= midi.length + 1.05
    assert rms(audio) > 0.05
    assert_onsets_match(audio, midi)


def test_fluidsynth_renders_a_64_note_melody_quickly():
    fluidsynth_or_skip()
    rng = np.random.default_rng(0)
    notes = Notes(rng.integers(55, 80, 64).astype(np.int16), np.full(64, 0.5, dtype=np.float32))
    start = time.process_time()     # CPU time: CI runs other heavy tests beside this one
    audio = generate.render(notes, BPM)
    assert time.process_time() - start < 1.5          # about 0.1 s on one core
    assert len(audio) / generate.SAMPLE_RATE == pytest.approx(64 * 0.3 + 1, abs=0.01)


def test_without_fluidsynth_the_additive_synthesizer_renders(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fluidsynth", None)       # `import fluidsynth` now fails
    assert generate.fluidsynth_version() is None
    assert generate.audio_source() == "additive synthesizer (FluidSynth not installed)"
    midi, audio = _write(tmp_path, SEPARATED)
    assert (tmp_path / "m.wav").read_bytes() == generate.wav_bytes(generate.synthesize(SEPARATED, BPM))
    assert len(audio) / generate.SAMPLE_RATE == pytest.approx(midi.length + 0.25, abs=0.01)
    assert rms(audio) > 0.05
    assert_onsets_match(audio, midi)


def test_a_melody_of_rests_is_silence_as_long_as_the_rests(monkeypatch):
    rests = Notes(np.array([REST, REST], dtype=np.int16), np.ones(2, dtype=np.float32))
    for hide in (False, True):
        if hide:
            monkeypatch.setitem(sys.modules, "fluidsynth", None)
        audio = generate.render(rests, BPM)
        assert not audio.any() and len(audio) == int(generate.SAMPLE_RATE * 1.2) + generate.SAMPLE_RATE // 4


def test_a_melody_with_its_score_s_context_writes_its_bars_and_key_into_the_midi_file(tmp_path):
    """A 3/4 melody in G major with a one-beat pickup that ends in A minor: a notation program
    reading the file shows a 1/4 bar, then 3/4 bars, and the two keys where they start."""
    import music21
    from chromasonic_lib.data.context import NoteContext
    context = NoteContext(np.array([2, 0, 1, 2, 0], np.float32), np.tile(np.array([3, 4], np.int16), (5, 1)),
                          np.array([0, 0, 0, 0, 1], bool), np.array([7, 7, 7, 7, 12 + 9], np.int8))
    notes = Notes(np.array([62, 67, REST, 71, 69], np.int16), np.array([1, 1, 1, 1, 3], np.float32), context)
    path = generate.write_midi(tmp_path / "m.mid", notes)
    meta, now = [], 0
    for msg in mido.MidiFile(str(path)).tracks[0]:
        now += msg.time
        if msg.type == "time_signature":
            meta.append((now, f"{msg.numerator}/{msg.denominator}"))
        elif msg.type == "key_signature":
            meta.append((now, msg.key))
    assert meta == [(0, "1/4"), (0, "G"), (480, "3/4"), (4 * 480, "Am")]
    assert generate.read_midi_pitches(path) == [62, 67, 71, 69]       # the notes as before
    bars = music21.converter.parse(str(path)).parts[0].getElementsByClass("Measure")
    assert [b.barDuration.quarterLength for b in bars] == [1, 3, 3]
    # Without a score's context (a pitch-only sample): no signatures, as before.
    plain = generate.write_midi(tmp_path / "p.mid", Notes(notes.pitches, notes.durations))
    assert not [m for m in mido.MidiFile(str(plain)).tracks[0] if m.type in ("time_signature", "key_signature")]


def test_a_wide_melody_s_piano_roll_labels_do_not_overlap():
    import matplotlib.pyplot as plt
    from chromasonic_lib.data import Notes
    from chromasonic_lib.generate import piano_roll_figure
    for pitches in (range(30, 100, 3), range(60, 73)):     # five octaves, and one
        p = np.array(list(pitches), dtype=np.int16)
        fig = piano_roll_figure(Notes(p, np.ones(len(p), dtype=np.float32)))
        fig.canvas.draw()
        boxes = sorted((t.get_window_extent() for t in fig.axes[0].get_yticklabels()), key=lambda b: b.y0)
        assert len(boxes) >= 2 and all(a.y1 <= b.y0 for a, b in zip(boxes, boxes[1:]))
        plt.close(fig)
