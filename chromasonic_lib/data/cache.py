"""On-disk cache of parsed melodies, so a corpus is parsed once and then loads in a second.

An entry holds the raw notes (pitches, durations and their ``NoteContext``) of one source;
encoding them is cheap, so both encodings share it. Its key is the source, a fingerprint of its files
(adding, removing or editing a file in a user folder makes a new key) and FORMAT_VERSION.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..paths import cache_dir
from .context import NoteContext
from .encodings import Notes

log = logging.getLogger(__name__)

FORMAT_VERSION = 4         # 3: each note's context (bar position, metre, phrase end, key)
#                            4: a key the score does not write is read from the notes before it


def fingerprint(files: list[Path]) -> str:
    """Changes whenever a file is added, removed or modified."""
    h = hashlib.sha256(str(FORMAT_VERSION).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def entry_path(source: str, files: list[Path], extra: str = "") -> Path:
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in source)[-60:]
    return cache_dir() / f"{slug}-{fingerprint(files)}{extra}-v{FORMAT_VERSION}.npz"


# The arrays of an entry: each note's, concatenated over the melodies, and their empty form.
ARRAYS = {"pitches": np.zeros(0, np.int16), "durations": np.zeros(0, np.float32),
          "bar_offsets": np.zeros(0, np.float32), "metres": np.zeros((0, 2), np.int16),
          "phrase_ends": np.zeros(0, bool), "keys": np.zeros(0, np.int8)}


def save(path: Path, melodies: list[Notes], files: list[str], skipped: list[tuple[str, str]]) -> None:
    """Parsed melodies (each with its context) as one entry."""
    lengths = np.array([len(m) for m in melodies], dtype=np.int64)
    rows = [{"pitches": m.pitches, "durations": m.durations, **vars(m.context)} for m in melodies]
    columns = {name: np.concatenate([r[name] for r in rows]) if rows else empty
               for name, empty in ARRAYS.items()}
    buf = io.BytesIO()
    np.savez(buf, **columns, lengths=lengths,
             meta=np.array(json.dumps({"files": files, "skipped": skipped})))
    atomic_write(path, buf.getvalue())


def load(path: Path) -> tuple[list[Notes], list[str], list[tuple[str, str]]] | None:
    """The cached entry, or None when absent or unreadable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            bounds = np.concatenate([[0], np.cumsum(z["lengths"])])
            c = {name: z[name] for name in ARRAYS}     # an entry of an older format lacks some: rebuilt
            melodies = [Notes(c["pitches"][a:b], c["durations"][a:b],
                              NoteContext(c["bar_offsets"][a:b], c["metres"][a:b], c["phrase_ends"][a:b],
                                          c["keys"][a:b]))
                        for a, b in zip(bounds[:-1], bounds[1:])]
            meta = json.loads(str(z["meta"]))
        return melodies, meta["files"], [tuple(s) for s in meta["skipped"]]
    except Exception as e:  # a damaged entry is rebuilt, not fatal
        log.warning("cache entry %s unreadable (%s); parsing again", path, e)
        return None
