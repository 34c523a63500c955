"""Making music from a trained model: sampling, MIDI and WAV files, piano rolls.

A model that reads musical context samples in the rhythm of a real melody: each note it
generates is told that melody's note's duration, place in the bar, phrase end and key, and
the notes it writes keep those durations (``rhythm_context``, ``Encoding.decode``).

WAV audio is the MIDI file played by FluidSynth with the General MIDI piano of the soundfont
that ships inside pretty_midi; where the FluidSynth library isn't installed, a small additive
synthesizer (a few harmonics under a piano-like envelope, in numpy) stands in.
"""
from __future__ import annotations

import ctypes
import dataclasses
import io
import itertools
import wave
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write
from .data.context import MINOR, bar_length, in_key, transpose_keys
from .data.encodings import REST, Encoding, Notes, midi_name
from .errors import ConfigError
from .pyplot import plt

SAMPLE_RATE = 22050      # FluidSynth renders at any rate from 8 kHz up; this one keeps WAVs small
SOUNDFONT = "TimGM6mb.sf2"   # a General MIDI soundfont inside pretty_midi's wheel (6 MB)


@torch.no_grad()
def sample(model: torch.nn.Module, primer: list[int], length: int, temperature: float = 1.0,
           top_k: int = 0, generator: torch.Generator | None = None,
           incremental: bool = True, context: dict[str, torch.Tensor] | None = None) -> list[int]:
    """Continue ``primer`` (tokens; may be empty) until the melody has ``length`` tokens.

    The model reads the start token (its ``vocab_size``) before the primer, as in training,
    so an empty primer samples the first note too. ``incremental`` reads each token once
    (``model.step``; linear time); otherwise, or for a model without ``step``, the whole melody
    so far is run again for every note (quadratic or worse; the same distributions).

    A model that reads context (its ``context``) needs ``context``: each feature it reads →
    ids [T] of tokens 0..T-1 (``rhythm_context``). The step that predicts token t reads token
    t's, as in training, and the melody ends at T tokens where ``length`` is longer.
    """
    model.eval()
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    if getattr(model, "context", ()):
        context = _checked_context(model, context, device)
        length = min(length, min(len(ids) for ids in context.values()))
    else:
        context = None          # a model without context is called as it always was
    predict = _stepwise(model, device, context) if incremental and hasattr(model, "step") else \
        _full_prefix(model, device, context)
    tokens = list(primer)
    while len(tokens) < length:
        logits = predict(tokens).float() / temperature
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, -1).cpu()
        tokens.append(int(torch.multinomial(probs, 1, generator=generator)))
    return tokens


def _checked_context(model: torch.nn.Module, context: dict | None, device) -> dict[str, torch.Tensor]:
    missing = [n for n in model.context if n not in (context or {})]
    if missing:
        raise ConfigError(f"this model reads the context {'+'.join(model.context)} of each note and "
                          f"sampling was given {'+'.join(context or ()) or 'none'}: give the rhythm "
                          f"of a melody (generate.rhythm_context)")
    return {n: torch.as_tensor(context[n], dtype=torch.long, device=device).reshape(-1)
            for n in model.context}


def _full_prefix(model: torch.nn.Module, device: torch.device, context: dict | None):
    """The model's scores for the next token, from the whole melody so far run again."""
    def predict(tokens: list[int]) -> torch.Tensor:
        x = torch.tensor([[model.vocab_size] + tokens], device=device)
        if context is None:
            return model(x)[0, -1]
        return model(x, {n: ids[None, :x.shape[1]] for n, ids in context.items()})[0, -1]
    return predict


def _stepwise(model: torch.nn.Module, device: torch.device, context: dict | None = None):
    """A function from the melody so far to the model's scores for its next token that reads
    only the tokens it has not read yet (the melody only grows)."""
    state, read, out = model.start(1), 0, None     # read: tokens read, the start token first

    def predict(tokens: list[int]) -> torch.Tensor:
        nonlocal state, read, out
        while read <= len(tokens):
            token = torch.tensor([tokens[read - 1] if read else model.vocab_size], device=device)
            if context is None:
                out, state = model.step(state, token)
            else:           # the step after token read-1 predicts token read: its context
                out, state = model.step(state, token, {n: ids[read:read + 1] for n, ids in context.items()})
            read += 1
        return out[0]
    return predict


