"""The offline corpora that install with music21: which files make up each one.

``chorales`` is the soprano line of every Bach chorale music21 ships (the part whose id is
Soprano; some chorales open with an instrument part); ``chorales-185`` the BWV 253–438
subset used by Pearce (2005), ``chorales-other`` the rest (to tune on without touching it); ``essen``, ``oneills``, ``ryans``, ``airds`` the folk
collections (ABC files holding many tunes each).
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

# corpus name → (music21 corpus folder, part to take or None for the skyline)
CORPUS_FOLDERS = {
    "chorales": ("bach", "Soprano"),
    "chorales-185": ("bach", "Soprano"),
    "chorales-other": ("bach", "Soprano"),
    "essen": ("essenFolksong", None),
    "oneills": ("oneills1850", None),
    "ryans": ("ryansMammoth", None),
    "airds": ("airdsAirs", None),
}
# Files in the Essen folder that are music21's own test material, not folk songs.
ESSEN_TEST_FILES = {"test0", "test1", "testd", "teste", "variant0"}
# Corpora whose files overlap: identical tunes are kept once.
DEDUPLICATE = {"oneills"}


@lru_cache(maxsize=1)
def corpus_root() -> Path:
    import music21
    return Path(music21.__file__).parent / "corpus"


def _bwv(path: Path) -> int | None:
    m = re.match(r"bwv(\d+)", path.name)
    return int(m.group(1)) if m else None


def corpus_files(name: str) -> list[Path]:
    """The score files of a corpus name (or ``essen/<file>``), sorted."""
    if name.startswith("essen/"):
        return [corpus_root() / "essenFolksong" / f"{name[6:]}.abc"]
    folder, _ = CORPUS_FOLDERS[name]
    files = sorted(p for p in (corpus_root() / folder).iterdir()
                   if p.suffix in (".mxl", ".xml", ".abc", ".krn") and p.suffix != ".krn")
    if name == "essen":
        files = [p for p in files if p.stem not in ESSEN_TEST_FILES]
    if name == "chorales-185":
        files = [p for p in files if 253 <= (_bwv(p) or 0) <= 438]
    if name == "chorales-other":      # for tuning without ever touching chorales-185
        files = [p for p in files if not 253 <= (_bwv(p) or 0) <= 438]
    return files


def part_for(name: str) -> str | None:
    return CORPUS_FOLDERS.get(name.split("/")[0] if not name.startswith("essen/") else "essen",
                              (None, None))[1]


def essen_files() -> list[str]:
    """Names accepted after ``essen/`` (file stems)."""
    return sorted(p.stem for p in (corpus_root() / "essenFolksong").glob("*.abc"))
