"""Every note's information content: a model's surprise at each note, as IDyOM reports it.

``score_notes`` is the one place a trained model is scored note by note: for every note of
every melody, the probability it gave the note that came, its information content
(IC = −log₂ p) and the entropy of its whole predicted distribution (its uncertainty before the
note). ``note_table`` adds who each note is (melody, onset, pitch, the score's context) under
IDyOM's column names, so analysis scripts written for IDyOM's ``:detail 3`` output run on ours;
crossval's means, per-fold and per-melody (``per_melody``, IDyOM's ``:detail 2``), are
reductions of it. ``python -m chromasonic_lib.surprise --model M --melodies DIR --out F.csv``
scores melodies of the user's choosing.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .atomic import atomic_write
from .config import check_npz_file, check_table_file
from .data import MelodySet, load_dataset
from .data.context import MINOR
from .data.encodings import LOWEST_MIDI, N_KEYS
from .errors import ChromasonicError, ConfigError
from .paths import resolve
from .training import pick_device, scoring_batches

log = logging.getLogger(__name__)

LN2 = math.log(2)
_TONICS = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]


@dataclass
class NoteScores:
    """A model's scores of every note of a ``MelodyTensor``, melody after melody, note after note."""

    melody: np.ndarray          # int64: the melody's position in the tensor
    position: np.ndarray        # int64: the note's 0-based index in its melody
    token: np.ndarray           # int64: the note that came
    log_prob: np.ndarray        # float64: its natural-log probability
    entropy: np.ndarray         # float64: nats, of the whole predicted distribution
    distribution: np.ndarray | None = None     # float32 [notes, vocabulary]: every probability

    @property
    def information_content(self) -> np.ndarray:
        """Bits: −log₂ of each note's probability."""
        return -self.log_prob / LN2

    @property
    def bits_per_note(self) -> float:
        return float(self.information_content.mean())

    def __len__(self) -> int:
        return len(self.token)


@torch.no_grad()
def score_notes(model: torch.nn.Module, data, batch_size: int = 256,
                distributions: bool = False) -> NoteScores:
    """``model``'s probability, IC and entropy for every note of ``data`` (a ``MelodyTensor``).

    The batches and forward call are ``training.evaluate``'s (``scoring_batches``), so a wrapped
    model (ensemble, transposition average), a melody memory (which counts only the melody's
    own earlier notes) and a model's context all score exactly as they do there: the mean IC is
    ``evaluate``'s bits/note. In float32; ``distributions`` also keeps each note's predicted
    distribution.
    """
    parts: dict[str, list] = {k: [] for k in ("melody", "position", "token", "log_prob", "entropy", "dist")}
    for idx, y, out in scoring_batches(model, data, batch_size):
        log_p = torch.log_softmax(out.float(), -1)
        mask = y >= 0                   # padding is IGNORE (negative)
        rows, cols = mask.nonzero(as_tuple=True)        # row-major: melody by melody, in note order
        picked = log_p[rows, cols]
        parts["melody"].append(idx[rows].cpu())
        parts["position"].append(cols.cpu())
        parts["token"].append(y[rows, cols].cpu())
        parts["log_prob"].append(picked.gather(-1, y[rows, cols, None]).squeeze(-1).double().cpu())
        # entr(p) = −p ln p, 0 where p is 0 (a −inf log-probability would make p·log p NaN).
        parts["entropy"].append(torch.special.entr(picked.exp()).sum(-1).double().cpu())
        if distributions:
            parts["dist"].append(picked.exp().cpu())
    cat = {k: torch.cat(v).numpy() if v else None for k, v in parts.items()}
    return NoteScores(cat["melody"].astype(np.int64), cat["position"].astype(np.int64),
                      cat["token"].astype(np.int64), cat["log_prob"], cat["entropy"], cat["dist"])


def key_name(key_id: int) -> str:
    """A key feature id (tonic pitch class, + ``MINOR`` in a minor mode) as 'G major'."""
    return f"{_TONICS[key_id % 12]} {'minor' if key_id >= MINOR else 'major'}"


