"""The original script's synthetic melodies — a clamped random walk over the 88 keys — and its oracle loss.

This is the only place that knows the generator's own probabilities, so it alone can say
the best loss any model could reach on a given set of melodies (the ``floor``).
"""
from __future__ import annotations

import math

import numpy as np

from .context import NoteContext
from .encodings import LOWEST_MIDI, N_KEYS, Notes

STEPS = np.array([-2, -1, 0, 1, 2])
STEP_WEIGHTS = np.array([1, 2, 3, 2, 1], dtype=np.float64)
STEP_PROBS = STEP_WEIGHTS / STEP_WEIGHTS.sum()
NOTE_LENGTH = 0.25          # a sixteenth: the grid encoding then has no hold tokens


def generate(n_sequences: int = 100, sequence_length: int = 64, seed: int = 42) -> list[Notes]:
    """Random walks: start uniform over 0–87, steps −2…+2 with weights 1,2,3,2,1, clamped.

    Their context is neutral (4/4, C major, no phrase but the end): a walk has no score."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, N_KEYS, size=n_sequences)
    steps = rng.choice(STEPS, p=STEP_PROBS, size=(n_sequences, sequence_length - 1))
    keys = np.empty((n_sequences, sequence_length), dtype=np.int64)
    keys[:, 0] = start
    for t in range(1, sequence_length):   # clamping makes each step depend on the last key
        keys[:, t] = np.clip(keys[:, t - 1] + steps[:, t - 1], 0, N_KEYS - 1)
    durations = np.full(sequence_length, NOTE_LENGTH, dtype=np.float32)
    return [Notes((row + LOWEST_MIDI).astype(np.int16), durations.copy(), NoteContext.neutral(durations))
            for row in keys]


def transition_log_probs() -> np.ndarray:
    """[88, 88] matrix of log P(next key | key), clamping folded onto the edge keys."""
    probs = np.zeros((N_KEYS, N_KEYS))
    for key in range(N_KEYS):
        for step, p in zip(STEPS, STEP_PROBS):
            probs[key, min(max(key + step, 0), N_KEYS - 1)] += p
    with np.errstate(divide="ignore"):
        return np.log(probs)


def oracle_loss(melodies: list[np.ndarray]) -> float:
    """Mean nats per note that the generator's own probabilities get on these melodies.

    ``melodies`` are token arrays in the pitch (or grid) encoding of synthetic walks. Every
    note is predicted, exactly as the models are scored: the first with the generator's
    uniform start (ln 88 nats), each later one with its step probability.
    """
    table = transition_log_probs()
    total, count = 0.0, 0
    for tokens in melodies:
        tokens = np.asarray(tokens, dtype=np.int64)
        if len(tokens):
            total += math.log(N_KEYS) - table[tokens[:-1], tokens[1:]].sum()
        count += len(tokens)
    if count == 0:
        return math.nan
    return total / count
