"""Melodies as sound: FluidSynth's piano where it is installed, the additive synthesizer where not."""
from __future__ import annotations

import sys
import time
import wave

import mido
import numpy as np
import pytest

from chromasonic_lib import generate
from chromasonic_lib.data.encodings import REST, Notes
from conftest import fluidsynth_or_skip

BPM = 100.0
# Eight quarter notes with a quarter rest between: an onset every 1.2 s, each clearly separate.
PITCHES = [60, REST, 64, REST, 67, REST, 72, REST, 71, REST, 67, REST, 64, REST, 62]
SEPARATED = Notes(np.array(PITCHES, dtype=np.int16), np.ones(len(PITCHES), dtype=np.float32))


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
    start = time.perf_counter()
    audio = generate.render(notes, BPM)
    assert time.perf_counter() - start < 1.5          # about 0.1 s on one core
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
