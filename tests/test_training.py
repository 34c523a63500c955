"""Training: it learns, it is reproducible, it stops when told, it fails loudly on NaN."""
from __future__ import annotations

import math

import pytest
import torch

from chromasonic_lib.config import TrainConfig
from chromasonic_lib.errors import ConfigError, TrainingDiverged
from chromasonic_lib.models import build_model
from chromasonic_lib.training import (batch_lengths, evaluate, mixed_precision, pick_device, train,
                                      train_ensemble)

FAST = dict(epochs=4, batch_size=16, learning_rate=1e-2, min_epoch_tokens=16384)
TINY = {"hidden_size": 32, "embedding_dim": 16, "num_layers": 1, "dropout": 0.0}


def test_a_model_learns_the_walk_well_below_uniform(synthetic_prepared):
    model = build_model("lstm", TINY)
    history = train(model, synthetic_prepared.train, synthetic_prepared.val, TrainConfig(**FAST, transpose=12))
    assert history.best_val_loss < math.log(88) - 1.5       # uniform guessing is ln 88 = 4.48
    assert len(history.val_loss) == 4 and history.best_epoch >= 0


def test_same_config_and_seed_give_the_same_losses(synthetic_prepared):
    runs = [train(build_model("gru", TINY, seed=5), synthetic_prepared.train, synthetic_prepared.val,
                  TrainConfig(**FAST, seed=5)).val_loss for _ in range(2)]
    assert runs[0] == runs[1]


def test_callback_stops_training(synthetic_prepared):
    seen = []
    history = train(build_model("rnn", TINY), synthetic_prepared.train, synthetic_prepared.val,
                    TrainConfig(**FAST), on_epoch=lambda e, v: seen.append(e) or e == 1)
    assert seen == [0, 1] and history.stopped_by == "callback"


def test_nan_loss_raises_training_diverged(synthetic_prepared):
    model = build_model("lstm", TINY)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="nan"):
        train(model, synthetic_prepared.train, synthetic_prepared.val, TrainConfig(**FAST))


def test_a_weight_average_is_what_is_validated_and_kept(synthetic_prepared):
    plain, averaged = (build_model("gru", TINY, seed=5) for _ in range(2))
    train(plain, synthetic_prepared.train, synthetic_prepared.val, TrainConfig(**FAST, seed=5))
    history = train(averaged, synthetic_prepared.train, synthetic_prepared.val,
                    TrainConfig(**FAST, seed=5, weight_average=0.9))
    # The same steps were taken; the model kept is their moving average, scored as recorded.
    assert not torch.equal(plain.head.weight, averaged.head.weight)
    assert evaluate(averaged, synthetic_prepared.val).nats_per_note == pytest.approx(
        history.val_loss[history.best_epoch], rel=1e-5)
    assert history.best_val_loss < math.log(88) - 1.5


@pytest.mark.parametrize("weight_average", [0.0, 0.9])
def test_without_validation_melodies_every_epoch_trains_and_the_last_weights_stay(
        synthetic_prepared, weight_average):
    cfg = TrainConfig(**{**FAST, "patience": 1}, seed=5, weight_average=weight_average)
    model = build_model("gru", TINY, seed=5)
    last = []
    history = train(model, synthetic_prepared.train, None, cfg,
                    on_epoch=lambda epoch, val: last.append(evaluate(model, synthetic_prepared.val)) and False)
    assert history.epochs_trained == 4 and history.best_epoch == 3 and history.stopped_by == "epochs"
    assert all(math.isnan(v) for v in history.val_loss)
    if not weight_average:      # the model as it ended: what the last epoch left
        assert evaluate(model, synthetic_prepared.val).nats_per_note == last[-1].nats_per_note
    else:                       # the average of its steps, not the last step's weights
        assert evaluate(model, synthetic_prepared.val).nats_per_note != last[-1].nats_per_note
        assert evaluate(model, synthetic_prepared.val).nats_per_note < math.log(88) - 1.5


def test_markov_fits_by_counting_in_one_step(synthetic_prepared):
    history = train(build_model("markov", {"order": 1}), synthetic_prepared.train, synthetic_prepared.val,
                    TrainConfig(transpose=12))
    assert history.epochs_trained == 1
    assert history.best_val_loss < synthetic_prepared.floor() + 0.15


