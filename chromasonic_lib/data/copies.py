"""Copies of one tune in a collection (identical, transposed, or variants), so splits keep them together.

The chorales hold several harmonisations of one chorale tune, the folk collections several
versions of one song. Transposition augmentation can turn a transposed copy in the training
set into the very melody being tested, and a variant is most of it, so a split that separates
copies leaks. ``melody_groups`` finds them; union-find makes the grouping transitive.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .encodings import N_KEYS

# Two melodies are variants of one tune when the longest common subsequence (LCS) of their
# pitch changes covers VARIANT_SIMILARITY of them: 2·LCS / (len a + len b). In chorales-185 all
# 31 pairs at 0.8 or above are settings of one chorale tune (neighbouring BWV numbers); pairs
# of unrelated chorales, mostly stepwise, reach 0.76 by chance. As a null, comparing each Essen
# melody with the others' retrogrades finds 22 chance pairs, against 1,509 real ones.
VARIANT_SIMILARITY = 0.8
# Only pairs that share at least SHARED_RUNS runs of RUN pitch changes are compared; a run
# found in more than COMMON_RUN melodies is a cliché (a scale, an arpeggio) and counts for
# none. Against comparing every pair, this finds all 375 of the chorales' pairs and 220 of 224
# in a sample of 3,000 Essen melodies, and groups all of Essen (8,433) in about a second.
RUN = 7
SHARED_RUNS = 2
COMMON_RUN = 50
_SPAN = 2 * N_KEYS - 1      # pitch changes lie in -87..87
_CHUNK = 512                # pairs compared at once (sorted by length, so little padding)


@dataclass
class MelodyGroups:
    """Melodies grouped by tune, and how many copies of each kind joined a group."""

    groups: list[list[int]]     # melody indices, each group sorted, groups by first melody
    n_identical: int            # melodies that repeat another token for token
    n_transposed: int           # ... that repeat another up to transposition
    n_variants: int             # ... that are a variant of another (VARIANT_SIMILARITY)

    @property
    def n_melodies(self) -> int:
        return sum(len(g) for g in self.groups)

    @property
    def n_copies(self) -> int:
        return self.n_melodies - len(self.groups)

    def describe(self) -> str:
        """E.g. '186 melodies in 162 groups: 24 copies (1 transposed, 23 near-identical) kept together'."""
        counted = ((self.n_identical, "identical"), (self.n_transposed, "transposed"),
                   (self.n_variants, "near-identical"))
        kinds = [f"{n} {kind}" for n, kind in counted if n]
        copies = f"{self.n_copies} {'copy' if self.n_copies == 1 else 'copies'} ({', '.join(kinds)})" \
            if kinds else "no copies"
        return f"{self.n_melodies} melodies in {len(self.groups)} groups: {copies} kept together"


def melody_groups(melodies: list[np.ndarray]) -> MelodyGroups:
    """Group the copies of each tune: identical, transposed, or variants (see VARIANT_SIMILARITY)."""
    parent = list(range(len(melodies)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = i = parent[parent[i]]
        return i

    n_sets = []
    for key in (_identity_key, _transposition_key):
        first: dict[bytes, int] = {}
        for i, m in enumerate(melodies):
            parent[find(i)] = find(first.setdefault(key(m), i))
        n_sets.append(sum(find(i) == i for i in range(len(melodies))))
    steps = [_steps(m) for m in melodies]
    same_steps: dict[bytes, int] = {}
    for i, s in enumerate(steps):       # same pitch changes, other rhythm: even a cliché's copies
        if len(s) >= RUN + SHARED_RUNS - 1:
            parent[find(i)] = find(same_steps.setdefault(s.tobytes(), i))
    for i, j in _variant_pairs(steps):
        parent[find(i)] = find(j)
    grouped: dict[int, list[int]] = {}
    for i in range(len(melodies)):
        grouped.setdefault(find(i), []).append(i)
    groups = list(grouped.values())
    return MelodyGroups(groups, len(melodies) - n_sets[0], n_sets[0] - n_sets[1], n_sets[1] - len(groups))


def not_copies(tested: list[np.ndarray], other: list[np.ndarray]) -> list[int]:
    """The indices of ``other``'s melodies that are no copy of a tune of ``tested`` (identical,
    transposed or a variant: grouped with one of its melodies by :func:`melody_groups`)."""
    n = len(tested)
    copies = {i - n for g in melody_groups(list(tested) + list(other)).groups if g[0] < n for i in g if i >= n}
    return [i for i in range(len(other)) if i not in copies]


def _identity_key(m: np.ndarray) -> bytes:
    return np.asarray(m, dtype=np.int64).tobytes()


def _transposition_key(m: np.ndarray) -> bytes:
    """Equal for melodies equal up to transposition: keys relative to the first key, other tokens as they are.

    Works in every encoding: relative keys lie in -87..87, never on a hold or rest token (≥ N_KEYS).
    """
    m = np.asarray(m, dtype=np.int64)
    keys = m < N_KEYS
    first = m[keys][0] if keys.any() else 0
    return np.where(keys, m - first, m).tobytes()


def _steps(m: np.ndarray) -> np.ndarray:
    """Pitch changes: the intervals between a melody's keys, repeated notes dropped.

    The same in every encoding, and blind to rhythm, ties and re-struck notes, where
    variants of one tune differ most often.
    """
    m = np.asarray(m, dtype=np.int64)
    steps = np.diff(m[m < N_KEYS])
    return steps[steps != 0]


def _variant_pairs(steps: list[np.ndarray]) -> np.ndarray:
    """Pairs [i, j] of melodies that are variants of one tune."""
    lengths = np.array([len(s) for s in steps])
    i, j = _candidates(steps).T
    # The pitch changes both have, counted with multiplicity, bound the LCS from above: most
    # candidates stop here.
    counts = np.zeros((len(steps), _SPAN), dtype=np.int16)
    for k, s in enumerate(steps):
        np.add.at(counts[k], s + N_KEYS - 1, 1)
    common = np.concatenate([np.minimum(counts[i[k:k + _CHUNK]], counts[j[k:k + _CHUNK]]).sum(axis=1)
                             for k in range(0, len(i), _CHUNK)] or [np.zeros(0, dtype=np.int64)])
    maybe = 2 * common >= VARIANT_SIMILARITY * (lengths[i] + lengths[j])
    i, j = i[maybe], j[maybe]
    order = np.argsort(np.maximum(lengths[i], lengths[j]), kind="stable")   # similar lengths pad less
    i, j = i[order], j[order]
    lcs = [_lcs([steps[a] for a in i[k:k + _CHUNK]], [steps[b] for b in j[k:k + _CHUNK]])
           for k in range(0, len(i), _CHUNK)]
    similar = 2 * np.concatenate(lcs or [np.zeros(0, dtype=np.int64)])
    similar = similar >= VARIANT_SIMILARITY * (lengths[i] + lengths[j])
    return np.stack([i[similar], j[similar]], axis=1)


def _candidates(steps: list[np.ndarray]) -> np.ndarray:
    """Pairs [i, j] (i < j) sharing at least SHARED_RUNS runs of RUN pitch changes that are no cliché."""
    powers = _SPAN ** np.arange(RUN, dtype=np.int64)       # a run as one integer
    rows, runs = [], []
    for i, s in enumerate(steps):
        if len(s) >= RUN:
            r = np.unique(np.lib.stride_tricks.sliding_window_view(s + N_KEYS - 1, RUN) @ powers)
            rows.append(np.full(len(r), i))
            runs.append(r)
    if not runs:
        return np.zeros((0, 2), dtype=np.int64)
    rows, runs = np.concatenate(rows), np.concatenate(runs)
    _, run_id, n_melodies = np.unique(runs, return_inverse=True, return_counts=True)
    keep = (n_melodies[run_id] >= 2) & (n_melodies[run_id] <= COMMON_RUN)
    has = sparse.csr_matrix((np.ones(keep.sum(), dtype=np.int32), (rows[keep], run_id[keep])),
                            shape=(len(steps), len(n_melodies)))
    shared = sparse.triu(has @ has.T, k=1).tocoo()
    ok = shared.data >= SHARED_RUNS
    return np.stack([shared.row[ok], shared.col[ok]], axis=1).astype(np.int64)


def _lcs(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """Length of the longest common subsequence of each pair (a[k], b[k]), all pairs at once.

    The dynamic programme row by row: row[j] = max(up[j], up[j-1] + match[j], row[j-1]), and
    the last term is a running maximum along the row.
    """
    x = np.full((len(a), max(map(len, a))), _SPAN, dtype=np.int64)      # two paddings outside
    y = np.full((len(b), max(map(len, b))), -_SPAN, dtype=np.int64)     # -87..87 that never match
    for k, (s, t) in enumerate(zip(a, b)):
        x[k, :len(s)], y[k, :len(t)] = s, t
    row = np.zeros((len(a), y.shape[1] + 1), dtype=np.int32)
    for i in range(x.shape[1]):
        row[:, 1:] = np.maximum.accumulate(np.maximum(row[:, 1:], row[:, :-1] + (x[:, i, None] == y)), axis=1)
    return row[:, -1]