def rhythm_context(model: torch.nn.Module, encoding: Encoding, rhythm: Notes) -> dict[str, torch.Tensor]:
    """The context ``model`` reads of each token of ``rhythm`` (a melody's notes with their
    context) as ``encoding`` gives it: what ``sample`` needs to write in that rhythm."""
    names = getattr(model, "context", ())
    if rhythm.context is None:
        raise ConfigError("the rhythm melody has no context (only notes parsed from a score or "
                          "the synthetic walks have it)")
    missing = [n for n in names if n not in encoding.context_features]
    if missing:
        raise ConfigError(f"the model reads the context {missing[0]!r}, which the {encoding.name} "
                          f"encoding does not give (it gives {', '.join(encoding.context_features)})")
    ids = encoding.encode_context(rhythm)
    return {n: torch.from_numpy(ids[:, encoding.context_features.index(n)]) for n in names}


def key_shift(primer: list[int], key: int) -> int:
    """Semitones to move key id ``key`` so that most notes of ``primer`` (MIDI numbers) are in
    its scale; the smallest such move, 0 where they fit already (or there are none)."""
    shifts = sorted(range(-5, 7), key=lambda s: (abs(s), s))      # 0, -1, 1, -2, 2, ... 6
    fits = [int(in_key(primer, np.full(len(primer), transpose_keys(key, s))).sum()) for s in shifts]
    return shifts[int(np.argmax(fits))]


def move_key(notes: Notes, shift: int) -> Notes:
    """``notes`` whose context's key is moved ``shift`` semitones (the pitches stay)."""
    if not shift:
        return notes
    keys = transpose_keys(notes.context.keys.astype(np.int64), shift).astype(np.int8)
    return Notes(notes.pitches, notes.durations, dataclasses.replace(notes.context, keys=keys))


def repeat_rhythm(notes: Notes, copies: int) -> Notes:
    """``notes`` sung ``copies`` times over: a short melody's rhythm long enough to write a
    longer one in. Each copy starts in the bar where the one before ended: a melody of whole
    bars (a pickup's made up by the last bar) repeats as it is, one of three beats in 4/4
    moves a beat further each time."""
    if copies <= 1:
        return notes
    c = notes.context
    bars = bar_length(c.metres)
    end = np.fmod(float(c.bar_offsets[-1]) + float(notes.durations[-1]), bars[-1])
    gap = np.mod(end - float(c.bar_offsets[0]), bars[0])       # 0 for whole bars
    offsets = np.concatenate([np.mod(c.bar_offsets + j * gap, bars) for j in range(copies)])
    context = dataclasses.replace(c.take(np.tile(np.arange(len(notes)), copies)),
                                  bar_offsets=offsets.astype(np.float32))
    return Notes(np.tile(notes.pitches, copies), np.tile(notes.durations, copies), context)


# How MIDI key signatures (mido's names) spell each tonic pitch class, major and minor.
MAJOR_KEYS = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_KEYS = ("Cm", "C#m", "Dm", "Ebm", "Em", "Fm", "F#m", "Gm", "G#m", "Am", "Bbm", "Bm")


