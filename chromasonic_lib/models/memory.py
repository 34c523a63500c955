"""The melody memory: any model plus a short-term memory of the melody it is predicting
(:class:`MelodyMemory`, :func:`remember`), optionally linked to the notes' rhythm."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .ensemble import Wrapper, _forward, _step

# Every family can add a short-term memory of the melody it is predicting (MelodyMemory);
# memory_order 0 means none.
MEMORY_DEFAULTS: dict[str, Any] = {"memory_order": 0, "memory_alpha": 1.0, "memory_rhythm": 0.0}
# What the rhythm-linked memory (memory_rhythm) matches besides the notes, of those a model reads.
RHYTHM = ("duration", "metre", "phrase")

def remember(log_p: torch.Tensor, x: torch.Tensor, order: int, alpha: float,
             linked: torch.Tensor | None = None, linked_alpha: float = 0.0) -> torch.Tensor:
    """The melody memory (see :class:`MelodyMemory`) applied to next-note log-probabilities.

    ``log_p`` [B, T, V] predicts the token after each position of ``x`` [B, T] (a start token,
    then notes; right-padded). The start token never recurs, so no context holding it ever
    matches: the memory counts notes only. With ``linked`` [B, T, T] (the note predicted at t
    and the one after s have the same duration, place in the bar and phrase end), the
    rhythm-linked memory, alpha ``linked_alpha``, then counts the matches where it holds too:
    the same comparisons serve both.
    """
    B, T, V = log_p.shape
    counts, linked_counts = [], []
    # No gradient: the counts are the melody's, not the model's. No autocast: bf16 would round
    # counts above 256 in training (bmm autocasts), and the reported loss is computed without it.
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        same = x[:, :, None] == x[:, None, :]                 # [B, T, T]: x_t == x_s
        match = same & torch.ones(T, T, dtype=torch.bool, device=x.device).tril(-1)  # s < t
        after = torch.zeros(B, T, V, device=x.device, dtype=log_p.dtype)  # one-hot of the note after s
        after[:, :-1].scatter_(2, x[:, 1:, None], 1.0)
        for k in range(1, min(order, T - 1) + 1):      # a context of k notes needs k+1 notes to recur
            if k > 1:   # a context of k notes: the notes k-1 back agree as well
                back = torch.zeros_like(same)
                back[:, k - 1:, k - 1:] = same[:, :T - k + 1, :T - k + 1]
                match = match & back
            counts.append(torch.bmm(match.to(log_p.dtype), after))       # [B, T, V]
            if linked is not None:
                linked_counts.append(torch.bmm((match & linked).to(log_p.dtype), after))
    out = _mix(log_p, counts, _alphas(alpha, order, len(counts)))
    return out if linked is None else _mix(out, linked_counts, _alphas(linked_alpha, order, len(counts)))


def _alphas(alpha: float, order: int, n: int) -> list[float]:
    """a_k = alpha · 2^(order - k) for the orders k = 1..n: a long context heard before counts most."""
    return [alpha * 2.0 ** (order - k) for k in range(1, n + 1)]


def _mix(log_p: torch.Tensor, counts: list[torch.Tensor], alphas: list[float]) -> torch.Tensor:
    """log p_K, where p_k = (c_k + a_k · p_{k-1}) / (n_k + a_k) and p_0 = exp(log_p).

    Unrolled, p_K = A + b · p_0 with A and b from the counts alone, so however many orders
    there are the model's prediction goes through one ``logaddexp`` (the training step's
    cost, forward and backward). Mixed in log space: a prediction the base model makes with
    probability e^-200 stays finite (as a probability it would be 0, its log -inf); where
    A is 0 its log, -inf, adds nothing to logaddexp nor to its gradient.
    """
    with torch.no_grad():
        A = torch.zeros_like(log_p)
        log_b = torch.zeros_like(log_p[..., :1])
        for c, a in zip(counts, alphas):
            total = c.sum(-1, keepdim=True) + a
            A = (c + a * A) / total
            log_b += math.log(a) - total.log()
    return torch.logaddexp(A.log(), log_b + log_p)


@dataclass
class MemoryState:
    """Where :meth:`MelodyMemory.step` is in a batch of melodies."""

    base: Any                          # the base model's state
    recent: list[list[int]]            # per melody, its last ``order`` tokens
    # per melody, per order k: each context of k notes heard so far -> counts of the notes after it
    counts: list[list[dict[tuple[int, ...], torch.Tensor]]]
    # The rhythm-linked memory's counts, keyed by (context, rhythm of the note after it), and
    # per melody the rhythm of the note the last step predicted (the next token read).
    rhythm_counts: list[list[dict[tuple, torch.Tensor]]] | None = None
    last_rhythm: list[tuple] | None = None
    position: int = -1                 # of the last token read (0: the start token)


class MelodyMemory(Wrapper):
    """Any model plus a short-term memory of the melody it is predicting.

    Melodies repeat themselves (a chorale's first two phrases are often one phrase sung
    twice), which a model trained on other melodies cannot know. Like IDyOM's short-term
    model, or a cache language model, the memory counts what followed each context of
    1..``order`` notes earlier in the same melody and moves the base model's prediction
    toward it, one order after another:

        p_k(x) = (c_k(x) + a_k · p_{k-1}(x)) / (c_k + a_k),   p_0 = the base model,
        a_k = alpha · 2^(order - k)

    so a long context heard before counts most, and a context never heard leaves the
    prediction unchanged; at the first note nothing has been heard, so the base model's
    prediction stands. Differentiable: a neural base trains through it. ``forward`` returns
    log-probabilities, which the loss and sampling take as logits.

    With ``rhythm`` > 0 (a model that reads some of the context ``RHYTHM``), a second memory of
    the same order, with alpha ``rhythm``, then moves that prediction toward what followed a
    context only where the note after it had the same duration, place in the bar and phrase end
    (those the model reads) as the note being predicted: a phrase sung again repeats its
    rhythm too, so the notes that recur with their rhythm count again. As IDyOM's short-term
    model links pitch with duration and metre (Pearce 2005, System D).
    """

    def __init__(self, base: nn.Module, order: int, alpha: float, rhythm: float = 0.0):
        super().__init__(base)
        self.order, self.alpha, self.rhythm = order, alpha, rhythm
        self.rhythm_features = tuple(n for n in RHYTHM if n in self.context) if rhythm else ()

    def fit(self, x: torch.Tensor, lengths: torch.Tensor) -> "MelodyMemory":
        self.base.fit(x, lengths)
        return self

    def forward(self, x: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        # The memory counts pitches only; the context is the base model's to read.
        log_p = torch.log_softmax(_forward(self.base, x, context).float(), -1)
        # A few melodies at a time: the T×T comparisons of long melodies stay near 64 MB.
        step = max(1, 2 ** 24 // max(1, x.shape[1]) ** 2)
        return torch.cat([remember(log_p[i:i + step], x[i:i + step], self.order, self.alpha,
                                   self._linked(context, slice(i, i + step)), self.rhythm)
                          for i in range(0, len(x), step)])

    def _linked(self, context: dict | None, rows: slice) -> torch.Tensor | None:
        """[b, T, T]: the note predicted at step t has the rhythm of the one predicted at step s
        (the context at a step is the predicted note's); None without the rhythm-linked memory."""
        if not self.rhythm:
            return None
        r = torch.stack([context[n][rows] for n in self.rhythm_features], -1)     # [b, T, F]
        return (r[:, :, None] == r[:, None, :]).all(-1)

    def start(self, batch_size: int) -> MemoryState:
        return MemoryState(self.base.start(batch_size), [[] for _ in range(batch_size)],
                           [[{} for _ in range(self.order)] for _ in range(batch_size)],
                           *(([[{} for _ in range(self.order)] for _ in range(batch_size)],
                               [() for _ in range(batch_size)]) if self.rhythm else ()))

    def step(self, state: MemoryState, tokens: torch.Tensor,
             context: dict | None = None) -> tuple[torch.Tensor, MemoryState]:
        """As :func:`remember` at the new position, from counts kept up to date one note at a
        time instead of comparing the whole melody again."""
        out, state.base = _step(self.base, state.base, tokens, context)
        log_p = torch.log_softmax(out.float(), -1)
        t = state.position = state.position + 1
        rhythm = list(zip(*(context[n].tolist() for n in self.rhythm_features))) if self.rhythm else []
        for b, (recent, tables, token) in enumerate(zip(state.recent, state.counts, tokens.tolist())):
            # The new token follows each context of k notes that ends at the previous position
            # (k < t: a context holding the start token never recurs, so it is never counted).
            for k in range(1, min(self.order, t - 1) + 1):
                keys = [(tables[k - 1], tuple(recent[-k:]))]
                if self.rhythm:     # the new token's rhythm: the last step's predicted note's
                    keys.append((state.rhythm_counts[b][k - 1], (tuple(recent[-k:]), state.last_rhythm[b])))
                for table, key in keys:
                    if key not in table:
                        table[key] = log_p.new_zeros(log_p.shape[-1])
                    table[key][token] += 1
            recent.append(token)
            del recent[:-self.order]
            if self.rhythm:
                state.last_rhythm[b] = rhythm[b]
        orders = range(1, min(self.order, t) + 1)
        mixed = _mix(log_p, self._counts(state.counts, lambda b, k: tuple(state.recent[b][-k:]), orders, log_p),
                     _alphas(self.alpha, self.order, len(orders)))
        if self.rhythm:
            mixed = _mix(mixed, self._counts(state.rhythm_counts,
                                             lambda b, k: (tuple(state.recent[b][-k:]), rhythm[b]), orders, log_p),
                         _alphas(self.rhythm, self.order, len(orders)))
        return mixed, state

    @staticmethod
    def _counts(tables: list, key, orders: range, log_p: torch.Tensor) -> list[torch.Tensor]:
        """Per order k, each melody b's counts after its context ``key(b, k)``; a context never
        heard counts nothing: it leaves the prediction as it is."""
        return [torch.stack([tables[b][k - 1].get(key(b, k), torch.zeros_like(log_p[0]))
                             for b in range(len(tables))]) for k in orders]