def test_evaluate_scores_every_note_of_the_collection(synthetic_prepared):
    model = build_model("markov", {"order": 2})
    train(model, synthetic_prepared.train, synthetic_prepared.val, TrainConfig())
    for split, melodies in ((synthetic_prepared.val, synthetic_prepared.splits.val),
                            (synthetic_prepared.test, synthetic_prepared.splits.test)):
        assert evaluate(model, split).n_notes == sum(len(m) for m in melodies) == split.n_predicted


def test_an_ensemble_scores_no_worse_than_its_members_on_average(synthetic_prepared):
    """-log of the mean probability ≤ the mean of -log (Jensen), note by note."""
    cfg = TrainConfig(**{**FAST, "epochs": 2})
    ensemble, histories = train_ensemble(lambda j: build_model("gru", TINY, seed=3 + j),
                                         synthetic_prepared.train, synthetic_prepared.val, cfg, n=2)
    members = [evaluate(m, synthetic_prepared.val) for m in ensemble.members]
    together = evaluate(ensemble, synthetic_prepared.val)
    assert len(histories) == 2 and members[0].nats_per_note != members[1].nats_per_note
    assert together.nats_per_note <= sum(m.nats_per_note for m in members) / 2
    assert together.n_notes == members[0].n_notes == synthetic_prepared.val.n_predicted
    # Member j is what a single model trained with seed cfg.seed + j would be.
    alone = build_model("gru", TINY, seed=4)
    train(alone, synthetic_prepared.train, synthetic_prepared.val, cfg.replace(seed=cfg.seed + 1))
    assert evaluate(alone, synthetic_prepared.val).nats_per_note == pytest.approx(members[1].nats_per_note)


def test_batch_lengths_are_known_on_the_host_before_any_batch_is_cut(synthetic_prepared):
    assert batch_lengths(torch.tensor([3, 5, 2, 7, 1]), 2) == [5, 7, 1]
    data = synthetic_prepared.train
    idx = torch.arange(len(data))
    for i, length in zip(range(0, len(data), 16), batch_lengths(data.lengths.cpu(), 16)):
        assert data.batch(idx[i:i + 16], bos=88, length=length)[0].shape == data.batch(idx[i:i + 16], bos=88)[0].shape


@pytest.fixture
def tf32_flags():
    """The process-wide TF32 flags, restored afterwards."""
    from torch.backends import cuda, cudnn
    before = cuda.matmul.allow_tf32, cudnn.allow_tf32
    yield
    cuda.matmul.allow_tf32, cudnn.allow_tf32 = before


@pytest.mark.filterwarnings("ignore:CUDA is not available")      # autocast("cuda") on a CPU build
def test_bf16_autocast_on_a_gpu_that_has_it_except_for_cudnn_rnns(monkeypatch, tf32_flags):
    import contextlib
    from chromasonic_lib import training
    assert isinstance(mixed_precision(torch.device("cpu"), build_model("transformer", {})), contextlib.nullcontext)
    monkeypatch.setattr(training, "_native_bf16", lambda device: True)
    gpu = torch.device("cuda", 0)
    precision = mixed_precision(gpu, build_model("transformer", {"memory_order": 2}))
    assert isinstance(precision, torch.autocast) and precision.fast_dtype == torch.bfloat16
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert isinstance(mixed_precision(gpu, build_model("lstm", TINY)), contextlib.nullcontext)
    monkeypatch.setattr(training, "_native_bf16", lambda device: False)        # before Ampere: TF32 only
    assert isinstance(mixed_precision(gpu, build_model("transformer", {})), contextlib.nullcontext)


def test_missing_cuda_warns_and_falls_back_to_cpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        assert pick_device("cuda").type == "cpu"
    assert pick_device("auto").type in ("cpu", "mps")


@pytest.mark.parametrize("field,value", [("learning_rate", 0), ("batch_size", -1), ("epochs", "ten"),
                                         ("optimizer", "adagrad"), ("transpose", 40), ("schedule", "linear"),
                                         ("weight_average", 1.0)])
def test_bad_training_settings_are_named(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})
