"""The Optuna objective: build the suggested model, train it, report each epoch, return the loss.

Reads like optuna-examples' ``objective(trial)``; everything about files and progress lives
in callbacks elsewhere. A complete trial's weights go to the artifact store, linked to it. A
trial that raises (NaN loss, out of memory, a bad combination of parameters, Ctrl-C) ends as
FAIL with its reason in the user attribute ``fail_reason``, and gives back the GPU memory it
held, so the trials running beside it go on (one that another worker failed as stale ends
quietly). A trial whose weights can't be uploaded stays COMPLETE with ``checkpoint_error``. Each trial runs on a slot of ``DeviceSlots``
(user attribute ``device``).
"""
from __future__ import annotations

import gc
import logging
import threading
import time
import traceback
from typing import Any

import optuna
import torch

from ..checkpoints import upload_trial_checkpoint
from ..config import TrainConfig
from ..data import Prepared
from ..models import build_model, count_parameters
from ..training import evaluate, train
from .devices import DeviceSlots, free_memory
from .faults import note_failure
from .housekeeping import upload_weights
from .heartbeat import JournalHeartbeat
from .space import SearchSpace

log = logging.getLogger(__name__)


class Objective:
    def __init__(self, slots: DeviceSlots, space: SearchSpace, base: TrainConfig,
                 store: Any = None, deadline: float | None = None,
                 heartbeat: JournalHeartbeat | None = None, stop: threading.Event | None = None):
        self.slots, self.space, self.base = slots, space, base
        self.store = store              # an artifact store: each complete trial's weights go there
        self.deadline = deadline        # time.monotonic() after which a running trial stops
        self.heartbeat = heartbeat      # journal studies only: RDB storages have Optuna's own
        self.stop = stop                # set by Ctrl-C while trials run in threads

    def __call__(self, trial: optuna.Trial) -> float:
        with self.slots.hold() as slot:
            trial.set_user_attr("device", str(slot.device))
            if self.heartbeat is None:
                return self.run(trial, slot.data)
            stop_beating = self.heartbeat.start(trial)
            try:
                return self.run(trial, slot.data)
            finally:
                stop_beating()

    def run(self, trial: optuna.Trial, data: Prepared) -> float:
        family, hparams, training = self.space.suggest(trial)
        trial.set_user_attr("config", {"model": family, **hparams, **training})
        try:
            cfg = self.base.replace(**training)
            model = build_model(family, hparams, data.vocab_size, seed=cfg.seed)

            def on_epoch(epoch: int, val_loss: float) -> bool:
                trial.report(val_loss, epoch)
                if self.stop is not None and self.stop.is_set():
                    raise KeyboardInterrupt     # as Ctrl-C does when the trial runs alone
                if self.deadline is not None and time.monotonic() > self.deadline:
                    trial.set_user_attr("stopped_by", "search timeout")
                    return True
                return trial.should_prune()

            history = train(model, data.train, data.val, cfg, on_epoch)
            # Stopped by the pruner: pruned. Stopped by the search's timeout: its best epoch so
            # far is a real measurement of this configuration, so it counts (epochs_trained
            # says how short).
            pruned = history.stopped_by == "callback" and not trial.user_attrs.get("stopped_by")
            metrics = None if pruned else evaluate(model, data.val)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted by the user (KeyboardInterrupt)")
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            if isinstance(e, torch.cuda.OutOfMemoryError):
                reason = f"out of memory on {data.train.tokens.device}: {e}"
            # The traceback's frames hold the model, its gradients and activations: let go of
            # them before giving the memory back.
            traceback.clear_frames(e.__traceback__)
            model = None
            gc.collect()
            free_memory(data.train.tokens.device)
            note_failure(trial, reason, e)      # a trial failed elsewhere as stale ends quietly
            raise
        trial.set_user_attr("n_params", count_parameters(model))
        trial.set_user_attr("epochs_trained", history.epochs_trained)
        trial.set_user_attr("train_seconds", round(history.seconds, 3))
        if pruned:
            raise optuna.TrialPruned(f"pruned after epoch {history.epochs_trained - 1} "
                                     f"at {history.val_loss[-1]:.4f} nats/note")
        trial.set_user_attr("val_bits_per_note", metrics.bits_per_note)
        trial.set_user_attr("val_accuracy", metrics.accuracy)
        value = history.best_val_loss
        if self.store is not None:      # a failed upload costs the weights, not the value
            upload_weights(trial, lambda: upload_trial_checkpoint(
                trial, self.store, model, family, hparams, data.data.encoding.name,
                {"value": value, "training": training}))
        return value
