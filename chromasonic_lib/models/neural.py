"""The neural families: recurrent (rnn, lstm, gru) and transformer, and what they add to read
musical context (an embedding per context feature, scale degrees where the key is known)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.context import CONTEXT_FEATURES, MINOR, context_names
from ..data.encodings import LOWEST_MIDI, N_KEYS
from ..errors import ConfigError

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
    # The hyperparameters of rnn, lstm and gru and their defaults (read by the registry).
    DEFAULTS = {"embedding_dim": 64, "hidden_size": 128, "num_layers": 1, "dropout": 0.2, "context": ()}

    def __init__(self, vocab_size: int, cell: str = "lstm",
                 embedding_dim: int = DEFAULTS["embedding_dim"],
                 hidden_size: int = DEFAULTS["hidden_size"],
                 num_layers: int = DEFAULTS["num_layers"], dropout: float = DEFAULTS["dropout"],
                 context=DEFAULTS["context"]):
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
    # The transformer's hyperparameters and their defaults (read by the registry).
    DEFAULTS = {"d_model": 128, "nhead": 4, "num_layers": 2, "dim_feedforward": 256, "dropout": 0.1,
                "context": ()}

    def __init__(self, vocab_size: int, d_model: int = DEFAULTS["d_model"],
                 nhead: int = DEFAULTS["nhead"], num_layers: int = DEFAULTS["num_layers"],
                 dim_feedforward: int = DEFAULTS["dim_feedforward"],
                 dropout: float = DEFAULTS["dropout"], context=DEFAULTS["context"]):
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

