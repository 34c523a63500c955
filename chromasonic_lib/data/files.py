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

from .encodings import REST, Notes

log = logging.getLogger(__name__)

SCORE_SUFFIXES = (".mid", ".midi", ".abc", ".xml", ".mxl", ".musicxml")


def folder_files(folder: Path) -> list[Path]:
    """Every score file under ``folder``, sorted, hidden files skipped."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SCORE_SUFFIXES
                  and p.is_file() and not p.name.startswith("."))


def melody_from_stream(stream) -> Notes:
    """The skyline of a music21 stream: highest note per onset, gaps as rests."""
    onsets: dict[float, tuple[int, float]] = {}
    for n in stream.flatten().notes:
        duration = float(n.quarterLength)
        if duration <= 0:           # grace notes take no time
            continue
        pitch = max(p.midi for p in n.pitches)
        onset = float(n.offset)
        if onset not in onsets or pitch > onsets[onset][0]:
            onsets[onset] = (pitch, duration)
    pitches: list[int] = []
    durations: list[float] = []
    times = sorted(onsets)
    for i, onset in enumerate(times):
        pitch, duration = onsets[onset]
        if i + 1 < len(times):
            gap = times[i + 1] - onset
            duration = min(duration, gap)
        pitches.append(pitch)
        durations.append(duration)
        if i + 1 < len(times) and times[i + 1] - onset - duration > 1e-6:
            pitches.append(REST)
            durations.append(times[i + 1] - onset - duration)
    return Notes(np.array(pitches, dtype=np.int16), np.array(durations, dtype=np.float32))


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
