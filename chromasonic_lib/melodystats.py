"""Rhythm and pitch statistics of melodies, generated against real: what a listen test reports
beside the audio.

Melodies are notes with their context where they have one (parsed ones, and those a context
model wrote in a real melody's rhythm, see ``generate``); a statistic that needs the context
(fermatas, bars, the key given) is NaN for a melody without it.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from .data.context import CONTEXT_FEATURES, bar_length, duration_ids, in_key
from .data.encodings import REST, Notes

INTERVALS = np.arange(-12, 13)      # interval histogram bins, semitones (wider leaps clipped)


def _share(mask: np.ndarray) -> float:
    return 100 * float(mask.mean()) if len(mask) else math.nan


def _histogram(values: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(values, minlength=n).astype(np.float64)
    return counts / max(counts.sum(), 1)


def _best_key_share(pitches: np.ndarray) -> float:
    """Share of a melody's notes in the scale of the key that holds most of them (of 24)."""
    return max(in_key(pitches, np.full(len(pitches), k)).mean() for k in range(24))


def statistics(melodies: list[Notes]) -> dict[str, float]:
    """Rhythm and pitch statistics of ``melodies`` (their sounding notes), each a number.

    Bars are counted in the time signature a melody starts in; the given key is each note's
    (a scale as ``data.context.SCALES``), the best-fitting one each melody's of all 24.
    """
    sounding = [m.pitches != REST for m in melodies]
    pitches = [m.pitches[s].astype(np.int64) for m, s in zip(melodies, sounding)]
    with_context = [(m, s) for m, s in zip(melodies, sounding) if m.context is not None]
    every = np.concatenate(pitches) if pitches else np.zeros(0, np.int64)
    intervals = np.concatenate([np.diff(p) for p in pitches]) if pitches else np.zeros(0, np.int64)
    bars = sum(float(m.durations.sum()) / float(bar_length(m.context.metres[:1])[0]) for m, _ in with_context)
    in_given_key = np.concatenate([in_key(m.pitches[s], m.context.keys[s]) for m, s in with_context]) \
        if with_context else np.zeros(0, bool)
    fermatas = np.concatenate([m.context.phrase_ends[s] for m, s in with_context]) \
        if with_context else np.zeros(0, bool)
    return {
        "melodies": len(melodies),
        "notes per melody": float(np.mean([len(p) for p in pitches])) if pitches else math.nan,
        "notes per bar": sum(int(s.sum()) for _, s in with_context) / bars if bars else math.nan,
        "mean duration (quarters)": float(np.mean(np.concatenate(
            [m.durations[s] for m, s in zip(melodies, sounding)]))) if len(every) else math.nan,
        "fermata notes (%)": _share(fermatas),
        "pitch range (semitones)": float(np.mean([np.ptp(p) for p in pitches if len(p)])) if len(every) else math.nan,
        "mean pitch (MIDI)": float(every.mean()) if len(every) else math.nan,
        "in the given key (%)": _share(in_given_key),
        "in the best-fitting key (%)": 100 * float(np.mean([_best_key_share(p) for p in pitches if len(p)]))
        if len(every) else math.nan,
        "mean |interval| (semitones)": float(np.abs(intervals).mean()) if len(intervals) else math.nan,
        "repeated notes (%)": _share(intervals == 0),
        "leaps > 7 semitones (%)": _share(np.abs(intervals) > 7),
    }


def histograms(melodies: list[Notes]) -> dict[str, np.ndarray]:
    """Duration classes (``data.context.duration_ids``) and intervals (±12) of the sounding notes."""
    sounding = [m.pitches != REST for m in melodies]
    durations = np.concatenate([duration_ids(m.durations[s]) for m, s in zip(melodies, sounding)])
    intervals = np.concatenate([np.diff(m.pitches[s].astype(np.int64)) for m, s in zip(melodies, sounding)])
    return {"duration": _histogram(durations, CONTEXT_FEATURES["duration"]),
            "interval": _histogram(np.clip(intervals, -12, 12) + 12, len(INTERVALS))}


def distances(melodies: list[Notes], reference: list[Notes]) -> dict[str, float]:
    """Total variation distance (0: the same histogram, 1: nothing in common) of the duration
    and interval histograms of ``melodies`` from those of ``reference``."""
    ours, theirs = histograms(melodies), histograms(reference)
    return {f"{name} histogram distance": 0.5 * float(np.abs(ours[name] - theirs[name]).sum())
            for name in ours}


def comparison_table(reference: list[Notes], **generated: list[Notes]) -> pd.DataFrame:
    """One column per group of melodies (the reference first, named ``training``): their
    statistics and their histograms' distances from the reference's."""
    columns = {"training": {**statistics(reference), **distances(reference, reference)}}
    for name, melodies in generated.items():
        columns[name] = {**statistics(melodies), **distances(melodies, reference)}
    return pd.DataFrame(columns)


def as_json(table: pd.DataFrame) -> str:
    """The table as one JSON line: {column: {statistic: value}}, NaN as null, 4 decimals."""
    return json.dumps({c: {k: None if isinstance(v, float) and math.isnan(v) else round(float(v), 4)
                           for k, v in table[c].items()} for c in table.columns})
