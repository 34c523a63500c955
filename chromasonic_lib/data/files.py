"""Score files → melodies with music21: MIDI, ABC (one tune or many) and MusicXML.

Rule for polyphonic material (several parts, chords): the melody is the *skyline*, the
highest note starting at each onset, held until the next onset; silences become rests.
A monophonic line passes through unchanged.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from .context import MINOR, NoteContext
from .encodings import REST, Notes
from .keys import ALL_KEYS, heard_keys, relative_pair

log = logging.getLogger(__name__)

SCORE_SUFFIXES = (".mid", ".midi", ".abc", ".xml", ".mxl", ".musicxml")


def folder_files(folder: Path) -> list[Path]:
    """Every score file under ``folder``, sorted, hidden files skipped."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SCORE_SUFFIXES
                  and p.is_file() and not p.name.startswith("."))


def melody_from_stream(stream) -> Notes:
    """The skyline of a music21 stream: highest note per onset, gaps as rests, with the
    context the score gives each of them (:func:`score_context`)."""
    from music21 import expressions
    flat = stream.flatten()
    onsets: dict[float, tuple[int, float]] = {}
    fermatas: set[float] = set()        # onsets where any note holds a fermata
    for n in flat.notes:
        duration = float(n.quarterLength)
        if duration <= 0:           # grace notes take no time
            continue
        pitch = max(p.midi for p in n.pitches)
        onset = float(n.offset)
        if onset not in onsets or pitch > onsets[onset][0]:
            onsets[onset] = (pitch, duration)
        if any(isinstance(e, expressions.Fermata) for e in n.expressions):
            fermatas.add(onset)
    pitches: list[int] = []
    durations: list[float] = []
    starts: list[float] = []
    times = sorted(onsets)
    for i, onset in enumerate(times):
        pitch, duration = onsets[onset]
        if i + 1 < len(times):
            gap = times[i + 1] - onset
            duration = min(duration, gap)
        pitches.append(pitch)
        durations.append(duration)
        starts.append(onset)
        if i + 1 < len(times) and times[i + 1] - onset - duration > 1e-6:
            pitches.append(REST)
            durations.append(times[i + 1] - onset - duration)
            starts.append(onset + duration)
    notes = Notes(np.array(pitches, dtype=np.int16), np.array(durations, dtype=np.float32))
    notes.context = score_context(stream, flat, np.array(starts, dtype=np.float64), notes,
                                  np.array([t in fermatas for t in starts], dtype=bool))
    return notes


# music21 modes counted as minor in the key feature (a minor third above the tonic).
MINOR_MODES = ("minor", "aeolian", "dorian", "phrygian", "locrian")


def score_context(stream, flat, starts: np.ndarray, notes: Notes, fermatas: np.ndarray) -> NoteContext:
    """Each note's (and rest's) place in its bar, time signature, phrase end and key.

    ``starts``: their onsets in ``flat`` (the flattened ``stream``). A note ends a phrase
    when a fermata ends it, and the melody's last note ends one too.
    """
    bar_offsets, metres = _bar_positions(stream, flat, starts)
    sounding = notes.pitches != REST
    ends = fermatas & sounding
    if sounding.any():
        ends[np.flatnonzero(sounding)[-1]] = True
    return NoteContext(bar_offsets, metres, ends, _keys(stream, flat, starts, notes))


