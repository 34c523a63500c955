"""Predictions averaged over transpositions of the melody: ``TranspositionAverage(model, k)``.

A model trained on melodies moved up and down by a few semitones has learnt the same tune in
several keys, but not equally well in each: asked about the melody moved by s semitones, it
answers a little differently. Averaging its answers over s = -k..k (each moved back by s) is
an ensemble for the price of k·2 more forward passes and no training. With k = 3 it took
0.08 bits/note off the pitch-only default's cross-validated loss on chorales-other and 0.04
on chorales-185 (see ``params/crossval.yaml`` and the README).

Every copy is causal: the prediction of note t reads only notes before t. A copy whose
notes so far would leave the keyboard stops counting from that note on, and each copy's
prediction of a note off the keyboard is zero, so the average is always a distribution over
the model's vocabulary. Tokens that are not piano keys (the start token, the grid's hold
and rest) stay as they are; the key context moves with the notes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .data.context import transpose_keys
from .data.encodings import N_KEYS
from .config import check_test_transpose
from .errors import ConfigError
from .models import Wrapper, _forward, _step


@dataclass
class TransposedState:
    """Where :meth:`TranspositionAverage.step` is: the base's state of every copy, and which
    copies are still on the keyboard."""

    base: Any
    on_keyboard: torch.Tensor       # [S, B] bool


class TranspositionAverage(Wrapper):
    """``base``'s next-note probabilities, averaged over the melody moved by -k..k semitones."""

    def __init__(self, base: nn.Module, semitones: int, n_keys: int = N_KEYS):
        super().__init__(base)
        semitones = check_test_transpose(semitones)
        if semitones and base.vocab_size < n_keys:
            raise ConfigError(f"test_transpose needs melodies of piano keys (a vocabulary of at least "
                              f"{n_keys} tokens); this model's has {base.vocab_size}")
        self.semitones, self.n_keys = semitones, n_keys
        # Where the base is (sampling takes its device from the first weight or buffer).
        device = next(iter([*base.parameters(), *base.buffers()]), torch.empty(0)).device
        self.register_buffer("shifts", torch.arange(-semitones, semitones + 1, device=device),
                             persistent=False)

    def _moved(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every copy of ``x`` [B, ...] moved by its shift: [S·B, ...], and which steps'
        tokens stayed on the keyboard [S, B, ...]. Off-keyboard tokens are clamped (their
        copy is not counted there)."""
        s = self.shifts.view(-1, *([1] * x.dim()))
        is_key = x < self.n_keys
        moved = x[None] + s * is_key
        on = ~is_key | ((moved >= 0) & (moved < self.n_keys))
        moved = torch.where(on, moved, x[None])
        return moved.flatten(0, 1), on

    def _context(self, context: dict | None) -> dict | None:
        if context is None:
            return None
        out = {}
        for name, v in context.items():
            copies = v[None].expand(len(self.shifts), *v.shape)
            if name == "key":
                copies = transpose_keys(copies, self.shifts.view(-1, *([1] * v.dim())).to(v.dtype))
            out[name] = copies.flatten(0, 1)
        return out

    def _average(self, out: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
        """The copies' predictions [S·B, ..., V] moved back to the melody's own pitches and
        averaged over the copies ``counted`` [S, B, ...] (the unmoved copy always counts)."""
        S, V = len(self.shifts), out.shape[-1]
        log_p = torch.log_softmax(out.float(), -1).view(S, -1, *out.shape[1:])
        token = torch.arange(V, device=out.device)
        source = token + self.shifts[:, None] * (token < self.n_keys)          # [S, V]
        valid = (token >= self.n_keys) | ((source >= 0) & (source < self.n_keys))
        shape = (S,) + (1,) * (log_p.dim() - 2) + (V,)
        back = log_p.gather(-1, source.clamp(0, V - 1).view(shape).expand_as(log_p))
        back = back.masked_fill(~valid.view(shape), -math.inf)
        # Renormalised: the probability a copy gave to notes off the melody's keyboard is dropped.
        back = back - torch.logsumexp(back, -1, keepdim=True)
        back = back.masked_fill(~counted[..., None], -math.inf)
        return torch.logsumexp(back, 0) - counted.sum(0).clamp(min=1).log()[..., None]

    def forward(self, x: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        if not self.semitones:
            return torch.log_softmax(_forward(self.base, x, context).float(), -1)
        moved, on = self._moved(x)
        # The prediction at t reads the tokens up to t: a copy counts while all of them fit.
        counted = on.int().cummin(-1).values.bool()
        return self._average(_forward(self.base, moved, self._context(context)), counted)

    def start(self, batch_size: int) -> TransposedState:
        return TransposedState(self.base.start(len(self.shifts) * batch_size),
                               torch.ones(len(self.shifts), batch_size, dtype=torch.bool,
                                          device=self.shifts.device))

    def step(self, state: TransposedState, tokens: torch.Tensor,
             context: dict | None = None) -> tuple[torch.Tensor, TransposedState]:
        moved, on = self._moved(tokens)
        state.on_keyboard = state.on_keyboard & on
        out, state.base = _step(self.base, state.base, moved, self._context(context))
        return self._average(out, state.on_keyboard), state