def notes_to_midi_bytes(notes: Notes, bpm: float = 100.0, program: int = 0) -> bytes:
    """A one-track MIDI file (480 ticks per quarter note); where the notes carry their score's
    context (a parsed melody, or a sample written in one's rhythm), its time and key signatures
    too, so that a notation program shows the bars and the key."""
    import mido
    tpq = 480
    onsets = np.concatenate([[0.0], np.cumsum(notes.durations, dtype=np.float64)[:-1]])
    events = [(0, 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))),
              (0, 0, mido.Message("program_change", program=program))]
    events += [(int(round(at * tpq)), 1, msg) for at, msg in _signatures(notes, onsets)]
    for pitch, start, dur in zip(notes.pitches.tolist(), onsets.tolist(), notes.durations.tolist()):
        if pitch != REST:     # at one tick: the note that ends, the signatures, the next note
            on = int(round(start * tpq))
            events += [(on, 2, mido.Message("note_on", note=int(pitch), velocity=80)),
                       (on + int(round(dur * tpq)), 0, mido.Message("note_off", note=int(pitch), velocity=0))]
    track, now = mido.MidiTrack(), 0
    for tick, _, msg in sorted(events, key=lambda e: e[:2]):
        track.append(msg.copy(time=tick - now))
        now = tick
    mid = mido.MidiFile(ticks_per_beat=tpq)
    mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def _signatures(notes: Notes, onsets: np.ndarray) -> list:
    """(quarter notes from the start, MIDI meta message): a time signature where one is given
    and where it changes, the key where it changes. A melody that starts inside a bar (a
    pickup) opens with a bar of the pickup's length, as notation programs write one."""
    import mido
    c = notes.context
    if c is None or not len(notes):
        return []
    out, metre, key = [], None, None
    for i, at in enumerate(onsets.tolist()):
        if c.metres[i][0] > 0 and tuple(c.metres[i]) != metre:
            metre = tuple(int(v) for v in c.metres[i])
            pickup = _pickup_bar(c) if i == 0 else None
            if pickup:
                out.append((at, mido.MetaMessage("time_signature", numerator=pickup[1], denominator=pickup[2])))
            out.append((at + (pickup[0] if pickup else 0), mido.MetaMessage(
                "time_signature", numerator=metre[0], denominator=metre[1])))
        if int(c.keys[i]) != key:
            key = int(c.keys[i])
            name = MINOR_KEYS[key % 12] if key >= MINOR else MAJOR_KEYS[key]
            out.append((at, mido.MetaMessage("key_signature", key=name)))
    return out


def _pickup_bar(c) -> tuple[float, int, int] | None:
    """(quarter notes, numerator, denominator) of the bar a melody that starts inside its first
    bar opens with: the shortest /4, /8 or /16 bar that holds the pickup exactly; else None."""
    offset = float(c.bar_offsets[0])
    pickup = float(bar_length(c.metres[0])[0]) - offset
    if offset <= 0 or pickup <= 0:
        return None
    den = next((d for d in (4, 8, 16) if float(pickup * d / 4).is_integer()), 0)
    return (pickup, int(pickup * den / 4), den) if den else None


def read_midi_pitches(path: str | Path) -> list[int]:
    """The note-on pitches of a MIDI file in order (to check what was written)."""
    import mido
    return [m.note for m in mido.MidiFile(str(path)) if m.type == "note_on" and m.velocity > 0]