def note_table(scores: NoteScores, melodies: MelodySet, indices: list[int], *,
               context: tuple[str, ...] = ()) -> pd.DataFrame:
    """``scores`` of the melodies at ``indices`` of ``melodies`` as one row per note.

    Columns, IDyOM's names where IDyOM has one: ``dataset.id``, ``melody.id`` (the file, part
    and tune number; see ``data.melody_ids``), ``melody.name``, ``note.id`` (1-based, per
    melody), ``onset`` and ``dur`` (quarter notes from the melody's first note; NaN without a
    score), ``cpitch`` (MIDI) and ``note`` (its name), ``probability``,
    ``information.content`` and ``entropy`` (bits) (crossval adds ``fold``); where the score gives
    them ``phrase`` (IDyOM's: 1 opens a phrase, −1 ends one), ``bar.offset`` (quarter notes
    into the bar), ``metre`` and ``key``; and ``model.context``, the features the model was
    told (``none`` for a pitch-only model).
    """
    ids = melodies.names
    which = np.asarray(indices)[scores.melody]       # position in ``melodies`` of each note's melody
    enc = melodies.encoding
    table = {
        "dataset.id": melodies.source,
        "melody.id": [ids[i] for i in which],
        "melody.name": [_melody_name(ids[i]) for i in which],
        "note.id": scores.position + 1,
    }
    onset = np.full(len(scores), np.nan)
    dur = np.full(len(scores), np.nan)
    extra: dict[str, np.ndarray] = {}
    if melodies.notes is not None:
        for k in np.unique(scores.melody):
            rows = np.flatnonzero(scores.melody == k)
            notes = melodies.notes[indices[k]]
            on, d = enc.token_times(notes)
            pos = scores.position[rows]
            onset[rows], dur[rows] = on[pos], d[pos]
            if notes.context is not None and enc.name == "pitch":
                _score_columns(extra, rows, pos, notes, len(scores))
    table["onset"], table["dur"] = onset, dur
    keys = scores.token < N_KEYS
    table["cpitch"] = pd.array(np.where(keys, scores.token + LOWEST_MIDI, 0), dtype="Int64").copy()
    table["cpitch"][~keys] = pd.NA             # a grid's hold or rest is no pitch
    table["note"] = [enc.describe_token(t) for t in scores.token]
    table["probability"] = np.exp(scores.log_prob)
    table["information.content"] = scores.information_content
    table["entropy"] = scores.entropy / LN2
    table.update(extra)
    table["model.context"] = "+".join(context) or "none"
    return pd.DataFrame(table)


def _melody_name(melody_id: str) -> str:
    """A melody's short name: its file's stem, and its tune number in a multi-tune file."""
    path, _, number = melody_id.partition("#")
    stem = Path(path.split(":")[0]).stem
    return f"{stem} #{number}" if number else stem


def _score_columns(out: dict, rows: np.ndarray, pos: np.ndarray, notes, n: int) -> None:
    """The score's phrase, bar position, metre and key of the notes at ``pos`` (pitch encoding:
    its sounding notes), written into ``out``'s columns at ``rows``."""
    if not out:
        out.update({"phrase": np.zeros(n, np.int64), "bar.offset": np.full(n, np.nan),
                    "metre": np.full(n, "", object), "key": np.full(n, "", object)})
    c = notes.context.take(notes.pitches >= 0)
    ends = c.phrase_ends.astype(bool)
    starts = np.concatenate([[True], ends[:-1]])    # the first note, and every note after an end
    out["phrase"][rows] = np.where(ends, -1, np.where(starts, 1, 0))[pos]
    out["bar.offset"][rows] = c.bar_offsets[pos]
    out["metre"][rows] = [f"{a}/{b}" if a else "" for a, b in c.metres[pos]]
    out["key"][rows] = [key_name(int(k)) for k in c.keys[pos]]


def per_melody(table: pd.DataFrame) -> pd.DataFrame:
    """Each melody's mean IC and entropy (bits) and its number of notes (IDyOM's ``:detail 2``),
    in the table's order."""
    by = table.groupby(["melody.id", "melody.name"], sort=False)
    out = by.agg(**{"mean.information.content": ("information.content", "mean"),
                    "mean.entropy": ("entropy", "mean"), "n.notes": ("note.id", "size")}).reset_index()
    if "fold" in table:
        out["fold"] = by["fold"].first().to_numpy()
    return out


def surprise(model: torch.nn.Module, melodies: MelodySet, indices: list[int] | None = None,
             device: str = "auto") -> pd.DataFrame:
    """The per-note table (``note_table``) of ``model`` on ``melodies`` (those at ``indices``;
    default all), e.g. a trained model's on a folder of stimuli::

        model, _ = load_checkpoint("runs/study/best_model.pt")
        table = surprise(model, load_dataset("stimuli/"))
    """
    return score_melodies(model, melodies, indices, device)[0]


def score_melodies(model: torch.nn.Module, melodies: MelodySet, indices: list[int] | None = None,
                   device: str = "auto", distributions: bool = False) -> tuple[pd.DataFrame, NoteScores]:
    """``surprise``'s table and the scores behind it (with ``distributions``, every note's
    predicted distribution, row for row with the table)."""
    indices = list(range(len(melodies.melodies))) if indices is None else list(indices)
    dev = pick_device(device)
    model = model.to(dev)
    scores = score_notes(model, melodies.tensor(indices, dev), distributions=distributions)
    return note_table(scores, melodies, indices, context=tuple(getattr(model, "context", ()))), scores


@dataclass
class FoldNotes:
    """One crossval fold's test notes: the per-note table, and each note's distribution if asked."""

    table: pd.DataFrame
    melody: np.ndarray                  # each row's melody: its index in the collection
    distribution: np.ndarray | None = None

    @property
    def bits_per_note(self) -> float:
        return float(self.table["information.content"].mean())


