"""Encodings: how a melody (notes with durations) becomes integer tokens and back.

Every encoding keeps the same convention, so models, training and augmentation never need
to know which one they were given: tokens 0–87 are the piano keys (MIDI 21–108) and any
extra tokens (hold, rest, ...) come after them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .context import NoteContext, bar_length, feature_columns

LOWEST_MIDI = 21            # A0, the piano's lowest key
N_KEYS = 88                 # tokens 0..87 are always piano keys in every encoding
REST = -1                   # pitch value of a rest in a raw melody


@dataclass
class Notes:
    """A raw melody: MIDI pitches (``REST`` for a rest) and durations in quarter notes, and
    what the score fixes about each note besides its pitch (None where there is no score)."""

    pitches: np.ndarray     # int16
    durations: np.ndarray   # float32
    context: NoteContext | None = None

    def __len__(self) -> int:
        return len(self.pitches)


def fold_into_keyboard(midi: np.ndarray) -> np.ndarray:
    """Move notes outside the piano (below A0, above C8) by whole octaves into it."""
    midi = np.asarray(midi, dtype=np.int64).copy()
    low, high = LOWEST_MIDI, LOWEST_MIDI + N_KEYS - 1
    below = midi < low
    midi[below] += 12 * np.ceil((low - midi[below]) / 12).astype(np.int64)
    above = midi > high
    midi[above] -= 12 * np.ceil((midi[above] - high) / 12).astype(np.int64)
    return midi


class Encoding:
    """Interface: ``encode`` notes → tokens, ``decode`` tokens → notes, ``vocab_size``;
    ``encode_context`` notes → the ``context_features`` of each token (see ``context``)."""

    name: str
    vocab_size: int
    context_features: tuple[str, ...] = ()

    def encode(self, notes: Notes) -> np.ndarray:
        raise NotImplementedError

    def encode_context(self, notes: Notes) -> np.ndarray:
        """[T, len(context_features)] feature ids aligned with ``encode(notes)``."""
        raise NotImplementedError

    def token_times(self, notes: Notes) -> tuple[np.ndarray, np.ndarray]:
        """Onset (from the melody's first note) and duration of each token of ``encode(notes)``,
        in quarter notes."""
        raise NotImplementedError

    def decode(self, tokens, rhythm: Notes | None = None) -> Notes:
        """The notes of ``tokens``; with ``rhythm`` (the melody whose context a model sampled
        them with, see ``generate.rhythm_context``) in that melody's rhythm where the tokens
        have none of their own."""
        raise NotImplementedError

    def describe_token(self, token: int) -> str:
        return midi_name(int(token) + LOWEST_MIDI) if token < N_KEYS else f"<{token}>"


class PitchEncoding(Encoding):
    """The original script's encoding: one token per sounding note, its piano key; rests and rhythm dropped."""

    name = "pitch"
    vocab_size = N_KEYS
    note_length = 0.5       # decoded notes are eighths: the encoding has no rhythm
    context_features = ("duration", "metre", "phrase", "key")

    def encode(self, notes: Notes) -> np.ndarray:
        pitches = notes.pitches[notes.pitches != REST]
        return (fold_into_keyboard(pitches) - LOWEST_MIDI).astype(np.int16)

    def encode_context(self, notes: Notes) -> np.ndarray:
        sounding = notes.pitches != REST
        return feature_columns(self.context_features, notes.context.take(sounding),
                               notes.durations[sounding])

    def token_times(self, notes: Notes) -> tuple[np.ndarray, np.ndarray]:
        onsets = np.cumsum(notes.durations, dtype=np.float64) - notes.durations     # rests take time too
        sounding = notes.pitches != REST
        return onsets[sounding], notes.durations[sounding].astype(np.float64)

    def decode(self, tokens, rhythm: Notes | None = None) -> Notes:
        """Eighth notes; with ``rhythm``, its sounding notes in order, each with the next
        token's pitch (its rests between them kept, its context too)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if rhythm is None:
            return Notes((tokens + LOWEST_MIDI).astype(np.int16),
                         np.full(len(tokens), self.note_length, dtype=np.float32))
        sounding = np.flatnonzero(rhythm.pitches != REST)
        if len(tokens) > len(sounding):
            raise DataError(f"{len(tokens)} tokens are more notes than the rhythm's {len(sounding)}")
        rows = np.arange(sounding[0], sounding[len(tokens) - 1] + 1) if len(tokens) else sounding[:0]
        pitches = rhythm.pitches[rows].copy()
        pitches[pitches != REST] = tokens + LOWEST_MIDI
        return Notes(pitches, rhythm.durations[rows].copy(),
                     None if rhythm.context is None else rhythm.context.take(rows))


class GridEncoding(Encoding):
    """Rhythm-aware: one token per sixteenth note — a new note at key p (0–87), hold (88) or rest (89)."""

    name = "grid"
    HOLD = N_KEYS
    REST_TOKEN = N_KEYS + 1
    vocab_size = N_KEYS + 2
    step = 0.25             # quarter notes per grid step (a sixteenth)
    # Each step's place in the bar and key. Not the sounding note's duration or phrase end:
    # they change where a new note starts, so they would tell whether the step is a hold.
    context_features = ("metre", "key")

    def _steps(self, notes: Notes) -> np.ndarray:
        return np.maximum(1, np.rint(notes.durations / self.step)).astype(np.int64)

    def encode_context(self, notes: Notes) -> np.ndarray:
        steps = self._steps(notes)
        starts = np.concatenate([[0], np.cumsum(steps)[:-1]])
        owner = np.repeat(np.arange(len(notes)), steps)     # the note (or rest) at each step
        ctx = notes.context.take(owner)
        # A note held over the bar line wraps into the next bar (taken to be of the same metre).
        later = (np.arange(len(owner)) - starts[owner]) * self.step
        ctx.bar_offsets = np.fmod(ctx.bar_offsets + later, bar_length(ctx.metres)).astype(np.float32)
        sounding = np.flatnonzero(notes.pitches != REST)
        first = starts[sounding[0]] if len(sounding) else len(owner)     # as encode: from the first note
        return feature_columns(self.context_features, ctx.take(slice(first, None)),
                               np.full(len(owner) - first, self.step))

    def token_times(self, notes: Notes) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.encode(notes))     # one step each, from the first note on
        return np.arange(n) * self.step, np.full(n, self.step)

    def encode(self, notes: Notes) -> np.ndarray:
        steps = self._steps(notes)
        is_rest = notes.pitches == REST
        heads = np.where(is_rest, self.REST_TOKEN,
                         fold_into_keyboard(np.where(is_rest, 60, notes.pitches)) - LOWEST_MIDI)
        tails = np.where(is_rest, self.REST_TOKEN, self.HOLD)
        out = np.repeat(tails, steps)
        starts = np.concatenate([[0], np.cumsum(steps)[:-1]])
        out[starts] = heads
        # A melody starts at its first note: leading rests carry nothing to predict.
        first = np.flatnonzero(out < N_KEYS)
        return out[first[0]:].astype(np.int16) if len(first) else out[:0].astype(np.int16)

    def decode(self, tokens, rhythm: Notes | None = None) -> Notes:
        """Sixteenth steps, each note held as its hold tokens say: the tokens are the rhythm
        (a ``rhythm`` gave the sampler metre and key only, and changes nothing here)."""
        pitches, durations = [], []
        for t in np.asarray(tokens, dtype=np.int64):
            if t < N_KEYS:
                pitches.append(int(t) + LOWEST_MIDI)
                durations.append(self.step)
            elif t == self.HOLD and pitches:
                durations[-1] += self.step
            elif t == self.REST_TOKEN and pitches and pitches[-1] == REST:
                durations[-1] += self.step
            else:               # a rest, or a hold with nothing to hold
                pitches.append(REST)
                durations.append(self.step)
        return Notes(np.array(pitches, dtype=np.int16), np.array(durations, dtype=np.float32))

    def describe_token(self, token: int) -> str:
        return {self.HOLD: "hold", self.REST_TOKEN: "rest"}.get(int(token)) or \
            super().describe_token(token)


class TokenVocabulary(Encoding):
    """Tokens as a caller gives them (the original API's lists): ``vocab_size`` ids, no notes behind them.

    Not an encoding of notes (``encode``/``decode`` are not defined) and not one of
    ``ENCODINGS``: it only tells models and files how many tokens there are.
    """

    name = "tokens"

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def describe_token(self, token: int) -> str:
        return f"<{int(token)}>"


ENCODINGS = {"pitch": PitchEncoding, "grid": GridEncoding}


def get_encoding(name: str) -> Encoding:
    return ENCODINGS[name]()


_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def midi_name(midi: int) -> str:
    """60 → 'C4'."""
    return f"{_NAMES[midi % 12]}{midi // 12 - 1}"