def synthesize(notes: Notes, bpm: float = 100.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 audio in [-1, 1]: each note a decaying tone with a few harmonics."""
    seconds_per_quarter = 60.0 / bpm
    total = int(sr * float(notes.durations.sum()) * seconds_per_quarter) + sr // 4
    out = np.zeros(total, dtype=np.float64)
    t0 = 0.0
    for pitch, dur in zip(notes.pitches.tolist(), notes.durations.tolist()):
        seconds = dur * seconds_per_quarter
        if pitch != REST:
            n = int(seconds * sr) + sr // 10          # a short release past the note's end
            t = np.arange(n) / sr
            freq = 440.0 * 2 ** ((pitch - 69) / 12)
            tone = sum(a * np.sin(2 * np.pi * freq * k * t) for k, a in ((1, 1.0), (2, 0.4), (3, 0.2)))
            env = np.minimum(1.0, t / 0.01) * np.exp(-3.0 * t)
            env[int(seconds * sr):] *= np.linspace(1, 0, n - int(seconds * sr))
            start = int(t0 * sr)
            out[start:start + n] += (tone * env)[: total - start]
        t0 += seconds
    peak = np.abs(out).max()
    return (out / peak * 0.8 if peak > 0 else out).astype(np.float32)


def fluidsynth_version() -> str | None:
    """The FluidSynth library's version ("2.3.1"), or None where it (or pyfluidsynth) isn't installed."""
    try:
        import fluidsynth      # pyfluidsynth raises ImportError when it finds no libfluidsynth
    except (ImportError, OSError):
        return None
    version = [ctypes.c_int() for _ in range(3)]
    fluidsynth.fluid_version(*version)
    return ".".join(str(v.value) for v in version)


def audio_source() -> str:
    """What ``write_wav`` renders with on this machine, in words (for descriptions and metrics)."""
    version = fluidsynth_version()
    if version is None:
        return "additive synthesizer (FluidSynth not installed)"
    return f"FluidSynth {version} with {SOUNDFONT} (General MIDI piano)"


def fluidsynth_render(notes: Notes, bpm: float = 100.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 audio in [-1, 1]: the melody's MIDI file played by FluidSynth on the General
    MIDI piano, then a second for the last note's release and the reverb to fade."""
    import pretty_midi
    if not (notes.pitches != REST).any():
        return synthesize(notes, bpm, sr)        # silence as long as the rests (pretty_midi gives none)
    midi = pretty_midi.PrettyMIDI(io.BytesIO(notes_to_midi_bytes(notes, bpm)))
    soundfont = Path(pretty_midi.__file__).with_name(SOUNDFONT)
    audio = midi.fluidsynth(fs=sr, synthesizer=str(soundfont))     # left channel, peak 1
    return (audio * 0.8).astype(np.float32)      # the additive synthesizer's peak


def render(notes: Notes, bpm: float = 100.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The melody's audio: FluidSynth where installed, else the additive synthesizer."""
    if fluidsynth_version() is None:
        return synthesize(notes, bpm, sr)
    return fluidsynth_render(notes, bpm, sr)


def wav_bytes(audio: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def write_midi(path: str | Path, notes: Notes, bpm: float = 100.0) -> Path:
    return atomic_write(path, notes_to_midi_bytes(notes, bpm))


def write_wav(path: str | Path, notes: Notes, bpm: float = 100.0) -> Path:
    """The melody as a 16-bit mono WAV file, rendered as ``audio_source()`` says."""
    return atomic_write(path, wav_bytes(render(notes, bpm)))


PIANO_ROLL_SIZE = (9, 2.8)       # inches


def piano_roll_figure(notes: Notes, title: str = "", ax=None):
    """Notes as horizontal bars: time in quarter notes across, pitch up; on ``ax`` if given,
    else on a new pyplot figure of ``PIANO_ROLL_SIZE``."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=PIANO_ROLL_SIZE)
    starts = np.concatenate([[0], np.cumsum(notes.durations)[:-1]])
    keep = notes.pitches != REST
    ax.barh(notes.pitches[keep], notes.durations[keep] * 0.95, left=starts[keep], height=0.8,
            color="tab:purple")
    if keep.any():
        lo, hi = int(notes.pitches[keep].min()), int(notes.pitches[keep].max())
        ax.set_ylim(lo - 1.5, hi + 1.5)
        ticks = _pitch_ticks(lo, hi, _label_room(ax))
        ax.set_yticks(ticks, [midi_name(p) for p in ticks])
    ax.set_xlabel("time (quarter notes)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _label_room(ax) -> int:
    """How many tick labels fit one above the other on ``ax`` without touching."""
    from matplotlib.font_manager import FontProperties
    height_pt = ax.get_position().height * ax.figure.get_figheight() * 72
    label_pt = FontProperties(size=plt.rcParams["ytick.labelsize"]).get_size_in_points()
    return max(2, int(height_pt / (label_pt * 1.6)))


def _pitch_ticks(lo: int, hi: int, room: int) -> list[int]:
    """The pitches to label between ``lo`` and ``hi``: every C, E and G, or fewer (every C,
    every other C, ...) until they fit in ``room`` labels."""
    for period, marks in ((12, (0, 4, 7)), (12, (0,)), (24, (0,)), (36, (0,)), (48, (0,))):
        ticks = [p for p in range(lo - 1, hi + 2) if p % period in marks]
        if len(ticks) <= room:
            return ticks
    return [lo, hi]


def primer_tokens(encoding: Encoding, midi_notes: list[int]) -> list[int]:
    """MIDI numbers of a primer as tokens (a quarter note each in the grid encoding)."""
    if not midi_notes:
        return []
    notes = Notes(np.array(midi_notes, dtype=np.int16), np.ones(len(midi_notes), dtype=np.float32))
    return encoding.encode(notes).tolist()
