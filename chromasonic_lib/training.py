"""Training and evaluation: ``train(model, train, val, cfg, on_epoch) -> History``.

One function trains every model family: neural models by AdamW/Adam/SGD with transposition
augmentation, early stopping and a per-epoch callback (the search prunes through it);
the markov model by counting. Losses are nats per note, every note of a melody counted
(the first predicted from the start token alone); padding never counts. A model that reads
musical context (its ``context``) is given the batch's; the loss is still over pitches.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .data.splits import IGNORE, MelodyTensor, epoch_batches, n_batches
from .errors import TrainingDiverged
from .models import Ensemble
from .imports import import_object

log = logging.getLogger(__name__)

OnEpoch = Callable[[int, float], bool]   # (epoch, val_loss) -> True to stop now


class Batch(NamedTuple):
    """What a training step of one's own (``TrainConfig.train_step``) is given: ``x`` the input
    tokens [B, T] (the start token, then the notes), ``y`` the notes to predict [B, T] (``IGNORE``,
    -100, at padding), ``context`` the context features where the model reads some."""

    x: torch.Tensor
    y: torch.Tensor
    context: dict | None = None


def pick_device(name: str = "auto") -> torch.device:
    """auto → cuda, then mps, then cpu. Asking for a missing cuda/mps warns and uses the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(f"device={name!r} but CUDA is not available here; using the CPU",
                      RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        warnings.warn("device='mps' but MPS is not available here; using the CPU",
                      RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    return torch.device(name)


@dataclass
class Metrics:
    """Scores on one split: nats per note is what searches minimise; ``n_notes`` is every note."""

    nats_per_note: float
    bits_per_note: float
    accuracy: float
    perplexity: float
    n_notes: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class History:
    """What one training run did, epoch by epoch."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_by: str = "epochs"       # epochs | early_stopping | callback
    seconds: float = 0.0

    @property
    def best_val_loss(self) -> float:
        return min(self.val_loss) if self.val_loss else math.nan

    @property
    def epochs_trained(self) -> int:
        return len(self.val_loss)


def mixed_precision(device: torch.device, model: nn.Module) -> contextlib.AbstractContextManager:
    """How ``model`` trains on ``device``: on a CUDA GPU, TF32 matmuls (float32 sums over
    10-bit products) and, where the GPU computes bf16 natively (Ampere and later; emulated bf16
    is slower), bf16 autocast. Not for a model with an RNN/LSTM/GRU layer: autocast runs cuDNN's
    RNNs in float16 whatever dtype it is given, and float16 gradients without loss scaling can
    underflow; those train in TF32. Nothing changes on other devices."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    # Process-wide and only ever switched on; CPU matmuls keep full float32.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if any(isinstance(m, nn.RNNBase) for m in model.modules()) or not _native_bf16(device):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


def _native_bf16(device: torch.device) -> bool:
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def batch_lengths(lengths: torch.Tensor, batch_size: int) -> list[int]:
    """The longest melody of each batch of ``batch_size`` in ``lengths`` (on the CPU), known
    before any batch is cut: asking the device batch by batch would wait for it each time."""
    pad = -len(lengths) % batch_size
    return F.pad(lengths, (0, pad)).view(-1, batch_size).amax(1).tolist()


@torch.no_grad()
def evaluate(model: nn.Module, data: MelodyTensor, batch_size: int = 256) -> Metrics:
    """Loss (nats and bits per note), accuracy and perplexity over every note of ``data``.

    In float32 (TF32 matmuls on CUDA) even where training used bf16: this is the number a
    trial reports. The device is asked for the sums once, at the end.
    """
    host_lengths = data.host_lengths
    sums, hits = [], []
    for _, y, logits in scoring_batches(model, data, batch_size):
        sums.append(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                    ignore_index=IGNORE, reduction="sum"))
        hits.append(((logits.argmax(-1) == y) & (y != IGNORE)).sum())
    total = torch.stack(sums).cpu().double().sum().item()      # MPS has no float64
    correct, count = int(torch.stack(hits).sum()), int(host_lengths.sum())
    nats = total / max(count, 1)
    return Metrics(nats, nats / math.log(2), correct / max(count, 1),
                   math.exp(min(nats, 700)), count)


def scoring_batches(model: nn.Module, data: MelodyTensor, batch_size: int = 256
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(melody indices [B], targets [B, L], outputs [B, L, V]) of every batch of ``data``, in
    order, the model in eval mode: the one forward pass that every score of a model is taken
    from (``evaluate``'s means, ``surprise``'s per-note records), so they cannot disagree on
    what the model was given."""
    was_training = model.training
    model.eval()
    try:
        for start, length in zip(range(0, len(data), batch_size), batch_lengths(data.host_lengths, batch_size)):
            idx = torch.arange(start, min(start + batch_size, len(data)), device=data.tokens.device)
            x, y = data.batch(idx, bos=model.vocab_size, length=length)
            yield idx, y, model(x, **_context(model, data, idx, x))
    finally:
        model.train(was_training)


def _context(model: nn.Module, data: MelodyTensor, idx: torch.Tensor, x: torch.Tensor,
             shifts: torch.Tensor | None = None) -> dict:
    """The keyword arguments that give ``model`` the batch's context: none unless it reads some."""
    names = getattr(model, "context", ())
    return {"context": data.context(idx, names, x.shape[1], shifts)} if names else {}


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.learning_rate, momentum=0.9, weight_decay=cfg.weight_decay)


def _fit_markov(model: nn.Module, train: MelodyTensor, cfg: TrainConfig) -> None:
    """Count the training melodies in every transposition the augmentation range allows."""
    x, lengths = train.tokens, train.lengths
    if cfg.transpose:
        xs, ls = [], []
        for shift in range(-cfg.transpose, cfg.transpose + 1):
            ok = (train.max_down >= -shift) & (train.max_up >= shift) if shift else \
                torch.ones(len(train), dtype=torch.bool, device=x.device)
            xs.append((x + shift * train.is_key)[ok])
            ls.append(lengths[ok])
        x, lengths = torch.cat(xs), torch.cat(ls)
    model.fit(x, lengths)


def _check_finite(what: str, value: float, epoch: int) -> None:
    if not math.isfinite(value):
        raise TrainingDiverged(f"{what} became {value} at epoch {epoch}")


def _validate(model: nn.Module, val_data: MelodyTensor | None, epoch: int) -> float:
    """The validation loss (nats/note) after ``epoch``; NaN with no validation melodies."""
    if val_data is None:
        return math.nan
    val = evaluate(model, val_data).nats_per_note
    _check_finite("validation loss", val, epoch)
    return val


def train(model: nn.Module, train_data: MelodyTensor, val_data: MelodyTensor | None, cfg: TrainConfig,
          on_epoch: OnEpoch | None = None) -> History:
    """Train ``model`` on ``train_data``; keep the weights of its best validation epoch.

    ``on_epoch(epoch, val_loss)`` runs after every epoch; returning True stops training
    (``History.stopped_by == "callback"``). With no validation melodies (``val_data`` None)
    it trains every epoch and keeps the last weights (their average, with ``weight_average``);
    the validation losses are then NaN. A NaN/inf loss raises :class:`TrainingDiverged`.
    With ``cfg.train_step`` (a training step of one's own, for a custom loss) each batch calls
    ``fn(model, batch, optimizer, params)`` (a :class:`Batch`; ``params`` the TrainConfig as a
    dict) after the gradients are zeroed: it computes the loss, calls ``backward`` and returns
    the loss; the clipping, the optimizer step, the schedule, validation in nats/note, pruning
    and checkpoints stay the workbench's.
    The data must already be on the device the model should train on.
    """
    device = train_data.tokens.device
    torch.manual_seed(cfg.seed)
    model.to(device)
    history = History()
    start = time.perf_counter()

    if not getattr(model, "trainable", True):
        _fit_markov(model, train_data, cfg)
        val = _validate(model, val_data, 0)
        history.train_loss.append(math.nan)
        history.val_loss.append(val)
        history.best_epoch = 0
        if on_epoch and on_epoch(0, val):
            history.stopped_by = "callback"
        history.seconds = time.perf_counter() - start
        return history

    gen = torch.Generator().manual_seed(cfg.seed)
    precision = mixed_precision(device, model)
    own_step = import_object(cfg.train_step, "train_step") if cfg.train_step else None
    step_params = dataclasses.asdict(cfg) if own_step else None
    optimizer = _make_optimizer(model, cfg)
    steps_per_epoch = n_batches(train_data, cfg.min_epoch_tokens, cfg.batch_size)
    # Cosine decay to zero over the planned epochs: big early steps, precise late ones.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / (cfg.epochs * steps_per_epoch))))
        if cfg.schedule == "cosine" else 1.0)
    # The weights evaluated and kept: the model's own, or their moving average.
    averaged = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.weight_average))
        if cfg.weight_average else None)
    kept = model
    if averaged is not None:
        kept = averaged.module
        for rnn in (m for m in kept.modules() if isinstance(m, nn.RNNBase)):
            rnn.flatten_parameters()    # the copy's weights in one chunk again, as cuDNN wants them
    best_state = None
    for epoch in range(cfg.epochs):
        model.train()
        total = torch.zeros((), device=device)
        batches = epoch_batches(train_data, cfg.min_epoch_tokens, cfg.batch_size, gen)   # on the host
        for batch in batches:
            idx = batch.to(device)
            shifts = train_data.random_shifts(idx, cfg.transpose, gen) if cfg.transpose else None
            x, y = train_data.batch(idx, shifts, bos=model.vocab_size,
                                    length=int(train_data.host_lengths[batch].max()))
            optimizer.zero_grad(set_to_none=True)
            with precision:
                context = _context(model, train_data, idx, x, shifts)
                if own_step is None:
                    logits = model(x, **context)
                    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                           ignore_index=IGNORE)
                else:
                    loss = own_step(model, Batch(x, y, context.get("context")), optimizer, step_params)
            if own_step is None:
                loss.backward()
            elif not isinstance(loss, torch.Tensor) or loss.dim():
                raise TypeError(f"train_step {cfg.train_step} must return the batch's loss as a "
                                f"0-dim tensor, got {loss!r:.80}")
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            schedule.step()
            if averaged is not None:
                averaged.update_parameters(model)
            total += loss.detach()
        train_loss = (total / len(batches)).item()      # one sync per epoch, not per batch
        _check_finite("training loss", train_loss, epoch)
        val = _validate(kept, val_data, epoch)
        history.train_loss.append(train_loss)
        history.val_loss.append(val)
        if val_data is None:        # nothing held out: every epoch counts, the last is kept
            history.best_epoch = epoch
        elif history.best_epoch < 0 or val < history.val_loss[history.best_epoch]:
            history.best_epoch = epoch
            best_state = copy.deepcopy(kept.state_dict())
        log.debug("epoch %d: train %.4f, val %.4f", epoch, train_loss, val)
        if on_epoch and on_epoch(epoch, val):
            history.stopped_by = "callback"
            break
        if cfg.patience and epoch - history.best_epoch >= cfg.patience:
            history.stopped_by = "early_stopping"
            break
    if best_state is None and kept is not model:    # nothing held out: the average as it ended
        best_state = kept.state_dict()
    if best_state is not None:
        model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    return history


def train_ensemble(make_model: Callable[[int], nn.Module], train_data: MelodyTensor,
                   val_data: MelodyTensor | None, cfg: TrainConfig, n: int = 1,
                   on_epoch: Callable[[int, float], bool] | None = None
                   ) -> tuple[nn.Module, list[History]]:
    """Train ``n`` models, the j-th built by ``make_model(j)`` and trained with seed
    ``cfg.seed + j``; returns the model (``n`` = 1) or their :class:`Ensemble`, and each one's
    history. ``make_model(j)`` should seed the j-th model's initial weights with ``+ j`` too.
    ``on_epoch``: each member's ``train`` callback.
    """
    models, histories = [], []
    for j in range(n):
        model = make_model(j)
        histories.append(train(model, train_data, val_data, cfg.replace(seed=cfg.seed + j), on_epoch))
        models.append(model)
    return (models[0] if n == 1 else Ensemble(models)), histories
