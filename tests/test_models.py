"""Every model: shapes, causality, padding, the markov counts, the registry's errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chromasonic_lib.data import MelodyTensor
from chromasonic_lib.errors import ConfigError
from chromasonic_lib.models import (MODEL_DEFAULTS, Ensemble, MarkovModel, MelodyMemory,
                                    RecurrentModel, TransformerModel, build_model)
from chromasonic_lib.training import evaluate

SMALL = {"markov": {"order": 2}, "rnn": {"hidden_size": 16, "embedding_dim": 8},
         "lstm": {"hidden_size": 16, "embedding_dim": 8, "num_layers": 2},
         "gru": {"hidden_size": 16, "embedding_dim": 8},
         "transformer": {"d_model": 16, "nhead": 2, "dim_feedforward": 32}}


def _inputs(batch, length, vocab=20, seed=None):
    """What models read: the start token (id ``vocab``), then ``length`` - 1 random notes."""
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    notes = torch.randint(0, vocab, (batch, length - 1), generator=gen)
    return torch.cat([torch.full((batch, 1), vocab), notes], 1)


def _model(name, vocab=20):
    torch.manual_seed(0)
    model = build_model(name, SMALL[name], vocab)
    if name == "markov":
        x = torch.randint(0, vocab, (30, 12))
        model.fit(x, torch.full((30,), 12))
    return model.eval()


@pytest.mark.parametrize("name", list(MODEL_DEFAULTS))
def test_shapes(name):
    logits = _model(name)(_inputs(3, 9))
    assert logits.shape == (3, 9, 20)


@pytest.mark.parametrize("name", list(MODEL_DEFAULTS))
def test_causal_prediction_at_t_ignores_later_notes(name):
    model = _model(name)
    x = _inputs(2, 10)
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
    expected = (alone[0].nats_per_note * 4 + alone[1].nats_per_note * 9) / 13
    assert together.n_notes == 13                      # every note, the first ones too
    assert together.nats_per_note == pytest.approx(expected, rel=1e-5)


def test_markov_probabilities_equal_hand_counts():
    model = build_model("markov", {"order": 1, "alpha": 0.5}, vocab_size=4)
    melody = torch.tensor([[0, 1, 0, 1, 0, 2]])
    model.fit(melody, torch.tensor([6]))
    p = model(torch.tensor([[4, 0]])).exp()[0, 1]        # start token 4, then note 0
    # After 0 come 1, 1, 2. Unigram of all notes: 0,1,0,1,0,2 → counts [3, 2, 1, 0] of 6.
    uniform = torch.full((4,), 0.25)
    p0 = (torch.tensor([3.0, 2, 1, 0]) + 0.5 * uniform) / (6 + 0.5)
    expected = (torch.tensor([0.0, 2, 1, 0]) + 0.5 * p0) / (3 + 0.5)
    assert torch.allclose(p, expected, atol=1e-6)
    assert p.sum().item() == pytest.approx(1.0)


def test_markov_first_note_is_scored_with_the_order_0_distribution():
    """As IDyOM: the first note, with no context, gets the unigram smoothed toward uniform."""
    model = build_model("markov", {"order": 2, "alpha": 0.5}, vocab_size=4)
    model.fit(torch.tensor([[0, 1, 0, 1, 0, 2]]), torch.tensor([6]))
    # P(0) = (3 + 0.5 · 1/4) / (6 + 0.5) = 3.125 / 6.5, by hand.
    assert model(torch.tensor([[4]])).exp()[0, 0, 0].item() == pytest.approx(3.125 / 6.5)
    first = evaluate(model, MelodyTensor([np.array([0, 3])]))
    second = -math.log((0 + 0.5 * (0.125 / 6.5)) / (3 + 0.5))   # 3 after 0: order 1, never seen
    assert first.n_notes == 2
    assert first.nats_per_note == pytest.approx((-math.log(3.125 / 6.5) + second) / 2, rel=1e-5)


def _fitted_markov(order=2, vocab=20):
    model = build_model("markov", {"order": order}, vocab)
    return model.fit(torch.randint(0, vocab, (30, 12), generator=torch.Generator().manual_seed(0)),
                     torch.full((30,), 12))


def test_markov_state_dict_round_trips():
    fitted, fresh = _fitted_markov(), build_model("markov", {"order": 2}, 20)
    result = fresh.load_state_dict(fitted.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randint(0, 20, (2, 9))
    assert torch.equal(fresh(x), fitted(x))


def test_markov_state_dict_keys_are_checked_like_torchs():
    state = _fitted_markov(order=3).state_dict()         # has contexts_3, counts_3
    model = build_model("markov", {"order": 2}, 20)
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "contexts_3", "counts_3"'):
        model.load_state_dict(state)
    del state["counts_2"]
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "counts_2"'):
        model.load_state_dict(state)
    before = model.counts_2.clone()
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["counts_2"] and result.unexpected_keys == ["contexts_3", "counts_3"]
    assert not hasattr(model, "counts_3") and torch.equal(model.counts_2, before)


@pytest.mark.parametrize("key,value,match", [
    ("unigram", torch.zeros(21), r"size mismatch for unigram: .*shape \[21\].*needs \[20\]"),
    ("counts_1", lambda s: torch.zeros(len(s["contexts_1"]) + 1, 21), r"counts_1: .*needs \[\d+, 20\]"),
    ("counts_1", lambda s: torch.zeros(len(s["contexts_1"]) + 2, 20), r"size mismatch for counts_1"),
    ("contexts_2", torch.zeros(3, 2, dtype=torch.long), "contexts_2 must be a 1-D tensor of integer"),
    ("contexts_2", torch.zeros(3), "contexts_2 must be a 1-D tensor of integer context ids, got shape \\[3\\] "
                                   "of dtype torch.float32"),
    ("unigram", [0.0] * 20, "unigram must be a tensor, got list"),
])
@pytest.mark.parametrize("strict", [True, False])
def test_markov_state_dict_shapes_fixed_by_the_vocabulary_are_checked(key, value, match, strict):
    state = _fitted_markov().state_dict()
    state[key] = value(state) if callable(value) else value
    model = build_model("markov", {"order": 2}, 20)
    with pytest.raises(RuntimeError, match=match):
        model.load_state_dict(state, strict=strict)
    assert model.unigram.sum() == 0                        # nothing was loaded


def test_markov_unseen_context_backs_off_to_lower_orders():
    model = build_model("markov", {"order": 2, "alpha": 1.0}, vocab_size=5)
    model.fit(torch.tensor([[0, 1, 2, 3]]), torch.tensor([4]))
    p = model(torch.tensor([[5, 4, 4]])).exp()[0, 2]
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


@pytest.mark.parametrize("cls,family", [(MarkovModel, "markov"), (RecurrentModel, "lstm"),
                                        (TransformerModel, "transformer")])
def test_constructor_defaults_are_model_defaults(cls, family):
    """One source: a model built directly has the defaults that build_model and the search use."""
    import inspect
    own = {k: v for k, v in MODEL_DEFAULTS[family].items() if not k.startswith("memory_")}
    params = inspect.signature(cls).parameters
    assert {k: params[k].default for k in own} == own


def test_recurrent_model_without_hyperparameters_is_the_default_one():
    model, built = RecurrentModel(20), build_model("lstm", None, 20)
    d = MODEL_DEFAULTS["lstm"]
    for m in (model, built):
        assert (m.rnn.num_layers, m.rnn.hidden_size, m.embed.embedding_dim, m.drop.p) == \
            (d["num_layers"], d["hidden_size"], d["embedding_dim"], d["dropout"])


def test_unknown_model_lists_the_choices():
    with pytest.raises(ConfigError, match="markov, rnn, lstm, gru, transformer"):
        build_model("wavenet")


@pytest.mark.parametrize("name", ["markov", "lstm", "transformer"])
def test_memory_keeps_shapes_causality_and_padding(name):
    torch.manual_seed(0)
    model = build_model(name, {**SMALL[name], "memory_order": 3, "memory_alpha": 0.5}, 20)
    if name == "markov":
        model.fit(torch.randint(0, 20, (30, 12)), torch.full((30,), 12))
    model.eval()
    x = _inputs(2, 10)
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 7) % 20
    a, b = model(x), model(y)
    assert a.shape == (2, 10, 20)
    assert torch.allclose(a.exp().sum(-1), torch.ones(2, 10), atol=1e-5)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-5)
    short, long = np.array([3, 4, 5, 4]), np.array([1, 2, 3, 4, 5, 6, 7, 8, 9])
    together = evaluate(model, MelodyTensor([short, long]))
    alone = [evaluate(model, MelodyTensor([m])) for m in (short, long)]
    assert together.nats_per_note == pytest.approx(
        (alone[0].nats_per_note * 4 + alone[1].nats_per_note * 9) / 13, rel=1e-5)


def test_memory_moves_toward_what_followed_the_same_context():
    torch.manual_seed(0)
    base = build_model("lstm", SMALL["lstm"], 6).eval()
    torch.manual_seed(0)
    model = build_model("lstm", {**SMALL["lstm"], "memory_order": 1, "memory_alpha": 1.0}, 6).eval()
    x = torch.tensor([[6, 0, 1, 2, 0]])                  # the start token, then notes
    p_base, p = torch.softmax(base(x), -1)[0], model(x).exp()[0]
    # Steps 0-3: the first note, then contexts 0, 1, 2 not heard before: the base as it is.
    assert torch.allclose(p[:4], p_base[:4], atol=1e-6)
    # Step 4: context 0 was followed by 1 once: (onehot(1) + 1 · p_base) / (1 + 1).
    expected = (torch.nn.functional.one_hot(torch.tensor(1), 6) + p_base[4]) / 2
    assert torch.allclose(p[4], expected, atol=1e-6)


def test_memory_stays_finite_when_the_base_is_certain():
    """A logit gap of 200: as a probability e^-200 is 0 in float32 (its log -inf, the trial
    diverged); mixed in log space the loss and the gradients stay finite."""

    class Certain(torch.nn.Module):          # a base model sure that every note is 0
        vocab_size = 6

        def __init__(self):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.tensor([200.0, 0, 0, 0, 0, 0]))

        def forward(self, x):
            return self.logits.expand(*x.shape, 6)

    model = MelodyMemory(Certain(), order=3, alpha=0.5)
    x = torch.tensor([[6, 1, 2, 1, 2, 1, 2]])            # the start token, then notes
    y = torch.tensor([[1, 2, 1, 2, 1, 2, 3]])            # never the 0 the base is sure of
    out = model(x)
    loss = torch.nn.functional.cross_entropy(out.reshape(-1, 6), y.reshape(-1))
    loss.backward()
    assert torch.isfinite(out).all() and torch.isfinite(loss) and loss.item() > 50
    assert torch.isfinite(model.base.logits.grad).all() and model.base.logits.grad.abs().sum() > 0
    assert out[0, 3, 2].exp() > 0.1                      # 2 after 1 (heard once) is now likely


def test_memory_makes_a_repeated_phrase_cheap():
    torch.manual_seed(0)
    plain = build_model("markov", {"order": 1}, 12)
    torch.manual_seed(0)
    remembering = build_model("markov", {"order": 1, "memory_order": 4, "memory_alpha": 0.5}, 12)
    train = torch.randint(0, 12, (40, 16))
    for m in (plain, remembering):
        m.fit(train, torch.full((40,), 16))
    phrase = [3, 7, 1, 9, 4, 4, 11, 0]
    melody = MelodyTensor([np.array(phrase * 2)])
    # 0.62 (0.60 before the first note was scored: it costs both models the same, ~ln 12).
    assert evaluate(remembering, melody).nats_per_note < 0.65 * evaluate(plain, melody).nats_per_note


@pytest.mark.parametrize("hp,match", [({"memory_order": -1}, "memory_order"),
                                      ({"memory_order": 9}, "memory_order"),
                                      ({"memory_alpha": 0}, "memory_alpha")])
def test_bad_memory_settings_name_themselves(hp, match):
    with pytest.raises(ConfigError, match=match):
        build_model("gru", hp)


@pytest.mark.parametrize("name", ["markov", "lstm"])
def test_memory_models_round_trip_through_a_checkpoint(name, tmp_path):
    from chromasonic_lib import load_checkpoint
    from chromasonic_lib.checkpoints import save_checkpoint
    hp = {**SMALL[name], "memory_order": 2, "memory_alpha": 2.0}
    model = build_model(name, hp, 20, seed=3)
    if name == "markov":
        model.fit(torch.randint(0, 20, (30, 12)), torch.full((30,), 12))
    save_checkpoint(tmp_path / "m.pt", model, name, hp, "pitch")
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    x = _inputs(2, 9)
    assert meta["vocab_size"] == 20
    assert torch.allclose(loaded(x), model.eval()(x), atol=1e-6)


def test_memory_on_long_melodies_gives_each_melody_its_own_result():
    torch.manual_seed(0)
    model = build_model("gru", {**SMALL["gru"], "memory_order": 3}, 20).eval()
    x = torch.randint(0, 20, (3, 2500))          # 3 × 2500² comparisons: done in two pieces
    together = model(x)
    for i in range(3):
        assert torch.allclose(together[i], model(x[i:i + 1])[0], atol=1e-5)


@pytest.mark.parametrize("length", [0, 1, 2, 3, 9])
def test_memory_longer_than_the_melody_so_far(length):
    """Sampling starts from a primer of a note or two (or none), shorter than the memory's order."""
    torch.manual_seed(0)
    base = build_model("lstm", SMALL["lstm"], 20).eval()
    torch.manual_seed(0)
    model = build_model("lstm", {**SMALL["lstm"], "memory_order": 8}, 20).eval()
    x = torch.tensor([[20] + [3, 5, 3, 5, 3, 5, 3, 5, 3][:length]])    # after the start token
    out = model(x)
    assert out.shape == (1, length + 1, 20) and torch.isfinite(out).all()
    if length <= 2:                      # nothing can have recurred yet: the base as it is
        assert torch.allclose(out.exp(), torch.softmax(base(x), -1), atol=1e-6)


