"""Predictions averaged over transpositions of the melody (``TranspositionAverage``)."""
from __future__ import annotations

import json
import subprocess

import pytest
import torch
from conftest import PYTHON, ROOT

from chromasonic_lib.errors import ConfigError
from chromasonic_lib.models import build_model
from chromasonic_lib.transposition import TranspositionAverage

SMALL = {"hidden_size": 16, "embedding_dim": 8, "num_layers": 1, "memory_order": 3}


def _melodies():
    torch.manual_seed(0)
    x = torch.randint(40, 50, (3, 12))
    x[:, 0] = 88            # the start token
    x[1, 5] = 1             # one step from the bottom: moved down by 2 it leaves the keyboard
    x[2, 7] = 87            # the top key
    return x


def _kwargs(context, t=None):
    if context is None:
        return {}
    return {"context": context if t is None else {n: v[:, t] for n, v in context.items()}}


@pytest.fixture(params=["pitch", "context"])
def model_and_context(request):
    if request.param == "pitch":
        return build_model("lstm", SMALL, 88, seed=1).eval(), None
    model = build_model("lstm", {**SMALL, "context": ["duration", "key"]}, 88, seed=1).eval()
    torch.manual_seed(1)
    return model, {"duration": torch.randint(0, 14, (3, 12)), "key": torch.randint(0, 24, (3, 12))}


def test_no_transposition_is_the_model_itself(model_and_context):
    model, context = model_and_context
    x = _melodies()
    expected = torch.log_softmax(model(x, **_kwargs(context)), -1)
    assert torch.allclose(TranspositionAverage(model, 0)(x, **_kwargs(context)), expected, atol=1e-5)


def test_the_average_is_a_distribution_and_causal(model_and_context):
    model, context = model_and_context
    x = _melodies()
    average = TranspositionAverage(model, 3)
    log_p = average(x, **_kwargs(context))
    assert torch.allclose(log_p.exp().sum(-1), torch.ones(3, 12), atol=1e-4)
    later = x.clone()
    later[:, 8:] = 0        # later notes changed, and moved down they would leave the keyboard
    changed = average(later, **_kwargs(context))
    assert torch.equal(changed[:, :8], log_p[:, :8])
    assert not torch.allclose(changed[:, 9:], log_p[:, 9:])


def test_step_by_step_equals_the_whole_melody(model_and_context):
    model, context = model_and_context
    x = _melodies()
    average = TranspositionAverage(model, 2)
    state, steps = average.start(3), []
    for t in range(x.shape[1]):
        out, state = average.step(state, x[:, t], **_kwargs(context, t))
        steps.append(out)
    assert torch.allclose(torch.stack(steps, 1), average(x, **_kwargs(context)), atol=1e-5)


def test_a_copy_off_the_keyboard_stops_counting_and_each_copy_is_moved_back():
    class Fixed(torch.nn.Module):
        """Always predicts the key above the last token (as logits), whatever the transposition."""
        vocab_size = 88

        def forward(self, x, context=None):
            return torch.where(torch.arange(88) == (x[..., None] + 1).clamp(max=87), 0.0, -50.0)

    x = torch.tensor([[88, 0, 5, 6]])       # the lowest key: moved down, the copy leaves the keyboard
    log_p = TranspositionAverage(Fixed(), 2)(x)
    # Every copy that counts says "one key above the last", moved back: the same key.
    for t, last in ((1, 0), (2, 5), (3, 6)):
        assert log_p[0, t].argmax() == last + 1 and log_p[0, t, last + 1].exp() > 0.99


def test_the_range_is_checked():
    with pytest.raises(ConfigError, match="test_transpose must be an integer from 0 to 12"):
        TranspositionAverage(build_model("markov"), 13)


def test_crossval_scores_over_transpositions_from_the_params_file_or_the_command_line(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("model: lstm\nhidden_size: 8\nembedding_dim: 8\nnum_layers: 1\nepochs: 1\n"
                      "min_epoch_tokens: 0\ntest_transpose: 2\n")

    def crossval(*extra):
        run = subprocess.run([PYTHON, "-m", "chromasonic_lib.crossval", "--dataset", "synthetic",
                              "--folds", "2", "--params", str(params), "--json", *extra],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        return run.stdout, json.loads(run.stdout.strip().splitlines()[-1])

    text, result = crossval()
    assert result["test_transpose"] == 2 and "test_transpose" not in result["params"]
    assert "each note scored as the average over the melody moved by ±2 semitones" in text
    _, plain = crossval("--test-transpose", "0")
    assert plain["test_transpose"] == 0 and plain["bits_per_note"] != result["bits_per_note"]
    # The same trained models: the average differs from each fold's own score, not the notes scored.
    assert plain["n_notes"] == result["n_notes"]


def test_train_best_scores_saves_and_samples_over_transpositions(tmp_path):
    import chromasonic_lib as cl
    from chromasonic_lib import best
    from chromasonic_lib.training import evaluate
    params = tmp_path / "best_hyperparameters.json"
    params.write_text(json.dumps({"model": "lstm", "hidden_size": 8, "embedding_dim": 4, "memory_order": 2}))
    cfg = cl.TrainBestConfig(best_params=str(params), output_dir=str(tmp_path / "best"), device="cpu",
                             dataset="synthetic", n_sequences=30, sequence_length=20, epochs=1,
                             test_transpose=2)
    run = best.train_best(cfg, best.best_configuration(cfg))
    assert isinstance(run.model, TranspositionAverage) and run.model.semitones == 2
    assert run.test.nats_per_note != evaluate(run.model.base, run.data.test).nats_per_note
    metrics = json.loads((tmp_path / "best" / "test_metrics.json").read_text())
    assert metrics["test_transpose"] == 2
    loaded, meta = cl.load_checkpoint(tmp_path / "best" / "model.pt")
    assert isinstance(loaded, TranspositionAverage) and meta["test_transpose"] == 2
    assert evaluate(loaded, run.data.test).nats_per_note == pytest.approx(run.test.nats_per_note, rel=1e-5)
    [sample] = best.generate_samples(run, cfg, n=1, length=8)
    assert len(sample.tokens) == 8
    with pytest.raises(ConfigError, match="test_transpose must be an integer from 0 to 12"):
        cl.TrainBestConfig(best_params=str(params), test_transpose=13)


def test_token_lists_without_piano_keys_are_refused_and_any_wrapper_round_trips(tmp_path):
    from chromasonic_lib.checkpoints import load_checkpoint, save_checkpoint
    with pytest.raises(ConfigError, match="needs melodies of piano keys"):
        TranspositionAverage(build_model("markov", vocab_size=12), 1)
    model = build_model("lstm", SMALL, 88, seed=1)
    path = save_checkpoint(tmp_path / "m.pt", TranspositionAverage(model, 0), "lstm", SMALL, "pitch")
    loaded, meta = load_checkpoint(path)
    assert meta["test_transpose"] == 0 and not isinstance(loaded, TranspositionAverage)