def fold_notes(model: torch.nn.Module, pool: MelodySet, test_idx: list[int], fold: int,
               device: torch.device, distributions: bool = False) -> FoldNotes:
    """Fold ``fold``'s model scored on its test melodies (``test_idx`` of ``pool``), note by note."""
    table, scores = score_melodies(model, pool, test_idx, str(device), distributions)
    table.insert(table.columns.get_loc("information.content") + 2, "fold", fold + 1)    # 1-based, as printed
    return FoldNotes(table, np.asarray(test_idx)[scores.melody], scores.distribution)


def joined_notes(folds: list[FoldNotes]) -> pd.DataFrame:
    """Every fold's notes as one table, melodies in the collection's order: each note scored by
    the fold model that did not train on its melody."""
    table = pd.concat([f.table for f in folds], ignore_index=True)
    return table.iloc[_collection_order(folds)].reset_index(drop=True)


def _collection_order(folds: list[FoldNotes]) -> np.ndarray:
    """The order of the folds' rows (concatenated) that puts the melodies as in the collection,
    each one's notes in order."""
    melody = np.concatenate([f.melody for f in folds])
    note = np.concatenate([f.table["note.id"].to_numpy() for f in folds])
    return np.lexsort((note, melody))


def write_notes(table: pd.DataFrame, folds: list[FoldNotes], path: str, distributions: str,
                melodies: MelodySet) -> None:
    """Crossval's per-note table to ``path`` and, with ``distributions``, every note's
    distribution (both skipped when not asked for)."""
    if path:
        write_table(table, path)
    if distributions:
        dist = np.concatenate([f.distribution for f in folds])[_collection_order(folds)]
        write_distributions(distributions, table, dist,
                            [melodies.encoding.describe_token(t) for t in range(melodies.vocab_size)])


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """The per-note (or per-melody) table as CSV or Parquet, as the file name says; atomically."""
    p = check_table_file("out", str(path))
    if p.suffix.lower() == ".parquet":
        return atomic_write(p, lambda tmp: table.to_parquet(tmp, index=False))
    return atomic_write(p, table.to_csv(index=False))


def write_distributions(path: str | Path, table: pd.DataFrame, distributions: np.ndarray,
                        vocabulary: list[str]) -> Path:
    """Every note's predicted distribution as an ``.npz``: ``probabilities`` [notes, vocabulary]
    row for row with ``table``, the ``melody_id`` and ``note_id`` of each row, and ``vocabulary``
    (each column's note name), like IDyOM's ``.dat`` output."""
    import io
    p = check_npz_file("distributions", str(path))
    buf = io.BytesIO()
    np.savez_compressed(buf, probabilities=distributions.astype(np.float32),
                        melody_id=table["melody.id"].to_numpy(str), note_id=table["note.id"].to_numpy(),
                        vocabulary=np.array(vocabulary))
    return atomic_write(p, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chromasonic_lib.surprise", description=(
        "Every note's information content and entropy under a trained model, one row per note "
        "(IDyOM's column names)."))
    p.add_argument("--model", required=True, help="a checkpoint: train_best's model.pt, a study's best_model.pt")
    p.add_argument("--melodies", required=True,
                   help="a folder of MIDI, MusicXML or ABC files, or a corpus name (chorales-185, essen, …)")
    p.add_argument("--out", required=True, help="the table: FILE.csv or FILE.parquet")
    p.add_argument("--distributions", default="", metavar="FILE.npz",
                   help="also write every note's whole predicted distribution")
    p.add_argument("--limit", type=int, default=0, help="score only the first N files")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        table = run_surprise(args.model, args.melodies, args.out, args.distributions, args.limit, args.device)
    except ChromasonicError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    mel = per_melody(table)
    print(f"{len(table)} notes of {len(mel)} melodies: {table['information.content'].mean():.3f} "
          f"bits/note (mean IC), mean entropy {table['entropy'].mean():.3f} bits; wrote {args.out}")
    return 0


def run_surprise(model_path: str, melodies: str, out: str, distributions: str = "", limit: int = 0,
                 device: str = "auto") -> pd.DataFrame:
    """What the command does: score ``melodies`` (a folder or corpus; unreadable files named and
    skipped) with the checkpoint at ``model_path`` and write the table to ``out``."""
    from .checkpoints import load_checkpoint
    check_table_file("out", out)
    if distributions:
        check_npz_file("distributions", distributions)
    path = resolve(model_path)
    if not path.is_file():
        raise ConfigError(f"model: no such checkpoint file {model_path!r}")
    model, meta = load_checkpoint(path, device=pick_device(device))
    data = load_dataset(melodies, meta.get("encoding", "pitch"), limit=limit or None)
    for file, reason in data.skipped_files:
        print(f"skipped {file}: {reason}", file=sys.stderr)
    table, scores = score_melodies(model, data, device=device, distributions=bool(distributions))
    write_table(table, out)
    if distributions:
        write_distributions(distributions, table, scores.distribution,
                            [data.encoding.describe_token(t) for t in range(data.vocab_size)])
    return table


if __name__ == "__main__":
    sys.exit(main())
