"""The melody models and their registry: ``build_model(name, hparams, vocab_size)``.

Every model maps tokens [batch, time] to logits [batch, time, vocab]. The input is a start
token (id ``vocab_size``, one past the notes) followed by the melody's notes 0..T-2, so the
output at step t predicts note t from notes 0..t-1 only, the first note from the start token
alone (teacher forcing over the whole melody in one forward pass; IDyOM scores every note
too). Models know a vocabulary size, never an encoding or a corpus.

For sampling, every model also reads a melody one token at a time: ``state = model.start(B)``,
then ``out, state = model.step(state, tokens)`` for tokens [B] (the start token first) gives
[B, vocab] equal to what ``forward`` gives at that position, at a cost that does not grow with
the melody (the recurrent state, the transformer's keys and values, the markov model's last
notes, the memory's counts so far). States are the model's own, possibly updated in place;
stepping is for eval mode (no dropout).

A neural model may also read musical context (hyperparameter ``context``: feature names of
``data.context``): ``forward(x, context)`` with ``context`` a dict of [batch, time] feature
ids of the note each step predicts (``step`` takes [batch] ids), each embedded and added to the
token embedding. What a feature means stays in the data; the model only knows how many values
each has. The pitch alone is predicted, as without context.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data.context import CONTEXT_FEATURES, MINOR, context_names
from .data.encodings import LOWEST_MIDI, N_KEYS
from .errors import ConfigError

# What a model's input and output mean (see the module docstring), recorded in checkpoints and
# studies so that models or losses of two protocols never mix. 2: a start token, every note
# predicted; 1 (older checkpoints and studies): no start token, the first note never predicted.
PROTOCOL = 2

# Every family can add a short-term memory of the melody it is predicting (MelodyMemory);
# memory_order 0 means none.
MEMORY_DEFAULTS: dict[str, Any] = {"memory_order": 0, "memory_alpha": 1.0, "memory_rhythm": 0.0}
# What the rhythm-linked memory (memory_rhythm) matches besides the notes, of those a model reads.
RHYTHM = ("duration", "metre", "phrase")

# Each family's hyperparameters and defaults: the names a search space may tune. The model
# classes take their constructor defaults from here, so building a model directly or through
# build_model gives the same model.
_MARKOV = {"order": 2, "alpha": 1.0}
_RECURRENT = {"embedding_dim": 64, "hidden_size": 128, "num_layers": 1, "dropout": 0.2, "context": ()}
_TRANSFORMER = {"d_model": 128, "nhead": 4, "num_layers": 2, "dim_feedforward": 256, "dropout": 0.1,
                "context": ()}
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "markov": {**_MARKOV, **MEMORY_DEFAULTS},
    "rnn": {**_RECURRENT, **MEMORY_DEFAULTS},
    "lstm": {**_RECURRENT, **MEMORY_DEFAULTS},
    "gru": {**_RECURRENT, **MEMORY_DEFAULTS},
    "transformer": {**_TRANSFORMER, **MEMORY_DEFAULTS},
}


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

    def __init__(self, vocab_size: int, order: int = _MARKOV["order"],
                 alpha: float = _MARKOV["alpha"]):
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


class ContextEmbedding(nn.Module):
    """One learned embedding per context feature a model reads, summed: what the model adds to
    each step's token embedding."""

    def __init__(self, names: tuple[str, ...], dim: int):
        super().__init__()
        self.names = names
        self.tables = nn.ModuleDict({n: nn.Embedding(CONTEXT_FEATURES[n], dim) for n in names})

    def forward(self, context: dict[str, torch.Tensor] | None) -> torch.Tensor:
        if context is None or any(n not in context for n in self.names):
            given = ", ".join(context or ()) or "none"
            raise ConfigError(f"this model reads the context {', '.join(self.names)} of each note and "
                              f"was given {given}: pass context (feature ids per step, see "
                              f"MelodyTensor.context)")
        return sum(self.tables[n](context[n]) for n in self.names)