def test_a_checkpoint_from_before_the_start_token_is_a_clear_error(tmp_path):
    from chromasonic_lib import load_checkpoint
    model = build_model("lstm", SMALL["lstm"], 20)
    old = {"family": "lstm", "hparams": SMALL["lstm"], "encoding": "pitch", "vocab_size": 20,
           "state_dict": {k: v[:20] if k == "embed.weight" else v for k, v in model.state_dict().items()}}
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ConfigError, match="protocol 1: no start token.*Train the model again"):
        load_checkpoint(tmp_path / "old.pt")


@pytest.mark.parametrize("name", ["markov", "gru"])
def test_an_ensemble_averages_probabilities_and_round_trips(name, tmp_path):
    from chromasonic_lib import load_checkpoint
    from chromasonic_lib.checkpoints import save_checkpoint
    hp = {**SMALL[name], "memory_order": 2}
    members = [build_model(name, hp, 20, seed=s) for s in (1, 2)]
    if name == "markov":
        for s, m in enumerate(members):
            m.fit(_inputs(30, 12, seed=s)[:, 1:], torch.full((30,), 11))
    ensemble = Ensemble(members).eval()
    x = _inputs(2, 9)
    mean = torch.stack([m.eval()(x).softmax(-1) for m in members]).mean(0)
    assert torch.allclose(ensemble(x).exp(), mean, atol=1e-6)
    save_checkpoint(tmp_path / "e.pt", ensemble, name, hp, "pitch")
    loaded, meta = load_checkpoint(tmp_path / "e.pt")
    assert meta["ensemble"] == 2 and isinstance(loaded, Ensemble)
    assert torch.allclose(loaded(x), ensemble(x), atol=1e-6)


