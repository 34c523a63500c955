"""Two melody models written as a user would write them, not as chromasonic_lib's families are.

Give either to the workbench by its import path:

    papermill notebooks/search.ipynb runs/my-model.ipynb -p model examples/my_models.py:SimpleRNN -p study_name my-model

Nothing here knows about chromasonic_lib: no base class, no registration, no DEFAULTS.
"""
import math

import torch
from torch import nn


class SimpleRNN(nn.Module):
    """A GRU over note embeddings; forward returns (logits, hidden), the RNN habit."""

    def __init__(self, vocab_size, embedding_dim=64, hidden_size=128, num_layers=1, dropout=0.2):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.gru = nn.GRU(embedding_dim, hidden_size, num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, vocab_size)

    def forward(self, x, hidden=None):
        out, hidden = self.gru(self.embedding(x), hidden)
        return self.fc(self.dropout(out)), hidden


class TinyTransformer(nn.Module):
    """A small causal transformer with a learned positional embedding; forward returns logits."""

    def __init__(self, vocab_size, d_model=64, nhead=4, num_layers=2, dropout=0.1, max_len=1024,
                 activation="gelu"):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, 4 * d_model, dropout, activation=activation,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.out = nn.Linear(d_model, vocab_size)
        self.scale = math.sqrt(d_model)

    def forward(self, x):
        T = x.shape[1]
        h = self.tokens(x) * self.scale + self.positions(torch.arange(T, device=x.device))
        mask = torch.triu(torch.full((T, T), float("-inf"), device=x.device), diagonal=1)
        return self.out(self.encoder(h, mask=mask))


def rising_and_falling():
    """Melodies of one's own for ``dataset: examples/my_models.py:rising_and_falling``: token
    lists of piano keys (0..87, MIDI pitch − 21), here scales up and down from a few tonics."""
    major = [0, 2, 4, 5, 7, 9, 11, 12]
    return [[tonic + step for step in major + major[::-1]] for tonic in range(27, 51)]
