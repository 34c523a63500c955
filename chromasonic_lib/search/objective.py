"""The Optuna objective: build the suggested model, train it, report each epoch, return the loss.

Reads like optuna-examples' ``objective(trial)``; everything about files and progress lives
in callbacks elsewhere. A complete trial's weights go to the artifact store, linked to it. A
trial that raises (NaN loss, out of memory, a bad combination of parameters, Ctrl-C) ends as
FAIL with its reason in the user attribute ``fail_reason``.
"""
from __future__ import annotations

import gc
import logging
import time
from typing import Any

import optuna
import torch

from ..checkpoints import upload_trial_checkpoint
from ..config import TrainConfig
from ..data import Prepared
from ..models import build_model, count_parameters
from ..training import evaluate, train
from .heartbeat import JournalHeartbeat
from .space import SearchSpace

log = logging.getLogger(__name__)


class Objective:
    def __init__(self, data: Prepared, space: SearchSpace, base: TrainConfig,
                 store: Any = None, deadline: float | None = None,
                 heartbeat: JournalHeartbeat | None = None):
        self.data, self.space, self.base = data, space, base
        self.store = store              # an artifact store: each complete trial's weights go there
        self.deadline = deadline        # time.monotonic() after which a running trial stops
        self.heartbeat = heartbeat      # journal studies only: RDB storages have Optuna's own

    def __call__(self, trial: optuna.Trial) -> float:
        if self.heartbeat is None:
            return self.run(trial)
        stop_beating = self.heartbeat.start(trial)
        try:
            return self.run(trial)
        finally:
            stop_beating()

    def run(self, trial: optuna.Trial) -> float:
        family, hparams, training = self.space.suggest(trial)
        trial.set_user_attr("config", {"model": family, **hparams, **training})
        try:
            cfg = self.base.replace(**training)
            model = build_model(family, hparams, self.data.vocab_size, seed=cfg.seed)

            def on_epoch(epoch: int, val_loss: float) -> bool:
                trial.report(val_loss, epoch)
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
        if self.store is not None:
            upload_trial_checkpoint(trial, self.store, model, family, hparams,
                                    self.data.data.encoding.name,
                                    {"value": value, "training": training})
        return value