def _rhythm_model(rhythm: float, **hp):
    return build_model("lstm", {**SMALL["lstm"], "memory_order": 1, "memory_alpha": 1.0, "memory_rhythm": rhythm,
                                "context": ["duration"], **hp}, 6, seed=0).eval()


def test_the_rhythm_linked_memory_counts_what_followed_with_the_predicted_note_s_rhythm():
    x = torch.tensor([[6, 0, 1, 0, 2, 0]])                   # the start token, then notes
    # The duration of the note each step predicts (0, 1, 0, 2, 0, then one more).
    context = {"duration": torch.tensor([[1, 1, 1, 2, 1, 2]])}
    plain, linked = _rhythm_model(0.0)(x, context).exp()[0], _rhythm_model(0.5)(x, context).exp()[0]
    # Step 5 predicts a note of duration 2 after a 0: the 0 was followed by a 1 of duration 1
    # (step 1) and by a 2 of duration 2 (step 3): only the 2 counts again, with alpha 0.5.
    expected = (torch.nn.functional.one_hot(torch.tensor(2), 6) + 0.5 * plain[5]) / 1.5
    assert torch.allclose(linked[5], expected, atol=1e-6)
    # Step 3 predicts a duration 2 after a 0 that was followed only with duration 1: as plain.
    assert torch.allclose(linked[3], plain[3], atol=1e-6)