class ScaleDegrees(nn.Module):
    """What knowing the key buys a model of absolute pitches (IDyOM's pitch-from-tonic viewpoints).

    Melodies recur in every key, so "the next note is the tonic" is one fact in 24 keys. With
    the key given, the model also reads the previous note's scale degree (its pitch class from
    the tonic, in major or minor), and its output gains a preference over the 12 degrees that
    is added to every piano key of that degree in the note's key. Tokens that are not keys
    (the start token, the grid's hold and rest) have no degree.
    """

    def __init__(self, vocab_size: int, in_dim: int, out_dim: int):
        super().__init__()
        pitch_class = (torch.arange(vocab_size + 1) + LOWEST_MIDI) % 12
        pitch_class[N_KEYS:] = 12                       # no degree: 12 below
        self.register_buffer("pitch_class", pitch_class, persistent=False)
        self.embed = nn.Embedding(2 * 12 + 1, in_dim)   # degree + 12 in minor; 24: no degree
        self.head = nn.Linear(out_dim, 12)

    def _degrees(self, tokens: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        pc = self.pitch_class[tokens]
        degree = (pc - key % 12) % 12 + MINOR * (key >= MINOR)
        return torch.where(pc == 12, 2 * 12, degree)

    def inputs(self, tokens: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """Embeddings of the previous notes' degrees in the key of the note each step predicts."""
        return self.embed(self._degrees(tokens, key))

    def outputs(self, h: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """Per-token logits to add: each key's degree's share of ``self.head(h)`` (0 for non-keys)."""
        prefer = F.pad(self.head(h), (0, 1))                          # [..., 13]: 12 = no degree
        pc = self.pitch_class[:-1].expand(*key.shape, -1)             # [..., V]
        degree = torch.where(pc == 12, 12, (pc - (key % 12)[..., None]) % 12)
        return prefer.gather(-1, degree)


def _with_degrees(model: nn.Module, vocab_size: int, in_dim: int, out_dim: int) -> None:
    model.degrees = ScaleDegrees(vocab_size, in_dim, out_dim) if "key" in model.context else None


def _embed(model: nn.Module, tokens: torch.Tensor, context: dict | None) -> torch.Tensor:
    """The token embedding, plus the context's where the model reads context."""
    h = model.embed(tokens)
    if model.context_embed is None:
        return h
    h = h + model.context_embed(context)
    return h if model.degrees is None else h + model.degrees.inputs(tokens, context["key"])


def _logits(model: nn.Module, h: torch.Tensor, context: dict | None) -> torch.Tensor:
    """The output layer, plus the scale-degree preference where the model knows the key."""
    out = model.head(h)
    return out if getattr(model, "degrees", None) is None else out + model.degrees.outputs(h, context["key"])


class RecurrentModel(nn.Module):
    """Embedding → RNN/LSTM/GRU → dropout → linear, over the whole melody at once.

    The embedding has a row more than the output: the start token's.
    """

    trainable = True
    CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

    def __init__(self, vocab_size: int, cell: str = "lstm",
                 embedding_dim: int = _RECURRENT["embedding_dim"],
                 hidden_size: int = _RECURRENT["hidden_size"],
                 num_layers: int = _RECURRENT["num_layers"], dropout: float = _RECURRENT["dropout"],
                 context=_RECURRENT["context"]):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size + 1, embedding_dim)
        self.rnn = self.CELLS[cell](embedding_dim, hidden_size, num_layers, batch_first=True,
                                    dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)
        # Last, so that the other weights start as a model without context's (same seed).
        self.context = context_names(context)
        self.context_embed = ContextEmbedding(self.context, embedding_dim) if self.context else None
        _with_degrees(self, vocab_size, embedding_dim, hidden_size)

    def forward(self, x: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        out, _ = self.rnn(_embed(self, x, context))
        return _logits(self, self.drop(out), context)

    # One step of one layer, as the RNN computes it (the ops behind nn.LSTMCell and the others).
    STEP_CELLS = {"LSTM": torch.lstm_cell, "GRU": torch.gru_cell, "RNN_TANH": torch.rnn_tanh_cell,
                  "RNN_RELU": torch.rnn_relu_cell}

    def start(self, batch_size: int) -> list:
        """Each layer's hidden state (and an LSTM's cell state): zeros, as in forward."""
        def zeros():
            return self.head.weight.new_zeros(batch_size, self.rnn.hidden_size)
        return [(zeros(), zeros()) if self.rnn.mode == "LSTM" else zeros()
                for _ in range(self.rnn.num_layers)]

    def step(self, hidden: list, tokens: torch.Tensor, context: dict | None = None
             ) -> tuple[torch.Tensor, list]:
        # Layer by layer over the RNN's own weights rather than through the RNN: for one note on
        # a 2-core CPU its fused (oneDNN) kernel took 1 ms (one thread) to 14 ms (two, with the
        # cores busy) a call, the cells 0.2 ms a step.
        cell, h, out = self.STEP_CELLS[self.rnn.mode], _embed(self, tokens, context), []
        for state, weights in zip(hidden, self.rnn.all_weights):
            state = cell(h, state, *weights)
            h = state[0] if isinstance(state, tuple) else state
            out.append(state)
        return _logits(self, self.drop(h), context), out


class TransformerModel(nn.Module):
    """A causal decoder: token + sinusoidal position embeddings, pre-norm layers, causal mask.

    The embedding has a row more than the output: the start token's.
    """

    trainable = True

    def __init__(self, vocab_size: int, d_model: int = _TRANSFORMER["d_model"],
                 nhead: int = _TRANSFORMER["nhead"], num_layers: int = _TRANSFORMER["num_layers"],
                 dim_feedforward: int = _TRANSFORMER["dim_feedforward"],
                 dropout: float = _TRANSFORMER["dropout"], context=_TRANSFORMER["context"]):
        super().__init__()
        self.vocab_size, self.d_model = vocab_size, d_model
        self.embed = nn.Embedding(vocab_size + 1, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self.context = context_names(context)
        self.context_embed = ContextEmbedding(self.context, d_model) if self.context else None
        _with_degrees(self, vocab_size, d_model, d_model)

    def positions(self, length: int, device, start: int = 0) -> torch.Tensor:
        """Sinusoidal embeddings [length, d_model] of positions start..start+length-1."""
        pos = torch.arange(start, start + length, device=device, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, self.d_model, 2, device=device, dtype=torch.float32)
                         * (-math.log(10000.0) / self.d_model))
        pe = torch.zeros(length, self.d_model, device=device)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)[:, : self.d_model // 2]
        return pe

    def forward(self, x: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        T = x.shape[1]
        h = _embed(self, x, context) * math.sqrt(self.d_model) + self.positions(T, x.device)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=x.device)
        return _logits(self, self.norm(self.layers(h, mask=mask, is_causal=True)), context)

    def start(self, batch_size: int) -> tuple[int, list]:
        return 0, [None] * len(self.layers.layers)      # position, each layer's keys and values

    def step(self, state: tuple[int, list], tokens: torch.Tensor,
             context: dict | None = None) -> tuple[torch.Tensor, tuple[int, list]]:
        # Each pre-norm layer of forward, by hand over its weights for the one new position:
        # its query attends to the keys and values of every position so far, which are kept
        # (the causal mask's job is done by there being no later ones).
        t, cache = state
        B = len(tokens)
        h = _embed(self, tokens, context)[:, None] * math.sqrt(self.d_model) + \
            self.positions(1, tokens.device, t)
        kept = []
        for layer, past in zip(self.layers.layers, cache):
            attn = layer.self_attn
            qkv = F.linear(layer.norm1(h), attn.in_proj_weight, attn.in_proj_bias)
            # 3 × [B, heads, 1, d_head]
            q, k, v = qkv.view(B, 1, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
            if past is not None:
                k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
            kept.append((k, v))
            heads = F.scaled_dot_product_attention(q, k, v)
            h = h + attn.out_proj(heads.transpose(1, 2).reshape(B, 1, -1))
            h = h + layer.linear2(layer.activation(layer.linear1(layer.norm2(h))))
        return _logits(self, self.norm(h)[:, 0], context), (t + 1, kept)


def _forward(model: nn.Module, x: torch.Tensor, context: dict | None) -> torch.Tensor:
    """``model(x)``, with the context where there is one (a model of one's own may not take it)."""
    return model(x) if context is None else model(x, context)


def _step(model: nn.Module, state: Any, tokens: torch.Tensor, context: dict | None):
    return model.step(state, tokens) if context is None else model.step(state, tokens, context)


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


def _check_hparams(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    allowed = MODEL_DEFAULTS[name]
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ConfigError(f"{unknown[0]} is not a hyperparameter of {name}; allowed: "
                          f"{', '.join(allowed)}")
    out = {**allowed, **hparams}
    for key, value in out.items():
        if key == "dropout":
            ok = isinstance(value, (int, float)) and 0 <= value < 1
            what = "a number in [0, 1)"
        elif key == "memory_rhythm":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            what = "a number ≥ 0 (0: no rhythm-linked memory)"
        elif key in ("alpha", "memory_alpha"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            what = "a positive number"
        elif key == "memory_order":
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 8
            what = "an integer from 0 (no memory) to 8"
        elif key == "context":
            out[key] = context_names(value, f"context of {name}")      # raises, naming the features
            continue
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            what = "a positive integer"
        if not ok:
            raise ConfigError(f"{key} of {name} must be {what}, got {value!r}")
    if name == "transformer" and out["d_model"] % out["nhead"]:
        raise ConfigError(f"d_model of transformer must be divisible by nhead, got "
                          f"d_model={out['d_model']}, nhead={out['nhead']}")
    if name == "markov" and out["order"] > 5:
        raise ConfigError(f"order of markov must be at most 5, got {out['order']}")
    return out


def full_hparams(name: str, hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    """``hparams`` over the family's defaults, checked: what a checkpoint records, so that a
    default changed later never changes what an old checkpoint rebuilds."""
    if name not in MODEL_DEFAULTS:
        raise ConfigError(f"model must be one of {', '.join(MODEL_DEFAULTS)}; got {name!r}")
    return _check_hparams(name, dict(hparams or {}))


def build_model(name: str, hparams: dict[str, Any] | None = None, vocab_size: int = 88,
                seed: int | None = None) -> nn.Module:
    """The model ``name`` (markov, rnn, lstm, gru, transformer) with ``hparams`` over the defaults.

    With ``seed`` the initial weights are reproducible (same seed, same weights). A neural
    family's ``context`` (a list, or names joined by ``+``) names the context features it reads.
    """
    hp = full_hparams(name, hparams)
    if seed is not None:
        torch.manual_seed(seed)
    memory_order, memory_alpha, rhythm = hp.pop("memory_order"), hp.pop("memory_alpha"), hp.pop("memory_rhythm")
    if name == "markov":
        model = MarkovModel(vocab_size, **hp)
    elif name == "transformer":
        model = TransformerModel(vocab_size, **hp)
    else:
        model = RecurrentModel(vocab_size, cell=name, **hp)
    if rhythm and not (memory_order and set(RHYTHM) & set(getattr(model, "context", ()))):
        raise ConfigError(f"memory_rhythm needs the melody memory (memory_order ≥ 1) and a model that "
                          f"reads at least one of the context features {', '.join(RHYTHM)}")
    return MelodyMemory(model, memory_order, memory_alpha, rhythm) if memory_order else model


def split_params(name: str, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a flat parameter dict into (model hyperparameters, everything else)."""
    names = MODEL_DEFAULTS[name]
    return ({k: v for k, v in params.items() if k in names},
            {k: v for k, v in params.items() if k not in names})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
