"""Each note's key, read causally: what the score writes (a key with its mode), else inferred
from the notes *before* the note (never the note itself, nor any after it).

A model that reads the key of the note it predicts must not be told something computed from
that note or the melody's end: the final note decides a melody's mode, so a mode read from it
tells the model at note 1 where the melody goes. IDyOM's key comes from the score's annotation,
which is fair; an inference from the notes to come is not.

Where the score gives a bare key signature (MusicXML without ``<mode>``: the music21 Bach
chorales), the choice is between the signature's major key and its relative minor; where it
gives none, between all 24 keys. Before a note the choice is the candidate whose Krumhansl–
Kessler key profile correlates best with the duration-weighted pitch classes heard so far in the
region; with nothing heard yet, the first candidate (the major key).
"""
from __future__ import annotations

import numpy as np

from .context import MINOR

# Krumhansl & Kessler (1982) probe-tone ratings of the 12 pitch classes above a major and a
# minor tonic.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# Every key id (tonic pitch class, + MINOR in minor), majors first: C major is the default.
ALL_KEYS = tuple(range(12)) + tuple(MINOR + t for t in range(12))


def _profile(key_id: int) -> np.ndarray:
    tonic, minor = key_id % MINOR, key_id >= MINOR
    return np.roll(MINOR_PROFILE if minor else MAJOR_PROFILE, tonic)


def heard_keys(pitch_classes: np.ndarray, weights: np.ndarray, candidates: tuple[int, ...]) -> np.ndarray:
    """The key id of each note among ``candidates``, from the notes before it alone.

    ``pitch_classes`` [T] (−1 for a rest, which counts for nothing) and ``weights`` [T] (the
    notes' durations). Note t's key is the candidate whose profile correlates best with the
    weighted pitch-class histogram of notes 0..t-1; with none heard, ``candidates[0]``.
    """
    n = len(pitch_classes)
    onehot = np.zeros((n, 12))
    sounding = pitch_classes >= 0
    onehot[np.flatnonzero(sounding), pitch_classes[sounding]] = weights[sounding]
    before = np.vstack([np.zeros((1, 12)), np.cumsum(onehot, 0)[:-1]])     # exclusive: notes < t
    centred = before - before.mean(1, keepdims=True)
    profiles = np.stack([_profile(k) for k in candidates])
    profiles = (profiles - profiles.mean(1, keepdims=True)) / np.linalg.norm(
        profiles - profiles.mean(1, keepdims=True), axis=1, keepdims=True)
    # Pearson's r up to the histogram's own norm, which is the same for every candidate.
    best = np.argmax(centred @ profiles.T, axis=1)
    best[~before.any(1)] = 0
    return np.asarray(candidates, dtype=np.int8)[best]


def relative_pair(major_tonic: int) -> tuple[int, int]:
    """A bare signature's two keys: its major and its relative minor (a minor third below)."""
    return major_tonic, MINOR + (major_tonic + 9) % 12
