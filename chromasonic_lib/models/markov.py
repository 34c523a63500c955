"""The markov model: counts of what followed each context of 1..order notes, the baseline
every neural model must beat."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

class MarkovModel(nn.Module):
    """Order-n count model, each order smoothed toward the order below it.

    P_k(x | last k notes) = (c(ctx, x) + alpha · P_{k-1}(x | last k-1 notes)) / (c(ctx) + alpha),
    starting from the uniform distribution below order 0. Where fewer than k notes precede,
    order k does not apply: the first note gets the order-0 distribution, the unigram of all
    notes smoothed toward uniform, as in IDyOM (rather than a table of first notes, which a
    corpus of a few hundred melodies fills too thinly). Fitted by counting (:meth:`fit`), not
    by gradient descent; the baseline every neural model must beat.
    """

    trainable = False
    context = ()        # counts pitches only: a table per context value would split the counts thin
    # The family's hyperparameters and their defaults, which the registry (models/__init__.py)
    # reads: building a model directly or through build_model gives the same model.
    DEFAULTS = {"order": 2, "alpha": 1.0}

    def __init__(self, vocab_size: int, order: int = DEFAULTS["order"],
                 alpha: float = DEFAULTS["alpha"]):
        super().__init__()
        self.vocab_size, self.order, self.alpha = vocab_size, order, alpha
        self.register_buffer("unigram", torch.zeros(vocab_size))
        for k in range(1, order + 1):
            self.register_buffer(f"contexts_{k}", torch.zeros(0, dtype=torch.long))
            self.register_buffer(f"counts_{k}", torch.zeros(1, vocab_size))

    def _context_ids(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """[B, T] ids of the k tokens ending at each step (garbage where they are not all notes:
        the caller masks those steps)."""
        ids = torch.zeros_like(x)
        for j in range(k):
            shifted = torch.roll(x, shifts=j, dims=1)
            ids = ids * self.vocab_size + shifted
        return ids

    @torch.no_grad()
    def fit(self, x: torch.Tensor, lengths: torch.Tensor) -> "MarkovModel":
        """Count every note and every (context, next note) pair in padded melodies ``x`` [N, L]
        (notes only: no start token)."""
        V = self.vocab_size
        notes = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        self.unigram = torch.bincount(x[notes], minlength=V).float()
        T = x.shape[1] - 1
        steps = torch.arange(T, device=x.device)[None, :]
        valid = steps < (lengths[:, None] - 1)          # positions with a next note
        nxt = x[:, 1:]
        for k in range(1, self.order + 1):
            ok = valid & (steps >= k - 1)
            ids = self._context_ids(x[:, :-1], k)[ok]
            pair_ids, pair_counts = torch.unique(ids * V + nxt[ok], return_counts=True)
            contexts, rows = torch.unique(pair_ids // V, return_inverse=True)
            counts = torch.zeros(len(contexts) + 1, V, device=x.device)
            counts[rows, pair_ids % V] = pair_counts.float()
            setattr(self, f"contexts_{k}", contexts)
            setattr(self, f"counts_{k}", counts)
        return self

    def forward(self, x: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        # x[:, 0] is the start token: at step t the last k tokens are all notes when t >= k.
        p = torch.full((*x.shape, self.vocab_size), 1.0 / self.vocab_size, device=x.device)
        p = (self.unigram + self.alpha * p) / (self.unigram.sum() + self.alpha)
        steps = torch.arange(x.shape[1], device=x.device)[None, :]
        for k in range(1, self.order + 1):
            contexts, counts = getattr(self, f"contexts_{k}"), getattr(self, f"counts_{k}")
            ids = self._context_ids(x, k)
            pos = torch.searchsorted(contexts, ids).clamp(max=max(len(contexts) - 1, 0))
            found = (contexts[pos] == ids) if len(contexts) else torch.zeros_like(ids, dtype=torch.bool)
            c = counts[torch.where(found, pos, len(contexts))]
            smoothed = (c + self.alpha * p) / (c.sum(-1, keepdim=True) + self.alpha)
            p = torch.where((steps >= k)[..., None], smoothed, p)
        return torch.log(p)

    def start(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, 0, dtype=torch.long, device=self.unigram.device)

    def step(self, window: torch.Tensor, tokens: torch.Tensor,
             context: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # The state is the last order+1 tokens: at the last of them every order applies, as it
        # does in the whole melody from the order-th note on; before that, it is the whole melody.
        window = torch.cat([window, tokens[:, None]], 1)[:, -(self.order + 1):]
        return self(window)[:, -1], window

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Like ``nn.Module.load_state_dict``: keys checked (``strict``), shapes always.

        The count tables' lengths depend on the data, so buffers are replaced, not copied
        into; what the vocabulary fixes is checked (unigram [V], counts_k [n+1, V] beside
        contexts_k [n] of integer ids), or a wrong table would fail only at the first forward.
        """
        own = dict(self.named_buffers())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
        new = {k: v for k, v in state_dict.items() if k in own}
        errors += [e for k, v in new.items() if (e := self._check_table(k, v, {**own, **new}))]
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        for name, value in new.items():
            dtype = torch.long if name.startswith("contexts_") else own[name].dtype
            setattr(self, name, value.detach().to(own[name].device, dtype).clone())
        return nn.modules.module._IncompatibleKeys(missing, unexpected)

    def _check_table(self, name: str, value: Any, tables: dict[str, Any]) -> str | None:
        """Why ``value`` cannot be this model's buffer ``name`` (None if it can)."""
        if not isinstance(value, torch.Tensor):
            return f"{name} must be a tensor, got {type(value).__name__}"
        shape = list(value.shape)
        if name.startswith("contexts_"):
            if value.dim() == 1 and not value.is_floating_point() and value.dtype != torch.bool:
                return None
            return f"{name} must be a 1-D tensor of integer context ids, got shape {shape} of dtype {value.dtype}"
        V = self.vocab_size
        if name == "unigram":
            needed, fits = f"[{V}]", shape == [V]
        else:       # counts_k: a row per context of contexts_k, and a last one for unseen contexts
            contexts = tables[f"contexts_{name.removeprefix('counts_')}"]
            rows = len(contexts) + 1 if isinstance(contexts, torch.Tensor) and contexts.dim() == 1 else None
            needed = f"[{'n+1' if rows is None else rows}, {V}]"
            fits = len(shape) == 2 and shape[1] == V and rows in (None, shape[0])
        if fits:
            return None
        return (f"size mismatch for {name}: copying a tensor of shape {shape} from checkpoint, the "
                f"model (vocab_size {V}, order {self.order}) needs {needed}")

