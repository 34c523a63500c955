"""The Optuna objective: build the suggested model, train it, report each epoch, return the loss.

Reads like optuna-examples' ``objective(trial)``; everything about files and progress lives
in callbacks elsewhere. A trial that raises (NaN loss, out of memory, a bad combination of
parameters, Ctrl-C) ends as FAIL with its reason in the user attribute ``fail_reason``.
"""
from __future__ import annotations

import gc
import logging
import math
import time
from pathlib import Path

import optuna
import torch

from ..atomic import atomic_write
from ..config import TrainConfig
from ..data import Prepared
from ..models import build_model, count_parameters
from ..training import evaluate, train
from .heartbeat import JournalHeartbeat
from .space import SearchSpace

log = logging.getLogger(__name__)


class Objective:
    def __init__(self, data: Prepared, space: SearchSpace, base: TrainConfig,
                 output_dir: Path | None = None, deadline: float | None = None,
                 heartbeat: JournalHeartbeat | None = None):
        self.data, self.space, self.base, self.output_dir = data, space, base, output_dir
        self.deadline = deadline        # time.monotonic() after which a running trial stops
        self.heartbeat = heartbeat      # journal studies only: RDB storages have Optuna's own

    def __call__(self, trial: optuna.Trial) -> float:
        if self.heartbeat:
            self.heartbeat.beat(trial)  # at once: a worker that dies in epoch 0 is named too
        family, hparams, training = self.space.suggest(trial)
        trial.set_user_attr("config", {"model": family, **hparams, **training})
        try:
            cfg = self.base.replace(**training)
            model = build_model(family, hparams, self.data.vocab_size, seed=cfg.seed)

            def on_epoch(epoch: int, val_loss: float) -> bool:
                trial.report(val_loss, epoch)
                if self.heartbeat:
                    self.heartbeat.beat(trial)
                if self.deadline is not None and time.monotonic() > self.deadline:
                    trial.set_user_attr("stopped_by", "search timeout")
                    return True
                return trial.should_prune()

            history = train(model, self.data.train, self.data.val, cfg, on_epoch)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted by the user (KeyboardInterrupt)")
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            if isinstance(e, torch.cuda.OutOfMemoryError):
                reason = f"out of GPU memory: {e}"
            trial.set_user_attr("fail_reason", reason[:1000])
            model = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise
        trial.set_user_attr("n_params", count_parameters(model))
        trial.set_user_attr("epochs_trained", history.epochs_trained)
        trial.set_user_attr("train_seconds", round(history.seconds, 3))
        # Stopped by the pruner: pruned. Stopped by the search's timeout: its best epoch so far
        # is a real measurement of this configuration, so it counts (epochs_trained says how short).
        if history.stopped_by == "callback" and not trial.user_attrs.get("stopped_by"):
            raise optuna.TrialPruned(f"pruned after epoch {history.epochs_trained - 1} "
                                     f"at {history.val_loss[-1]:.4f} nats/note")
        metrics = evaluate(model, self.data.val)
        trial.set_user_attr("val_bits_per_note", metrics.bits_per_note)
        trial.set_user_attr("val_accuracy", metrics.accuracy)
        value = history.best_val_loss
        self._maybe_save_best(trial, family, hparams, training, model, value)
        return value

    def _maybe_save_best(self, trial, family, hparams, training, model, value: float) -> None:
        """Keep the weights of the best trial so far as ``best_model.pt``."""
        if self.output_dir is None:
            return
        try:
            best = trial.study.best_value
        except ValueError:          # no completed trial yet
            best = math.inf
        if value < best:
            save_checkpoint(self.output_dir / "best_model.pt", model, family, hparams,
                            self.data.data.encoding.name, {"trial": trial.number, "value": value,
                                                           "training": training})


def save_checkpoint(path: Path, model: torch.nn.Module, family: str, hparams: dict,
                    encoding: str, extra: dict | None = None) -> Path:
    """Weights with everything needed to rebuild them; loadable with ``weights_only=True``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"family": family, "hparams": hparams, "encoding": encoding,
               "vocab_size": model.vocab_size,
               "state_dict": state, **(extra or {})}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, device="cpu") -> tuple[torch.nn.Module, dict]:
    """The model of a checkpoint and its metadata (never unpickles arbitrary objects)."""
    payload = torch.load(path, map_location=device, weights_only=True)
    model = build_model(payload["family"], payload["hparams"], payload["vocab_size"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload
