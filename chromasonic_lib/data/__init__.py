"""Melody data: sources (synthetic, music21 corpora, user folders) → tokens → splits → tensors."""
from __future__ import annotations

import logging
import numbers
from typing import Any
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..imports import import_object, is_own
from ..paths import resolve
from . import cache, corpora, synthetic
from .copies import MelodyGroups, melody_groups, not_copies
from .context import NoteContext
from .encodings import LOWEST_MIDI, N_KEYS, Encoding, Notes, TokenVocabulary, get_encoding, midi_name
from .files import folder_files, parse_files
from .splits import MelodyTensor, Splits, hold_out, kfold, split

log = logging.getLogger(__name__)

__all__ = ["MelodySet", "load_data", "load_dataset", "load_notes", "MelodyTensor", "Splits", "split", "hold_out", "kfold",
           "MelodyGroups", "melody_groups", "not_copies",
           "get_encoding", "Notes", "synthetic"]


@dataclass
class MelodySet:
    """Token melodies from one source, with what was skipped on the way, and the notes behind them."""

    source: str
    encoding: Encoding
    melodies: list[np.ndarray]
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    n_too_short: int = 0
    n_duplicates: int = 0
    notes: list[Notes] | None = None    # each melody's notes; None for tokens given as such
    # Each melody's stable id: its file (relative to the corpus or folder), part and tune number
    # (see ``melody_ids``); None: numbered in order (``names``).
    ids: list[str] | None = None
    excluded: tuple[str, int] | None = None   # (collection, melodies left out as copies of its tunes)

    @cached_property
    def contexts(self) -> list[np.ndarray] | None:
        """Each melody's context feature ids [T, len(context_features)], aligned with its tokens
        (see ``data.context``); None without notes behind the tokens."""
        if self.notes is None or any(n.context is None for n in self.notes):
            return None
        return [self.encoding.encode_context(n) for n in self.notes]

    @property
    def names(self) -> list[str]:
        """Each melody's id, ``ids`` or (without them) the source and its 1-based number."""
        return self.ids if self.ids is not None else [f"{self.source}#{i + 1}" for i in range(len(self.melodies))]

    @property
    def context_features(self) -> tuple[str, ...]:
        return self.encoding.context_features if self.contexts is not None else ()

    def tensor(self, indices, device="cpu") -> MelodyTensor:
        """The melodies at ``indices``, with their context where they have one, as one tensor."""
        contexts = self.contexts
        return MelodyTensor([self.melodies[i] for i in indices], device,
                            contexts=None if contexts is None else [contexts[i] for i in indices],
                            context_features=self.context_features)

    def without_copies_of(self, other: MelodySet) -> MelodySet:
        """These melodies less every copy (identical, transposed or a variant) of one of
        ``other``'s tunes: what a search may tune on that must never see ``other``'s tunes."""
        keep = not_copies(other.melodies, self.melodies)
        if not keep:
            raise DataError(f"exclude_copies_of: every melody of {self.source} is a copy of a tune of "
                            f"{other.source}: nothing is left to search on")
        return MelodySet(self.source, self.encoding, [self.melodies[i] for i in keep], self.skipped_files,
                         self.n_too_short, self.n_duplicates,
                         None if self.notes is None else [self.notes[i] for i in keep],
                         None if self.ids is None else [self.ids[i] for i in keep],
                         (other.source, len(self.melodies) - len(keep)))

    def joined(self, other: MelodySet, indices: list[int]) -> MelodySet:
        """These melodies, then ``other``'s at ``indices``, as one set (in this one's encoding)."""
        notes = None if self.notes is None or other.notes is None else \
            self.notes + [other.notes[i] for i in indices]
        return MelodySet(f"{self.source}+{other.source}", self.encoding,
                         self.melodies + [other.melodies[i] for i in indices], notes=notes,
                         ids=self.names + [f"{other.source}:{other.names[i]}" for i in indices])

    @property
    def n_notes(self) -> int:
        return int(sum(len(m) for m in self.melodies))

    @property
    def vocab_size(self) -> int:
        return self.encoding.vocab_size

    @property
    def is_synthetic(self) -> bool:
        return self.source == "synthetic"

    def pitch_range(self) -> tuple[int, int]:
        """Lowest and highest MIDI pitch."""
        keys = np.concatenate([m[m < N_KEYS] for m in self.melodies])
        return int(keys.min()) + LOWEST_MIDI, int(keys.max()) + LOWEST_MIDI

    def describe(self) -> str:
        if isinstance(self.encoding, TokenVocabulary):     # no notes behind the tokens
            text = (f"{self.source} (vocab {self.vocab_size}): {len(self.melodies):,} melodies, "
                    f"{self.n_notes:,} tokens")
        else:
            lo, hi = self.pitch_range()
            text = (f"{self.source} ({self.encoding.name} encoding): {len(self.melodies):,} melodies, "
                    f"{self.n_notes:,} tokens, pitch range {midi_name(lo)}–{midi_name(hi)} "
                    f"(MIDI {lo}–{hi})")
        extras = []
        if self.skipped_files:
            extras.append(f"{len(self.skipped_files)} unreadable files skipped")
        if self.n_too_short:
            extras.append(f"{self.n_too_short} melodies too short to predict dropped")
        if self.n_duplicates:
            extras.append(f"{self.n_duplicates} duplicate tunes removed")
        if self.excluded:
            extras.append(f"{self.excluded[1]} copies of tunes of {self.excluded[0]} left out")
        return text + ("; " + ", ".join(extras) if extras else "")


def _own_melodies(source: str) -> list[Notes]:
    """The melodies a function of one's own returns (``dataset: package.module:function`` or
    ``file.py:function``, called without arguments): :class:`Notes` as our file readers give
    them, or token lists of piano keys 0..87 (MIDI pitch − 21), each note a quarter long."""
    fn = import_object(source, "dataset")
    try:
        melodies = list(fn())
    except Exception as e:      # the user's function may raise anything
        raise DataError(f"dataset {source!r}: calling it failed: {type(e).__name__}: {e}") from None
    out = []
    for i, m in enumerate(melodies):
        if isinstance(m, Notes):
            out.append(m)
            continue
        keys = np.asarray(m.detach().cpu() if hasattr(m, "detach") else m)
        if keys.ndim != 1 or (len(keys) and keys.dtype.kind not in "iu"):
            raise DataError(f"dataset {source!r}: melody {i} must be Notes or a list of tokens (piano "
                            f"keys 0..87), got {m!r:.60}")
        bad = np.flatnonzero((keys < 0) | (keys >= N_KEYS))
        if len(bad):
            raise DataError(f"dataset {source!r}: melody {i}, position {bad[0]}: token {keys[bad[0]]} is "
                            f"outside the piano keys 0..87")
        durations = np.ones(len(keys), dtype=np.float32)
        out.append(Notes((keys + LOWEST_MIDI).astype(np.int16), durations, NoteContext.neutral(durations)))
    return out


def load_notes(source: str, n_sequences: int = 100, sequence_length: int = 64, seed: int = 42,
               limit: int | None = None, use_cache: bool = True
               ) -> tuple[list[Notes], list[tuple[str, str]]]:
    """Raw melodies of a source, and the files skipped. Parsed sources go through the cache."""
    notes, _, skipped = _load_notes(source, n_sequences, sequence_length, seed, limit, use_cache)
    return notes, skipped


def _load_notes(source: str, n_sequences: int, sequence_length: int, seed: int, limit: int | None,
                use_cache: bool) -> tuple[list[Notes], list[str], list[tuple[str, str]]]:
    """``load_notes``'s melodies, each one's id (``melody_ids``), and the files skipped."""
    if source == "synthetic":
        walks = synthetic.generate(n_sequences, sequence_length, seed)
        return walks, [f"walk {i + 1}" for i in range(len(walks))], []
    if is_own(source):
        melodies = _own_melodies(source)
        return melodies, [f"{source.rpartition(':')[2]} {i + 1}" for i in range(len(melodies))], []
    root = None
    if source in corpora.CORPUS_FOLDERS or source.startswith("essen/"):
        files, part = corpora.corpus_files(source), corpora.part_for(source)
        root = corpora.corpus_root()
    else:
        folder = resolve(source)
        if not folder.is_dir():
            raise DataError(f"dataset: no such folder {source!r}")
        files, part, root = folder_files(folder), None, folder
        if not files:
            raise DataError(f"dataset: no score files ({', '.join(('.mid', '.abc', '.xml', '.mxl'))}"
                            f" ...) under {str(folder)!r}")
    if limit:
        files = files[:limit]
    path = cache.entry_path(source, files, f"-first{limit}" if limit else "")
    hit = cache.load(path) if use_cache else None
    if hit is not None:
        melodies, sources, skipped = hit
        log.info("%s: %d melodies from the cache %s", source, len(melodies), path)
    else:
        pairs, skipped = parse_files(files, part, desc=f"parsing {source}")
        melodies, sources = [m for _, m in pairs], [f for f, _ in pairs]
        if use_cache:
            cache.save(path, melodies, sources, skipped)
    return melodies, melody_ids(sources, root, part), skipped


def melody_ids(sources: list[str], root, part: str | None = None) -> list[str]:
    """Stable ids of the melodies parsed from ``sources`` (each melody's file): the file relative
    to ``root``, then ``:part`` where one part was taken, then ``#k`` for the k-th tune of a
    file that holds several (a multi-tune ABC file)."""
    counts: dict[str, int] = {}
    for f in sources:
        counts[f] = counts.get(f, 0) + 1
    seen: dict[str, int] = {}
    ids = []
    for f in sources:
        seen[f] = seen.get(f, 0) + 1
        try:
            rel = Path(f).relative_to(root).as_posix()
        except (TypeError, ValueError):
            rel = Path(f).as_posix()
        ids.append(rel + (f":{part}" if part else "") + (f"#{seen[f]}" if counts[f] > 1 else ""))
    return ids


def load_data(d) -> MelodySet:
    """The melodies a :class:`~chromasonic_lib.config.DataConfig` names: its source, encoded,
    less every copy of a tune of its ``exclude_copies_of`` collection (where it names one). The
    search and train_best both load through here, so both see the same melodies."""
    data = load_dataset(d.dataset, d.encoding, d.n_sequences, d.sequence_length, d.seed)
    if d.exclude_copies_of:
        data = data.without_copies_of(load_dataset(d.exclude_copies_of, d.encoding))
    return data


def load_dataset(source: str, encoding: str = "pitch", n_sequences: int = 100,
                 sequence_length: int = 64, seed: int = 42, limit: int | None = None,
                 use_cache: bool = True) -> MelodySet:
    """Load a source and encode it.

    ``source`` is ``synthetic``, a corpus name (``chorales``, ``chorales-185``, ``essen``,
    ``essen/<file>``, ``oneills``, ``ryans``, ``airds``) or a folder of score files.
    ``limit`` parses only the first files (a quick sample). Melodies with fewer than two
    tokens have no melody to learn (no step from one note to the next) and are dropped
    (counted); an empty result is a ``DataError``.
    """
    enc = get_encoding(encoding)
    notes, ids, skipped = _load_notes(source, n_sequences, sequence_length, seed, limit, use_cache)
    tokens = [enc.encode(n) for n in notes]
    kept = [i for i, t in enumerate(tokens) if len(t) >= 2]
    n_dupes = 0
    if source in corpora.DEDUPLICATE:
        seen, deduped = set(), []
        for i in kept:
            if tokens[i].tobytes() not in seen:
                seen.add(tokens[i].tobytes())
                deduped.append(i)
        n_dupes, kept = len(kept) - len(deduped), deduped
    if not kept:
        detail = f"; {len(skipped)} files could not be read" if skipped else ""
        raise DataError(f"dataset {source!r} gave no melody with at least two notes{detail}")
    n_short = sum(len(t) < 2 for t in tokens)
    data = MelodySet(source, enc, [tokens[i] for i in kept], skipped, n_short, n_dupes,
                     [notes[i] for i in kept], [ids[i] for i in kept])
    log.debug(data.describe())
    return data


@dataclass
class Prepared:
    """A data set split by melody, each split a tensor on the training device."""

    data: MelodySet
    splits: Splits
    train: MelodyTensor
    val: MelodyTensor
    test: MelodyTensor | None

    @property
    def vocab_size(self) -> int:
        return self.data.vocab_size

    def floor(self) -> float | None:
        """The generator's own loss on the validation melodies (synthetic data only)."""
        return synthetic.oracle_loss(self.splits.val) if self.data.is_synthetic else None

    def describe(self) -> str:
        moved = self.train.n_keys
        augment = "" if moved == N_KEYS else "; no transposition" if not moved else \
            f"; transposition moves tokens 0–{moved - 1}"
        return f"{self.data.describe()}\nsplit: {self.splits.describe()}{augment}"


