"""Models around other models: :class:`Wrapper` (a base model's vocabulary, context and loader)
and :class:`Ensemble` (several trained models as one)."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..data.context import CONTEXT_FEATURES
from ..errors import ConfigError

def _forward(model: nn.Module, x: torch.Tensor, context: dict | None) -> torch.Tensor:
    """``model(x)``, with the context where there is one (a model of one's own may not take it)."""
    return model(x) if context is None else model(x, context)


def _step(model: nn.Module, state: Any, tokens: torch.Tensor, context: dict | None):
    return model.step(state, tokens) if context is None else model.step(state, tokens, context)


class Wrapper(nn.Module):
    """A model around another, ``base``: its vocabulary, context and trainability are the
    base's, and its weights load through the base's own loader (the markov tables are
    replaced, not copied into)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    @property
    def trainable(self) -> bool:
        return getattr(self.base, "trainable", True)

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size

    @property
    def context(self) -> tuple[str, ...]:
        return getattr(self.base, "context", ())

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.base.load_state_dict({k.removeprefix("base."): v for k, v in state_dict.items()},
                                         strict=strict, assign=assign)


class Ensemble(nn.Module):
    """Several trained models as one: the mean of their probabilities, as log-probabilities.

    Models trained with other seeds err differently, so their average predicts better than
    the typical one (never worse than their mean loss: -log is convex). Built from models
    already trained; ``evaluate``, ``sample`` and checkpoints take it like any model.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members or len({m.vocab_size for m in members}) != 1:
            raise ConfigError(f"an ensemble needs one or more models of one vocabulary size, got "
                              f"vocab sizes {[m.vocab_size for m in members]}")
        self.members = nn.ModuleList(members)

    @property
    def vocab_size(self) -> int:
        return self.members[0].vocab_size

    @property
    def context(self) -> tuple[str, ...]:
        """Every feature some member reads (each takes its own from the dict)."""
        return tuple(f for f in CONTEXT_FEATURES
                     if any(f in getattr(m, "context", ()) for m in self.members))

    def forward(self, x: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        return self._average([_forward(m, x, context) for m in self.members])

    def start(self, batch_size: int) -> list:
        return [m.start(batch_size) for m in self.members]

    def step(self, states: list, tokens: torch.Tensor,
             context: dict | None = None) -> tuple[torch.Tensor, list]:
        outs, states = zip(*(_step(m, s, tokens, context) for m, s in zip(self.members, states)))
        return self._average(outs), list(states)

    def _average(self, outputs) -> torch.Tensor:
        log_p = torch.stack([torch.log_softmax(out.float(), -1) for out in outputs])
        return torch.logsumexp(log_p, 0) - math.log(len(self.members))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # Through each member's own loader (the markov tables are replaced, not copied into).
        prefixes = [f"members.{i}." for i in range(len(self.members))]
        unexpected = [k for k in state_dict if not k.startswith(tuple(prefixes))]
        if strict and unexpected:
            raise RuntimeError(f"Error(s) in loading state_dict for Ensemble:\n\tUnexpected key(s) in "
                               f"state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
        missing = []
        for prefix, member in zip(prefixes, self.members):
            result = member.load_state_dict({k.removeprefix(prefix): v for k, v in state_dict.items()
                                             if k.startswith(prefix)}, strict=strict, assign=assign)
            missing += [prefix + k for k in result.missing_keys]
            unexpected += [prefix + k for k in result.unexpected_keys]
        return nn.modules.module._IncompatibleKeys(missing, unexpected)

