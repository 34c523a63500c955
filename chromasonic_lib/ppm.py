"""IDyOM's PPM models of pitch, as its software computes them (``ppm-star/ppm-star.lisp`` and
``mvs/prediction-sets.lisp`` of github.com/mtpearce/idyom, with the defaults of
``mvs/params.lisp``): the literature's baseline, run on the results table's own folds
(``benchmarks/idyom_ppm.py``). A reference to measure against, not a model the search tunes.

A PPM model counts what followed every context, of every length. A note is predicted from the
longest context that ends the melody so far and occurred before, or, when that context is
deterministic (one continuation only), from the shortest deterministic context below it
(PPM*, Cleary & Teahan 1997). The estimate interpolates every order from there down to a
uniform order -1, each weighted by its escape method, with exclusion, then normalised.

- The long-term model (LTM) is counted on the training melodies: escape C, no update exclusion.
- The short-term model (STM) is counted on the melody so far, note by note: escape X, with
  update exclusion (a note counts in the longest context it had followed before, and in the
  contexts it had never followed, not in the shorter ones), except where PPM* chose a shorter
  context.
- Both: their distributions combined note by note by a geometric mean weighted by each one's
  relative entropy to the power −7 (IDyOM's ``geometric-combination``, ``*ltm-stm-bias*`` 7).
- A ``+`` (IDyOM's default, ``both+``): the long-term model also counts each test melody as it
  predicts it, and keeps it for the next one.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

END = -1        # the end of a training melody (IDyOM's sentinel): a continuation, never predicted
BIAS = 7        # IDyOM's *ltm-stm-bias*


class PPM:
    """PPM* over ``alphabet`` (IDyOM's: the pitches of the whole collection).

    Parameters
    ----------
    alphabet : sequence of int
        The symbols a prediction spreads over.
    escape : {"c", "x"}
        The escape method: C (weight = tokens / (tokens + types)) or X (types: the symbols seen
        once, plus one).
    update_exclusion : bool
        Keep update-excluded counts beside the full ones, and predict from them.
    """

    def __init__(self, alphabet: Sequence[int], escape: str = "c", update_exclusion: bool = False):
        self.alphabet = sorted(set(int(a) for a in alphabet))
        self.index = {a: i for i, a in enumerate(self.alphabet)}
        self.escape, self.update_exclusion = escape, update_exclusion
        # context (a tuple of symbols) -> {what followed it (a symbol or END): how often}
        self.counts: dict[tuple, dict[int, int]] = defaultdict(dict)
        self.excluded_counts: dict[tuple, dict[int, int]] = defaultdict(dict)

    @classmethod
    def long_term(cls, alphabet: Sequence[int], melodies: Iterable[Sequence[int]]) -> "PPM":
        """IDyOM's LTM, counted on ``melodies`` (each ended by END)."""
        model = cls(alphabet, "c")
        for melody in melodies:
            seq = [int(s) for s in melody] + [END]
            for i, s in enumerate(seq):
                model.update(seq[:i], s)
        return model

    @classmethod
    def short_term(cls, alphabet: Sequence[int]) -> "PPM":
        """IDyOM's STM, empty: ``update`` it with each note once it is predicted."""
        return cls(alphabet, "x", update_exclusion=True)

    def update(self, history: Sequence[int], symbol: int) -> None:
        """Count ``symbol`` after every context that ends ``history``, the longest first."""
        h, longest_seen = tuple(int(s) for s in history), False
        for j in range(len(h) + 1):
            full = self.counts[h[j:]]
            seen = symbol in full
            full[symbol] = full.get(symbol, 0) + 1
            if self.update_exclusion:
                excluded = self.excluded_counts[h[j:]]
                if not seen:                    # a new string starts at 1
                    excluded[symbol] = 1
                elif not longest_seen:          # the longest one seen before counts it again
                    excluded[symbol] = excluded.get(symbol, 0) + 1
                    longest_seen = True

    def _start(self, h: tuple) -> tuple[int, bool]:
        """The order of the context a prediction after ``h`` starts from, and whether PPM*
        chose it below the longest."""
        longest = next(k for k in range(len(h), -1, -1) if k == 0 or h[len(h) - k:] in self.counts)
        order = longest
        # The shortest of the deterministic contexts that run down from the longest one (the
        # empty context, order 0, is never taken for one).
        while order > 1 and len(self.counts[h[len(h) - order:]]) == 1 \
                and len(self.counts[h[len(h) - order + 1:]]) == 1:
            order -= 1
        return order, order != longest

    def distribution(self, history: Sequence[int]) -> np.ndarray:
        """The probability of each symbol of the alphabet after ``history``."""
        h = tuple(int(s) for s in history)
        order, chosen = self._start(h)
        counts = self.excluded_counts if self.update_exclusion and not chosen else self.counts
        p, escape, excluded = np.zeros(len(self.alphabet)), 1.0, {}
        for k in range(order, -1, -1):
            seen = {s: c for s, c in counts.get(h[len(h) - k:], {}).items() if s in self.index}
            # The tokens of the symbols seen at the order above are excluded, their types not
            # (IDyOM's state-count and type-count).
            tokens = sum(c for s, c in seen.items() if s not in excluded)
            types = len(seen) if self.escape == "c" else 1 + sum(c == 1 for c in seen.values())
            weight = tokens / (tokens + types) if tokens else 0.0
            for s, c in seen.items():
                p[self.index[s]] += escape * weight * c / tokens if tokens else 0.0
            escape, excluded = escape * (1.0 - weight), seen
        # Order -1: uniform over the symbols not seen at order 0 (IDyOM's, with exclusion).
        root = sum(1 for s in counts.get((), {}) if s in self.index)
        p += escape / (len(self.alphabet) + 1 - root)
        return p / p.sum()


def combine(distributions: Sequence[np.ndarray], bias: float = BIAS) -> np.ndarray:
    """IDyOM's weighted geometric mean: each distribution weighted by its entropy relative to
    the alphabet's maximum, to the power ``-bias`` (the surer model counts more)."""
    ps = np.array(distributions)
    entropy = -(ps * np.log2(np.maximum(ps, np.finfo(float).tiny))).sum(1)
    weights = (entropy / np.log2(ps.shape[1])) ** -bias
    combined = np.prod(ps ** (weights / weights.sum())[:, None], axis=0)
    return combined / combined.sum()


MODELS = ("ltm", "ltm+", "stm", "both", "both+")     # IDyOM's *models*; both+ is its default


def information_content(train: Iterable[Sequence[int]], test: Iterable[Sequence[int]],
                        alphabet: Sequence[int], models: str = "both+", bias: float = BIAS) -> list[np.ndarray]:
    """−log₂ p of each note of each ``test`` melody, from the notes before it, as IDyOM's
    ``models`` predict it: the long-term model counted on ``train`` (``ltm``; with ``+``, also
    counted on each test melody as it is predicted, and kept for the next), the short-term
    model counted on the melody so far (``stm``), or ``both`` combined."""
    if models not in MODELS:
        raise ValueError(f"models must be one of {', '.join(MODELS)}, got {models!r}")
    ltm = PPM.long_term(alphabet, train) if models != "stm" else None
    learn = models.endswith("+")
    out = []
    for melody in test:
        melody, ic = [int(s) for s in melody], []
        stm = PPM.short_term(alphabet) if models in ("stm", "both", "both+") else None
        for i, s in enumerate(melody):
            ps = [m.distribution(melody[:i]) for m in (ltm, stm) if m is not None]
            ic.append(-np.log2((combine(ps, bias) if len(ps) > 1 else ps[0])[(ltm or stm).index[s]]))
            for m in (ltm if learn else None, stm):
                if m is not None:
                    m.update(melody[:i], s)
        if learn:
            ltm.update(melody, END)
        out.append(np.array(ic))
    return out