def prepare(data: MelodySet, val_fraction: float = 0.1, test_fraction: float = 0.1,
            seed: int = 42, device="cpu") -> Prepared:
    """Split ``data`` by melody (seeded) and put each split on ``device``."""
    s = split(data.melodies, val_fraction, test_fraction, seed)
    return Prepared(data, s, data.tensor(s.index["train"], device), data.tensor(s.index["val"], device),
                    data.tensor(s.index["test"], device) if s.test else None)


USER_TOKENS = "user token lists"


def from_token_lists(train: Any, val: Any, vocab_size: int = 88, device="cpu",
                     transposable: bool | None = None, pad_id: int | None = None) -> Prepared:
    """The caller's melodies (the original API's data) as prepared data, split as given.

    Each of ``train`` and ``val`` is a list of token lists, a 2-D array or tensor (one melody a
    row, right-padded with ``pad_id``), or any ``torch.utils.data.Dataset`` (or sequence) of
    melodies: token lists, 1-D arrays or tensors, or tuples whose first element is one.

    ``vocab_size`` 88 means the piano keys (the pitch encoding); any other size is a vocabulary
    of its own. ``transposable``: may transposition move the tokens (all of them, as one
    keyboard)? None: only the piano keys, since shifting any other token ids means nothing.
    """
    parts = [_check_tokens(name, _as_melodies(name, part, pad_id), vocab_size)
             for name, part in (("train_data", train), ("val_data", val))]
    piano = vocab_size == N_KEYS
    enc = get_encoding("pitch") if piano else TokenVocabulary(vocab_size)
    n_keys = vocab_size if (piano if transposable is None else transposable) else 0
    s = Splits(parts[0], parts[1], [])
    return Prepared(MelodySet(USER_TOKENS, enc, s.train + s.val), s,
                    MelodyTensor(s.train, device, n_keys), MelodyTensor(s.val, device, n_keys), None)


def _as_melodies(name: str, data: Any, pad_id: int | None) -> list:
    """``data`` as a list of melodies, each without the trailing ``pad_id`` tokens of its row."""
    if hasattr(data, "detach"):                     # a tensor
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray) and data.ndim == 2:
        melodies = list(data)
    elif isinstance(data, (list, tuple, np.ndarray)):
        melodies = list(data)
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):     # a torch Dataset
        melodies = [data[i] for i in range(len(data))]
    else:
        raise DataError(f"{name} must be a list of melodies, a 2-D array or tensor, or a Dataset of "
                        f"melodies, got {type(data).__name__}")
    out = []
    for melody in melodies:
        if isinstance(melody, tuple) and melody and not isinstance(melody[0], numbers.Real):
            melody = melody[0]                      # (tokens, target, ...): the tokens
        if hasattr(melody, "detach"):
            melody = melody.detach().cpu().numpy()
        if pad_id is not None:
            m = np.asarray(melody)
            if m.ndim == 1:
                keep = np.flatnonzero(m != pad_id)
                melody = m[: keep[-1] + 1] if len(keep) else m[:0]
        out.append(melody)
    return out


def _check_tokens(name: str, melodies: list, vocab_size: int) -> list[np.ndarray]:
    """Each melody as an array, or a ``DataError`` naming the first melody or token that is wrong."""
    if not isinstance(melodies, (list, tuple, np.ndarray)) or len(melodies) == 0:
        raise DataError(f"{name} must be a non-empty list of melodies (lists of tokens), got {melodies!r:.80}")
    out = []
    for i, melody in enumerate(melodies):
        try:
            m = np.asarray(melody)
        except ValueError:          # ragged nesting
            m = np.zeros((0, 0))
        if m.ndim != 1 or len(m) < 2:
            raise DataError(f"{name}[{i}] must be a list of at least 2 tokens, got {melody!r:.80}")
        if m.dtype.kind not in "iu":
            for j, t in enumerate(melody):
                if not isinstance(t, numbers.Real) or not float(t).is_integer():
                    raise DataError(f"{name}[{i}][{j}] is {t!r}, not a token (an integer in "
                                    f"0..{vocab_size - 1})")
        m = m.astype(np.int64)
        bad = np.flatnonzero((m < 0) | (m >= vocab_size))
        if len(bad):
            raise DataError(f"{name}[{i}][{bad[0]}] is token {m[bad[0]]}, outside 0..{vocab_size - 1} "
                            f"(vocab_size={vocab_size})")
        out.append(m)
    return out
