"""Splits by tune (copies of one, see ``copies``, on one side), k folds, and device tensors.

Batches are cut from one padded tensor that lives on the training device, so the training
loop does no per-melody Python work: transposition and shuffling are tensor operations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError
from .context import transpose_keys
from .copies import MelodyGroups, melody_groups
from .encodings import N_KEYS

IGNORE = -100               # target value that the loss skips (padding)
JITTER = 0.25               # batches group melodies of similar length, ± this fraction


@dataclass
class Splits:
    train: list[np.ndarray]
    val: list[np.ndarray]
    test: list[np.ndarray]
    groups: MelodyGroups | None = None      # how the melodies were kept together, when split here
    index: dict[str, list[int]] | None = None   # side -> positions of its melodies in the list split

    def describe(self) -> str:
        notes = [sum(len(m) for m in s) for s in (self.train, self.val, self.test)]
        copies = f"; {self.groups.describe()}" if self.groups and self.groups.n_copies else ""
        return (f"train {len(self.train)} melodies ({notes[0]:,} notes), val {len(self.val)} "
                f"({notes[1]:,}), test {len(self.test)} ({notes[2]:,}){copies}")


def split(melodies: list[np.ndarray], val_fraction: float = 0.1, test_fraction: float = 0.1,
          seed: int = 42) -> Splits:
    """Seeded split by tune: copies of one (see ``melody_groups``) never land on two sides."""
    grouping = melody_groups(melodies)
    groups = grouping.groups
    order = np.random.default_rng(seed).permutation(len(groups))
    n = len(melodies)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n_val == 0 or n - n_val - n_test <= 0:
        raise DataError(f"{n} melodies are too few to split with val_fraction={val_fraction} "
                        f"and test_fraction={test_fraction}")
    if test_fraction > 0 and n_test == 0:
        # Caught here, before any training: train_best's test would otherwise crash after it.
        raise DataError(f"test_fraction={test_fraction} of {n} melodies rounds to no test melody; "
                        f"allowed: a test_fraction above {0.5 / n:.3g} (one melody), or "
                        f"more melodies")
    index: dict[str, list[int]] = {"test": [], "val": [], "train": []}
    for g in order:
        side = "test" if len(index["test"]) < n_test else "val" if len(index["val"]) < n_val else "train"
        index[side].extend(groups[g])
    out = {side: [melodies[i] for i in rows] for side, rows in index.items()}
    return Splits(out["train"], out["val"], out["test"], grouping, index)


def hold_out(melodies: list[np.ndarray], indices: list[int], fraction: float, seed: int
             ) -> tuple[list[int], list[int]]:
    """``indices`` (into ``melodies``) as (to train on, held out for early stopping): about
    ``fraction`` of them held out, by tune (``split``); with ``fraction`` 0, none."""
    if not fraction:
        return list(indices), []
    inner = split([melodies[i] for i in indices], fraction, 0.0, seed)
    return tuple([indices[k] for k in inner.index[side]] for side in ("train", "val"))


def kfold(melodies: list[np.ndarray], k: int = 10, seed: int = 42) -> list[tuple[list[int], list[int]]]:
    """k (train indices, test indices) pairs: disjoint test folds that cover every melody once.

    Copies of one tune (see ``melody_groups``) share a fold.
    """
    groups = melody_groups(melodies).groups
    if k < 2 or k > len(groups):
        raise DataError(f"folds must be between 2 and {len(groups)} (the distinct tunes: copies of one "
                        f"share a fold), got {k}")
    order = np.random.default_rng(seed).permutation(len(groups))
    folds: list[list[int]] = [[] for _ in range(k)]
    for g in order:     # greedy: each group to the currently smallest fold, sizes stay even
        min(folds, key=len).extend(groups[g])
    everything = set(range(len(melodies)))
    return [(sorted(everything - set(f)), sorted(f)) for f in folds]


class MelodyTensor:
    """Melodies as one padded LongTensor on a device, with lengths and per-melody pitch range.

    Transposition moves the tokens below ``n_keys`` (the piano keys, in every encoding) up or
    down together and keeps them below it; ``n_keys=0`` leaves every melody as it is.
    ``contexts``: each melody's context feature ids [T, len(context_features)], padded alike
    (see :meth:`context`).
    """

    def __init__(self, melodies: list[np.ndarray], device: torch.device | str = "cpu",
                 n_keys: int = N_KEYS, contexts: list[np.ndarray] | None = None,
                 context_features: tuple[str, ...] = ()):
        melodies = [np.asarray(m, dtype=np.int64) for m in melodies]
        if not melodies:
            raise DataError("no melodies to build a tensor from")
        lengths = np.array([len(m) for m in melodies])
        tokens = np.zeros((len(melodies), lengths.max()), dtype=np.int64)
        lo = np.zeros(len(melodies), dtype=np.int64)
        hi = np.zeros(len(melodies), dtype=np.int64)
        for i, m in enumerate(melodies):
            tokens[i, :len(m)] = m
            keys = m[m < n_keys]
            if len(keys):
                lo[i], hi[i] = keys.min(), keys.max()
        self.n_keys = n_keys
        self.tokens = torch.from_numpy(tokens).to(device)
        # On the host too: batch lengths are cut there, without waiting for the device.
        self.host_lengths = torch.from_numpy(lengths)
        self.lengths = self.host_lengths.to(device)
        valid = torch.arange(tokens.shape[1], device=device)[None, :] < self.lengths[:, None]
        self.is_key = valid & (self.tokens < n_keys)
        # How far each melody may move and stay on the keyboard (with no keys: nowhere).
        self.max_down = torch.from_numpy(lo).to(device)
        self.max_up = torch.from_numpy(np.maximum(n_keys - 1 - hi, 0)).to(device)
        self.context_features = tuple(context_features) if contexts is not None else ()
        self.contexts = None
        if contexts is not None:
            padded = np.zeros((*tokens.shape, len(self.context_features)), dtype=np.int32)
            for i, c in enumerate(contexts):
                padded[i, :len(c)] = c
            self.contexts = torch.from_numpy(padded).to(device)     # int32: embeddings take it

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_predicted(self) -> int:
        """Notes that get predicted: every one, the first of each melody from the start token."""
        return int(self.lengths.sum())

    def batch(self, idx: torch.Tensor, shifts: torch.Tensor | None = None, *, bos: int,
              length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs [B, L] and targets [B, L] (``IGNORE`` on padding), cut to the batch's length L.

        The inputs are the start token ``bos`` followed by notes 0..L-2, the targets notes
        0..L-1: the output at step t predicts note t, so every note is scored. ``bos`` is the
        model's (its ``vocab_size``): the data never know the vocabulary. ``length``, the
        longest melody in ``idx``, if the caller knows it: finding it waits for the device.
        """
        length = int(self.lengths[idx].max()) if length is None else length
        x = self.tokens[idx, :length]
        if shifts is not None:
            x = x + shifts[:, None] * self.is_key[idx, :length]
        start = torch.full((len(idx), 1), bos, dtype=x.dtype, device=x.device)
        mask = torch.arange(length, device=x.device)[None, :] < self.lengths[idx, None]
        return torch.cat([start, x[:, :-1]], 1), torch.where(mask, x, IGNORE)

    def context(self, idx: torch.Tensor, names: tuple[str, ...], length: int,
                shifts: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The named context features [B, length] of the notes that ``batch`` gives as targets.

        The output at step t predicts note t and may know what the score fixes about it (its
        duration, place in the bar, phrase end, key), never its pitch; earlier notes' context
        reaches it through the earlier steps. With ``shifts`` (as given to ``batch``) the
        key's tonic moves with the notes.
        """
        missing = [n for n in names if n not in self.context_features]
        if missing:
            have = (f"they have {', '.join(self.context_features)}" if self.context_features else
                    "token lists have no notes behind them, so no duration, metre, phrase or key")
            raise DataError(f"the model reads the context feature {missing[0]!r}, which these "
                            f"melodies do not have ({have})")
        c = self.contexts[idx, :length]
        out = {n: c[..., self.context_features.index(n)] for n in names}
        if "key" in out and shifts is not None:
            out["key"] = transpose_keys(out["key"], shifts[:, None].to(c.dtype))
        return out

    def random_shifts(self, idx: torch.Tensor, max_shift: int, generator: torch.Generator
                      ) -> torch.Tensor:
        """A random transposition per melody in ±max_shift semitones that stays on the keyboard."""
        low = torch.clamp(self.max_down[idx], max=max_shift)
        high = torch.clamp(self.max_up[idx], max=max_shift)
        u = torch.rand(len(idx), generator=generator, device="cpu").to(idx.device)
        return (u * (low + high + 1)).long().clamp(max=low + high) - low


def epoch_batches(data: MelodyTensor, min_tokens: int, batch_size: int,
                  generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches of melody indices (on the host), in random order.

    A small set is repeated until the epoch holds ``min_tokens`` notes (each time freshly
    shuffled and transposed), so tiny data sets get enough optimizer steps between two
    validation reports while a large corpus is still seen once per epoch.

    Within each pass the melodies are sorted by their length, jittered by up to ±``JITTER``,
    before being cut into batches: a batch is as long as its longest melody, and randomly
    drawn chorale batches were half padding (the recurrent kernels pay for every padded step).
    The jitter keeps the batches' make-up changing from epoch to epoch.
    """
    lengths = data.host_lengths.double()
    out: list[torch.Tensor] = []
    for _ in range(epoch_repeats(data, min_tokens)):
        perm = torch.randperm(len(data), generator=generator)
        jitter = 1 + JITTER * (2 * torch.rand(len(data), generator=generator, dtype=torch.float64) - 1)
        perm = perm[torch.argsort(lengths[perm] * jitter[perm], stable=True)]
        out += list(perm.split(batch_size))
    order = torch.randperm(len(out), generator=generator)
    return [out[i] for i in order]



def n_batches(data: MelodyTensor, min_tokens: int, batch_size: int) -> int:
    """How many batches ``epoch_batches`` gives."""
    return epoch_repeats(data, min_tokens) * math.ceil(len(data) / batch_size)


def epoch_repeats(data: MelodyTensor, min_tokens: int) -> int:
    return max(1, math.ceil(min_tokens / max(1, int(data.lengths.sum()))))
