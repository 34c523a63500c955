"""Where each melody's key context comes from: the score's written modes, a mode inferred for a
bare key signature, or music21's key analysis of a score with no signature; last line: JSON.

    .venv/bin/python benchmarks/key_modes.py [--corpora chorales-185 chorales-other essen/kinder0]

Parses every file of each corpus afresh (``chromasonic_lib.data.files._parse_one``, i.e.
``parse_score_file`` with the corpus's part, as ``parse_files`` does on a cache miss; the cache
is neither read nor written) with ``files._keys``, ``files._mode`` and music21's
``Stream.analyze`` wrapped to record which path ran for each melody. Every melody falls in one
class:

* ``written``: every key signature kept by ``_keys`` is a ``key.Key`` with its mode;
* ``inferred``: at least one bare signature (a KeySignature, no mode) whose mode ``_mode``
  chose, for all of them from the melody's final note (``by_final``), for all by music21's
  analysis of the region (``by_analysis``), or some each way (``by_both``); each inferred
  melody is listed above the table with the key chosen and how;
* ``no_signature``: no signature at all, the key from ``analyze('key')`` of the whole score
  (``no_signature_no_notes``: no sounding note, so C major without analysis).

``inferred_minor``: of the ``_mode`` calls (one per bare signature), how many returned the
relative minor; ``melodies_any_minor``: melodies with at least one such minor.
``analysis_default_major``: ``_mode`` calls where the analysis failed or named neither
candidate, so major by default. ``short``: melodies that ``load_dataset`` drops (fewer than two
tokens in the pitch encoding); they are counted in the classes above too.
"""
import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor

from music21 import stream as m21stream

from chromasonic_lib.data import corpora
from chromasonic_lib.data import files
from chromasonic_lib.data.encodings import get_encoding

p = argparse.ArgumentParser()
p.add_argument("--corpora", nargs="+", default=["chorales-185", "chorales-other", "essen/kinder0"])
p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
args = p.parse_args()

# One record per _keys call (= per melody), filled in by the wrappers below.
RECORDS: list[dict] = []
_STATE = {"record": None, "mode_call": None}

_orig_keys, _orig_mode, _orig_analyze = files._keys, files._mode, m21stream.Stream.analyze


def _keys(stream, flat, starts, notes):
    from music21 import key
    record = {"mode_calls": [], "whole_score_analysis": False,
              "signatures": len(flat.getElementsByClass(key.KeySignature))}
    _STATE["record"] = record
    try:
        return _orig_keys(stream, flat, starts, notes)
    finally:
        _STATE["record"] = None
        RECORDS.append(record)


def _mode(signature, pitches, region):
    call = {"analysis": False}
    _STATE["mode_call"] = call
    try:
        k = _orig_mode(signature, pitches, region)
    finally:
        _STATE["mode_call"] = None
    call["minor"] = k.mode in files.MINOR_MODES
    call["key"] = f"{k.tonic.name} {k.mode}"
    # The final-note rule returns before any analysis; the default is major when the analysis
    # raised or named neither key.
    call["default_major"] = call["analysis"] and (call.get("found") is None or not any(
        (c.tonic.pitchClass, c.mode) == (k.tonic.pitchClass, k.mode) for c in call["found"]))
    call.pop("found", None)
    _STATE["record"]["mode_calls"].append(call)
    return k


def _analyze(self, method, *a, **kw):
    call, record = _STATE["mode_call"], _STATE["record"]
    if call is not None:
        call["analysis"] = True
        found = _orig_analyze(self, method, *a, **kw)       # raises like the original
        call["found"] = [found, *getattr(found, "alternateInterpretations", [])]
        return found
    if record is not None and method == "key":
        record["whole_score_analysis"] = True
    return _orig_analyze(self, method, *a, **kw)


files._keys, files._mode, m21stream.Stream.analyze = _keys, _mode, _analyze


def parse_one(job):
    """``files._parse_one`` of one file, with the records of its melodies (in a fork worker)."""
    RECORDS.clear()
    path, melodies, reason = files._parse_one(job)
    records = list(RECORDS)
    if melodies is not None:
        assert len(records) == len(melodies), (path, len(records), len(melodies))
        pitch = get_encoding("pitch")
        for r, m in zip(records, melodies):
            r["short"] = len(pitch.encode(m)) < 2
    return path, (None if melodies is None else records), reason


COLUMNS = ["files", "skipped_files", "melodies", "short", "written", "inferred", "by_final",
           "by_analysis", "by_both", "no_signature", "no_signature_no_notes", "mode_calls",
           "calls_by_final", "calls_by_analysis", "inferred_minor", "melodies_any_minor",
           "analysis_default_major"]


def count(name: str) -> dict:
    paths = corpora.corpus_files(name)
    jobs = [(str(f), corpora.part_for(name)) for f in paths]
    if args.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(args.workers, mp_context=files._context()) as pool:
            results = list(pool.map(parse_one, jobs, chunksize=max(1, len(jobs) // (args.workers * 16))))
    else:
        results = [parse_one(j) for j in jobs]
    c = dict.fromkeys(COLUMNS, 0)
    c["files"] = len(jobs)
    for path, records, _ in results:
        if records is None:
            c["skipped_files"] += 1
            continue
        for r in records:
            c["melodies"] += 1
            c["short"] += r["short"]
            calls = r["mode_calls"]
            if calls:
                c["inferred"] += 1
                print(f"{name}: {os.path.basename(path)} inferred " + ", ".join(
                    f"{x['key']} by {'analysis' if x['analysis'] else 'final note'}" for x in calls))
                final = any(not x["analysis"] for x in calls)
                analysis = any(x["analysis"] for x in calls)
                c["by_final"] += final and not analysis
                c["by_analysis"] += analysis and not final
                c["by_both"] += final and analysis
                c["mode_calls"] += len(calls)
                c["calls_by_final"] += sum(not x["analysis"] for x in calls)
                c["calls_by_analysis"] += sum(x["analysis"] for x in calls)
                c["inferred_minor"] += sum(x["minor"] for x in calls)
                c["melodies_any_minor"] += any(x["minor"] for x in calls)
                c["analysis_default_major"] += sum(x["default_major"] for x in calls)
            elif r["whole_score_analysis"]:
                c["no_signature"] += 1
            elif not r["signatures"]:        # no sounding note: C major, nothing analysed
                c["no_signature_no_notes"] += 1
            else:
                c["written"] += 1
    assert c["melodies"] == c["written"] + c["inferred"] + c["no_signature"] + c["no_signature_no_notes"]
    return c


if __name__ == "__main__":
    out = {}
    for name in args.corpora:
        out[name] = count(name)
    label, width = max(map(len, COLUMNS)) + 2, max(len(n) for n in out) + 2
    print(f"{'':<{label}}" + "".join(f"{n:>{width}}" for n in out))
    for col in COLUMNS:
        print(f"{col:<{label}}" + "".join(f"{out[n][col]:>{width}}" for n in out))
    print(json.dumps(out))
