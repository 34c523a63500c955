"""Musical context: what a score fixes about a note besides its pitch, as integer features.

IDyOM's best chorale system (Pearce 2005) predicts each pitch knowing the note's duration,
where it falls in the bar, whether it ends a phrase and the key. ``NoteContext`` holds those
attributes per note as the score gives them (parsed once, cached with the notes); the
functions here turn them into feature ids, one small vocabulary per feature
(``CONTEXT_FEATURES``), which the encodings align with their tokens and models embed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError

# Time signatures with a row block of their own in the metre feature; any other is "other".
METRES = ((4, 4), (3, 4), (2, 4), (2, 2), (3, 2), (4, 2), (6, 4), (6, 8), (3, 8), (9, 8), (12, 8))
POSITIONS = 32              # onset in the bar in sixteenths, 0..31 (a 4/2 bar fills them)
DURATION_CLASSES = range(-6, 8)     # round(2·log2(quarter notes)): a 32nd (-6) up to ~11 quarters (7)

# Each feature and its number of values (ids 0..n-1).
CONTEXT_FEATURES: dict[str, int] = {
    "duration": len(DURATION_CLASSES),          # the note's length, log-spaced (see duration_ids)
    "metre": (len(METRES) + 1) * POSITIONS,     # time signature × onset in the bar
    "phrase": 2,                                # 1: a fermata (or the melody's end) ends the note
    "key": 24,                                  # tonic pitch class + 12 for minor
}
MINOR = 12                  # key id of a minor key: its tonic's pitch class + 12


@dataclass
class NoteContext:
    """What the score fixes about each note before its pitch (aligned with ``Notes``' arrays,
    rests included)."""

    bar_offsets: np.ndarray     # float32: onset in the bar, quarter notes (a pickup's from the full bar's start)
    metres: np.ndarray          # int16 [T, 2]: time signature (numerator, denominator); 0, 0: none given
    phrase_ends: np.ndarray     # bool: a fermata (or the melody's end) ends the note
    keys: np.ndarray            # int8: tonic pitch class, + 12 (``MINOR``) in a minor mode

    def __len__(self) -> int:
        return len(self.bar_offsets)

    def take(self, rows) -> "NoteContext":
        return NoteContext(self.bar_offsets[rows], self.metres[rows], self.phrase_ends[rows],
                           self.keys[rows])

    @classmethod
    def neutral(cls, durations: np.ndarray) -> "NoteContext":
        """Context that says nothing about the pitch: 4/4 bars filled in order, C major, no
        fermata but at the end (the synthetic walks, which have no score)."""
        n = len(durations)
        onsets = np.cumsum(durations, dtype=np.float64) - durations
        ends = np.zeros(n, dtype=bool)
        ends[-1:] = True
        return cls((onsets % 4).astype(np.float32), np.tile(np.array([4, 4], np.int16), (n, 1)),
                   ends, np.zeros(n, dtype=np.int8))


def context_names(value: Any, name: str = "context") -> tuple[str, ...]:
    """The features a ``context`` setting names, in ``CONTEXT_FEATURES`` order.

    A list of names, or one string of names joined by ``+``, commas or spaces (what a search
    space's categorical choice can hold); empty, ``none`` or ``[]``: no context.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return ()
    items = value.replace("+", " ").replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{name} must be a list of context features "
                          f"({', '.join(CONTEXT_FEATURES)}), got {value!r}")
    unknown = [i for i in items if i not in CONTEXT_FEATURES]
    if unknown:
        raise ConfigError(f"{name}: {unknown[0]!r} is not a context feature; allowed: "
                          f"{', '.join(CONTEXT_FEATURES)} (got {value!r})")
    return tuple(f for f in CONTEXT_FEATURES if f in items)


def context_label(value: Any, name: str = "context") -> str:
    """A ``context`` setting as one string, its features joined by ``+`` in ``CONTEXT_FEATURES``
    order, or ``none``: the form a search space's categorical choice holds (Optuna's choices
    are strings or numbers, not lists)."""
    return "+".join(context_names(value, name)) or "none"


# Pitch classes of a key's scale above its tonic; the minor has both sevenths, since the
# chorales raise the leading note at cadences and keep the natural one in descending lines.
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10, 11)}


def in_key(pitches, keys) -> np.ndarray:
    """Whether each MIDI pitch is in the scale of its key id (tonic pitch class, + ``MINOR``)."""
    pitches, keys = np.asarray(pitches, np.int64), np.asarray(keys, np.int64)
    table = np.zeros((24, 12), dtype=bool)
    for tonic in range(12):
        for mode, offset in (("major", 0), ("minor", MINOR)):
            table[tonic + offset, [(tonic + step) % 12 for step in SCALES[mode]]] = True
    return table[keys, pitches % 12]


def duration_ids(durations: np.ndarray) -> np.ndarray:
    """Half-octave classes of the length: 2·log2 rounded, so plain and dotted values differ
    (1, 1.5, 2 quarters → 0, 1, 2); triplets fall in with the nearest dotted value."""
    steps = np.rint(2 * np.log2(np.maximum(np.asarray(durations, np.float64), 1e-3)))
    lowest, highest = DURATION_CLASSES[0], DURATION_CLASSES[-1]
    return (np.clip(steps, lowest, highest) - lowest).astype(np.int64)


def metre_ids(bar_offsets: np.ndarray, metres: np.ndarray) -> np.ndarray:
    """Time signature × onset in the bar in sixteenths: a downbeat in 3/4 and one in 4/4 are
    different rows, and so are the places of a 3/4 and a 6/8 bar (as long, beaten otherwise).
    Onsets between sixteenths (triplets) fall to the one before; past 31 to 31."""
    metres = np.asarray(metres, np.int64).reshape(-1, 2)
    code = [1000, 1]            # (numerator, denominator) as one number, to compare all at once
    known = (metres @ code)[:, None] == (np.array(METRES, np.int64) @ code)[None, :]
    blocks = np.where(known.any(1), known.argmax(1), len(METRES))
    positions = np.clip(np.floor(np.asarray(bar_offsets, np.float64) * 4 + 1e-6), 0, POSITIONS - 1)
    return blocks.reshape(-1) * POSITIONS + positions.astype(np.int64)


def bar_length(metres: np.ndarray) -> np.ndarray:
    """Quarter notes per bar of each time signature (inf where none is given)."""
    metres = np.asarray(metres, np.float64).reshape(-1, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        length = 4 * metres[:, 0] / metres[:, 1]
    return np.where(np.isfinite(length) & (length > 0), length, np.inf)


def feature_columns(names: Iterable[str], context: NoteContext, durations: np.ndarray) -> np.ndarray:
    """[T, len(names)] ids of the named features of notes with this context and these durations."""
    make = {"duration": lambda: duration_ids(durations),
            "metre": lambda: metre_ids(context.bar_offsets, context.metres),
            "phrase": lambda: context.phrase_ends.astype(np.int64),
            "key": lambda: context.keys.astype(np.int64)}
    columns = [make[n]() for n in names]
    return np.stack(columns, 1) if columns else np.zeros((len(durations), 0), np.int64)


def transpose_keys(keys, shifts):
    """Key ids moved by ``shifts`` semitones (the tonic moves, the mode stays); tensors or arrays."""
    return keys - keys % 12 + (keys % 12 + shifts) % 12
