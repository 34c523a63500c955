"""Every model: shapes, causality, padding, the markov counts, the registry's errors."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from chromasonic_lib.data import MelodyTensor
from chromasonic_lib.errors import ConfigError
from chromasonic_lib.models import MODEL_DEFAULTS, build_model
from chromasonic_lib.training import evaluate

SMALL = {"markov": {"order": 2}, "rnn": {"hidden_size": 16, "embedding_dim": 8},
         "lstm": {"hidden_size": 16, "embedding_dim": 8, "num_layers": 2},
         "gru": {"hidden_size": 16, "embedding_dim": 8},
         "transformer": {"d_model": 16, "nhead": 2, "dim_feedforward": 32}}


def _model(name, vocab=20):
    torch.manual_seed(0)
    model = build_model(name, SMALL[name], vocab)
    if name == "markov":
        x = torch.randint(0, vocab, (30, 12))
        model.fit(x, torch.full((30,), 12))
    return model.eval()


@pytest.mark.parametrize("name", list(MODEL_DEFAULTS))
def test_shapes(name):
    logits = _model(name)(torch.randint(0, 20, (3, 9)))
    assert logits.shape == (3, 9, 20)


@pytest.mark.parametrize("name", list(MODEL_DEFAULTS))
def test_causal_prediction_at_t_ignores_later_notes(name):
    model = _model(name)
    x = torch.randint(0, 20, (2, 10))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 7) % 20
    a, b = model(x), model(y)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-5)
    assert not torch.allclose(a[:, 6:], b[:, 6:], atol=1e-5)


@pytest.mark.parametrize("name", list(MODEL_DEFAULTS))
def test_padding_does_not_change_the_loss(name):
    model = _model(name)
    short, long = np.array([3, 4, 5, 4]), np.array([1, 2, 3, 4, 5, 6, 7, 8, 9])
    together = evaluate(model, MelodyTensor([short, long]))
    alone = [evaluate(model, MelodyTensor([m])) for m in (short, long)]
    expected = (alone[0].nats_per_note * 3 + alone[1].nats_per_note * 8) / 11
    assert together.n_notes == 11
    assert together.nats_per_note == pytest.approx(expected, rel=1e-5)


def test_markov_probabilities_equal_hand_counts():
    model = build_model("markov", {"order": 1, "alpha": 0.5}, vocab_size=4)
    melody = torch.tensor([[0, 1, 0, 1, 0, 2]])
    model.fit(melody, torch.tensor([6]))
    p = model(torch.tensor([[0]])).exp()[0, 0]
    # After 0 come 1, 1, 2. Unigram of next notes: 1,0,1,0,2 → counts [2, 2, 1, 0] of 5.
    uniform = torch.full((4,), 0.25)
    p0 = (torch.tensor([2.0, 2, 1, 0]) + 0.5 * uniform) / (5 + 0.5)
    expected = (torch.tensor([0.0, 2, 1, 0]) + 0.5 * p0) / (3 + 0.5)
    assert torch.allclose(p, expected, atol=1e-6)
    assert p.sum().item() == pytest.approx(1.0)


def test_markov_unseen_context_backs_off_to_lower_orders():
    model = build_model("markov", {"order": 2, "alpha": 1.0}, vocab_size=5)
    model.fit(torch.tensor([[0, 1, 2, 3]]), torch.tensor([4]))
    p = model(torch.tensor([[4, 4]])).exp()[0, 1]
    assert p.sum().item() == pytest.approx(1.0) and (p > 0).all()


@pytest.mark.parametrize("hp,match", [({"hidden_size": 0}, "hidden_size"), ({"dropout": 1.5}, "dropout"),
                                      ({"colour": 3}, "colour is not a hyperparameter of lstm"),
                                      ({"num_layers": 2.5}, "num_layers")])
def test_bad_hyperparameters_name_themselves(hp, match):
    with pytest.raises(ConfigError, match=match):
        build_model("lstm", hp)


def test_transformer_heads_must_divide_width():
    with pytest.raises(ConfigError, match="divisible by nhead"):
        build_model("transformer", {"d_model": 30, "nhead": 4})


def test_unknown_model_lists_the_choices():
    with pytest.raises(ConfigError, match="markov, rnn, lstm, gru, transformer"):
        build_model("wavenet")