def _bar_positions(stream, flat, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Onsets in their bars (quarter notes) and the bars' time signatures, from the measures of
    the first part; a pickup bar counts from where the full bar would start (its paddingLeft)."""
    from music21 import meter
    from music21 import stream as streams
    part = stream.parts[0] if isinstance(stream, streams.Score) and stream.parts else stream
    bars, ts = [], None
    for m in part.getElementsByClass(streams.Measure):
        ts = m.timeSignature or ts or m.getContextByClass(meter.TimeSignature)
        signature = (ts.numerator, ts.denominator) if ts is not None else (0, 0)
        bars.append((float(m.getOffsetInHierarchy(stream)), float(m.paddingLeft), signature))
    if not bars:        # no measures: bars of the first time signature from the start (4/4 if none)
        ts = next(iter(flat.getElementsByClass(meter.TimeSignature)), None)
        signature = (ts.numerator, ts.denominator) if ts is not None else (4, 4)
        metres = np.tile(np.array(signature, np.int16), (len(starts), 1))
        return (starts % (4 * signature[0] / signature[1])).astype(np.float32), metres
    bar = np.clip(np.searchsorted([b[0] for b in bars], starts + 1e-6, side="right") - 1, 0, None)
    begins = np.array([start - padding for start, padding, _ in bars])
    metres = np.array([bars[i][2] for i in bar], dtype=np.int16).reshape(-1, 2)
    return (starts - begins[bar]).clip(0).astype(np.float32), metres


def _keys(stream, flat, starts: np.ndarray, notes: Notes) -> np.ndarray:
    """Each note's key id (``context.MINOR`` + tonic pitch class, or the tonic's for major).

    The score's key signatures, each ruling until the next. A written key (with its mode) is
    the note's key; where the score names no mode (a bare signature: MusicXML without
    <mode>), or has no signature at all, the key is read from the notes before each note
    alone (see ``keys``): never from the note itself or any after it.
    """
    from music21 import key
    events: list[tuple[float, object]] = []
    for k in flat.getElementsByClass(key.KeySignature):
        # Every part repeats the signatures, and some files a signature: keep the changes.
        mode = getattr(k, "mode", None)
        if events and ((k.sharps, mode) == (events[-1][1].sharps, getattr(events[-1][1], "mode", None))
                       or float(k.offset) == events[-1][0]):
            continue
        events.append((float(k.offset), k))
    if not events:
        events = [(0.0, None)]          # no signature: any of the 24 keys, as heard so far
    region = np.clip(np.searchsorted([e[0] for e in events], starts + 1e-6, side="right") - 1, 0, None)
    ids = np.zeros(len(starts), dtype=np.int8)
    pitch_classes = np.where(notes.pitches == REST, -1, notes.pitches % 12)
    for r, (_, k) in enumerate(events):
        rows = region == r
        if isinstance(k, key.Key):
            ids[rows] = k.tonic.pitchClass + (MINOR if k.mode in MINOR_MODES else 0)
            continue
        candidates = ALL_KEYS if k is None else relative_pair(k.asKey("major").tonic.pitchClass)
        ids[rows] = heard_keys(pitch_classes[rows], notes.durations[rows], candidates)
    return ids


def _scores(parsed) -> list:
    """An Opus (many ABC tunes in a file) gives its scores; anything else is one score."""
    from music21 import stream
    if isinstance(parsed, stream.Opus):
        return list(parsed.scores)
    return [parsed]


def parse_score_file(path: str | os.PathLike, part_id: str | None = None) -> list[Notes]:
    """The melodies in one file (several for a multi-tune ABC file).

    With ``part_id`` (e.g. ``"Soprano"``) only that part is used, and a score without it
    gives no melody.
    """
    from music21 import converter
    parsed = converter.parse(str(path))
    melodies = []
    for score in _scores(parsed):
        score = score.stripTies()
        if part_id is not None:
            parts = [p for p in score.parts if (p.id or "").lower() == part_id.lower()
                     or (p.partName or "").lower() == part_id.lower()]
            if not parts:
                continue
            score = parts[0]
        melodies.append(melody_from_stream(score))
    return melodies


def _parse_one(args: tuple[str, str | None]) -> tuple[str, list[Notes] | None, str]:
    path, part_id = args
    try:
        return path, parse_score_file(path, part_id), ""
    except Exception as e:  # a broken file is reported and skipped, never fatal
        return path, None, f"{type(e).__name__}: {e}".strip()[:300]


def _context():
    """fork where there is one: spawn and forkserver re-run the caller's main script in every
    worker, which breaks any script without an ``if __name__ == "__main__"`` guard. The
    workers only parse files with music21; they never touch the parent's threads or torch."""
    return get_context("fork" if "fork" in get_all_start_methods() else None)


def parse_files(paths: Iterable[Path], part_id: str | None = None, desc: str = "parsing",
                workers: int | None = None) -> tuple[list[tuple[str, Notes]], list[tuple[str, str]]]:
    """Parse many files on all cores with a progress bar.

    Returns (file, melody) pairs in file order, and (file, reason) for each skipped file.
    """
    jobs = [(str(p), part_id) for p in paths]
    workers = workers or os.cpu_count() or 1
    results: dict[str, tuple[list[Notes] | None, str]] = {}
    bar = tqdm(total=len(jobs), desc=desc, unit="file", mininterval=1.0)
    if workers > 1 and len(jobs) > 8:
        with ProcessPoolExecutor(workers, mp_context=_context()) as pool:
            # Small chunks keep both cores busy when a few files are much larger than the rest.
            chunk = max(1, len(jobs) // (workers * 16))
            for path, melodies, reason in pool.map(_parse_one, jobs, chunksize=chunk):
                results[path] = (melodies, reason)
                bar.update()
    else:
        for job in jobs:
            path, melodies, reason = _parse_one(job)
            results[path] = (melodies, reason)
            bar.update()
    bar.close()
    melodies_out, skipped = [], []
    for path, _ in jobs:
        melodies, reason = results[path]
        if melodies is None:
            skipped.append((path, reason))
        else:
            melodies_out.extend((path, m) for m in melodies)
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
    return melodies_out, skipped