def test_the_rhythm_linked_memory_steps_as_it_reads_whole_melodies():
    torch.manual_seed(0)
    model = _rhythm_model(0.7, memory_order=4, context=["duration", "metre", "phrase"])
    x = torch.randint(0, 4, (3, 30))
    x[:, 0] = 6
    context = {"duration": torch.randint(0, 3, (3, 30)), "metre": torch.randint(0, 4, (3, 30)),
               "phrase": torch.randint(0, 2, (3, 30))}
    state, steps = model.start(3), []
    for t in range(30):
        out, state = model.step(state, x[:, t], {k: v[:, t] for k, v in context.items()})
        steps.append(out)
    assert torch.allclose(torch.stack(steps, 1), model(x, context), atol=1e-5)
    # Causal: changing the notes and rhythm after step 20 leaves the predictions up to it.
    later = {k: v.clone() for k, v in context.items()}
    later["duration"][:, 21:] = (later["duration"][:, 21:] + 1) % 3
    y = x.clone()
    y[:, 21:] = (y[:, 21:] + 1) % 4
    assert torch.allclose(model(y, later)[:, :21], model(x, context)[:, :21], atol=1e-6)


@pytest.mark.parametrize("hp,match", [({"memory_rhythm": -1, "memory_order": 2, "context": ["duration"]},
                                       "memory_rhythm of lstm must be a number ≥ 0"),
                                      ({"memory_rhythm": 1, "memory_order": 2},
                                       "memory_rhythm needs the melody memory .* and a model that reads"),
                                      ({"memory_rhythm": 1, "context": ["duration"]},
                                       "memory_rhythm needs the melody memory")])
def test_bad_rhythm_memory_settings_name_themselves(hp, match):
    with pytest.raises(ConfigError, match=match):
        build_model("lstm", hp)


def test_the_melody_memory_counts_in_float32_under_bf16_autocast():
    """bf16 rounds counts above 256: training (autocast) and the reported loss would use
    different memories."""
    from chromasonic_lib.models import remember
    x = torch.zeros(1, 600, dtype=torch.long)
    log_p = torch.log_softmax(torch.zeros(1, 600, 4), -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = remember(log_p, x, 1, 1.0)
    assert torch.equal(under, remember(log_p, x, 1, 1.0))


def test_a_checkpoint_records_every_hyperparameter_with_its_default(tmp_path, monkeypatch):
    from chromasonic_lib import load_checkpoint, save_checkpoint
    path = save_checkpoint(tmp_path / "m.pt", build_model("gru", {"hidden_size": 8}, 12), "gru",
                              {"hidden_size": 8}, "pitch")
    held = torch.load(path, weights_only=True)["hparams"]
    assert set(held) == set(MODEL_DEFAULTS["gru"]) and held["hidden_size"] == 8
    # A default changed later does not change what the old checkpoint rebuilds.
    monkeypatch.setitem(MODEL_DEFAULTS, "gru", {**MODEL_DEFAULTS["gru"], "embedding_dim": 3})
    model, _ = load_checkpoint(path)         # built with the checkpoint's, else the weights misfit
    assert [v.shape[1] for k, v in model.state_dict().items() if k.endswith("embed.weight")] == \
        [held["embedding_dim"]]
