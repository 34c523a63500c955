"""The Optuna objective: build the suggested model, train it, report each epoch, return the loss.

Reads like optuna-examples' ``objective(trial)``; everything about files and progress lives
in callbacks elsewhere. A complete trial's weights go to the artifact store, linked to it. A
trial that raises (NaN loss, out of memory, a bad combination of parameters, Ctrl-C) ends as
FAIL with its reason in the user attribute ``fail_reason``, and gives back the GPU memory it
held, so the trials running beside it go on (one that another worker failed as stale ends
quietly). A trial whose weights can't be uploaded stays COMPLETE with ``checkpoint_error``. Each trial runs on a slot of ``DeviceSlots``
(user attribute ``device``).

With ``folds`` (a :class:`~chromasonic_lib.folds.FoldSet`) each trial is a cross-validation of its
configuration by crossval's own fold loop: the value is the notes-weighted mean over the folds,
the running mean is reported after each fold (in fold order, so every trial is judged on the
same folds), and a pruned trial stops between folds. With the paired pruner (``wilcoxon``) each
melody's nats/note is reported instead, its step the melody's fixed id, and a pruned trial says
on how many melodies and at what p-value (``pruned_on``). User attribute ``folds`` holds each
fold's notes and nats/note.
"""
from __future__ import annotations

import gc
import logging
import math
import threading
import time
import traceback
from contextlib import closing
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch

from ..checkpoints import upload_trial_checkpoint
from ..config import TrainConfig
from ..data import Prepared
from ..folds import PROTOCOL_SETTINGS, FoldSet, Recipe, in_order, pooled
from ..models import build_model, count_parameters
from ..surprise import joined_notes, per_melody
from ..training import evaluate, train
from ..transposition import TranspositionAverage
from .devices import DeviceSlots, free_memory
from .faults import note_failure
from .housekeeping import upload_weights
from .heartbeat import JournalHeartbeat
from .objectives import measure_costs
from .space import SearchSpace

log = logging.getLogger(__name__)


class Objective:
    def __init__(self, slots: DeviceSlots, space: SearchSpace, base: TrainConfig,
                 store: Any = None, deadline: float | None = None,
                 heartbeat: JournalHeartbeat | None = None, stop: threading.Event | None = None,
                 folds: FoldSet | None = None, paired: bool = False,
                 objectives: list[str] | None = None):
        self.slots, self.space, self.base = slots, space, base
        self.folds = folds              # cross-validated trials: the study's folds
        # Cross-validated trials report each melody's nats/note (step: its fixed id), for the
        # paired pruner; else the running mean after each fold.
        self.paired = paired
        self.store = store              # an artifact store: each complete trial's weights go there
        self.deadline = deadline        # time.monotonic() after which a running trial stops
        self.heartbeat = heartbeat      # journal studies only: RDB storages have Optuna's own
        self.stop = stop                # set by Ctrl-C while trials run in threads
        # Several objectives: the trial also returns its model's size and speed, and is not
        # pruned (Optuna prunes single-objective studies only).
        self.objectives = objectives or ["bits_per_note"]
        self.multi = len(self.objectives) > 1

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        with self.slots.hold() as slot:
            trial.set_user_attr("device", str(slot.device))
            if self.heartbeat is None:
                return self.run(trial, slot.data)
            stop_beating = self.heartbeat.start(trial)
            try:
                return self.run(trial, slot.data)
            finally:
                stop_beating()

    def run(self, trial: optuna.Trial, data: Prepared) -> float | list[float]:
        family, hparams, training = self.space.suggest(trial)
        if self.base.train_step:        # recorded with the trial, so train_best trains it so too
            training["train_step"] = self.base.train_step
        if self.folds is not None:
            return self.cross_validate(trial, family, hparams, training, data)
        trial.set_user_attr("config", {"model": family, **hparams, **training})
        test_transpose = training.pop("test_transpose", 0)
        model = None
        val_curve: list[float] = []
        try:
            cfg = self.base.replace(**training)
            model = build_model(family, hparams, data.vocab_size, seed=cfg.seed)

            def on_epoch(epoch: int, val_loss: float) -> bool:
                if self.multi:          # no reports in a multi-objective study: kept for the views
                    val_curve.append(val_loss)
                    trial.set_user_attr("val_curve", val_curve)
                else:
                    trial.report(val_loss, epoch)
                self._check_stop()
                if self._past_deadline(trial):
                    return True
                return not self.multi and trial.should_prune()

            history = train(model, data.train, data.val, cfg, on_epoch)
            # Stopped by the pruner: pruned. Stopped by the search's timeout: its best epoch so
            # far is a real measurement of this configuration, so it counts (epochs_trained
            # says how short).
            pruned = history.stopped_by == "callback" and not trial.user_attrs.get("stopped_by")
            scored = TranspositionAverage(model, test_transpose) if test_transpose else model
            metrics = None if pruned else evaluate(scored, data.val)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted by the user (KeyboardInterrupt)")
            raise
        except Exception as e:
            model = None
            self._failed(trial, e, data)
            raise
        trial.set_user_attr("n_params", count_parameters(model))
        trial.set_user_attr("epochs_trained", history.epochs_trained)
        trial.set_user_attr("train_seconds", round(history.seconds, 3))
        if pruned:
            evidence = _median_evidence(trial, history.epochs_trained - 1, min(history.val_loss))
            raise optuna.TrialPruned(f"pruned after epoch {history.epochs_trained - 1} "
                                     f"at {history.val_loss[-1]:.4f} nats/note{evidence}")
        trial.set_user_attr("val_bits_per_note", metrics.bits_per_note)
        trial.set_user_attr("val_accuracy", metrics.accuracy)
        # Over transpositions the scored model is another one than the epochs' validation.
        value = metrics.nats_per_note if test_transpose else history.best_val_loss
        if self.store is not None:      # a failed upload costs the weights, not the value
            upload_weights(trial, lambda: upload_trial_checkpoint(
                trial, self.store, model, family, hparams, data.data.encoding.name,
                {"value": value, "training": training}))
        return self._values(trial, value, scored)

    def cross_validate(self, trial: optuna.Trial, family: str, hparams: dict[str, Any],
                       training: dict[str, Any], data: Prepared) -> float:
        """The trial's configuration trained and scored on every fold, as crossval does."""
        folds = self.folds
        protocol = {k: training.pop(k) for k in PROTOCOL_SETTINGS if k in training}
        recipe = Recipe(family, hparams, training, **{"epochs": self.base.epochs,
                                                      "val_fraction": folds.val_fraction, **protocol},
                        seed=self.base.seed, device=str(data.train.tokens.device))
        trial.set_user_attr("config", {**recipe.as_params(), **folds.study_params()})
        lines: list[dict] = []
        melodies: dict[int, float] = {}         # melody id → nats/note, as reported (paired)
        reported: list[float] = []              # the running means reported (median pruner)

        def on_epoch(epoch: int, val_loss: float) -> bool:
            self._check_stop()
            if self._past_deadline(trial):
                raise _Deadline
            return False

        try:
            state, _ = folds.start(recipe)
            with closing(folds.lines(recipe, state, on_epoch)) as running:
                for line in in_order(running):
                    lines.append(line)
                    trial.set_user_attr("folds", [{"notes": f["n_notes"], "nats_per_note": f["nats_per_note"]}
                                                  for f in lines])
                    if self.paired and not self.multi:    # a multi-objective study reports nothing
                        melodies.update(_report_melodies(trial, line["notes"], self.base.seed))
                    elif not self.multi:
                        reported.append(pooled(lines))
                        trial.report(reported[-1], line["fold"])
                    self._check_stop()
                    if len(lines) < folds.k and (self._past_deadline(trial) or
                                                 not self.multi and trial.should_prune()):
                        if trial.user_attrs.get("stopped_by"):
                            raise _Deadline
                        evidence = _paired_evidence(trial, melodies) if self.paired else _median_evidence(
                            trial, line["fold"], min(reported))
                        raise optuna.TrialPruned(f"pruned after fold {len(lines)} of {folds.k} at "
                                                 f"{pooled(lines):.4f} nats/note{evidence}")
        except _Deadline:
            # An unfinished cross-validation does not compare with finished ones: not a value.
            raise optuna.TrialPruned(f"stopped by the search's timeout after {len(lines)} of "
                                     f"{folds.k} folds") from None
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted by the user (KeyboardInterrupt)")
            raise
        except optuna.TrialPruned:
            raise
        except Exception as e:
            self._failed(trial, e, data)
            raise
        finally:
            trial.set_user_attr("epochs_trained", [f["epochs"] for f in lines])
        # The literature's three averages, each a reduction of the same per-note records.
        table = joined_notes([f["notes"] for f in lines])
        per_fold = [f["bits_per_note"] for f in lines]
        trial.set_user_attr("bits_per_note", float(table["information.content"].mean()))
        trial.set_user_attr("fold_mean_bits_per_note", sum(per_fold) / len(per_fold))
        trial.set_user_attr("melody_mean_bits_per_note",
                            float(per_melody(table)["mean.information.content"].mean()))
        # The size and speed of the configuration's model as it plays (an untrained one: the same
        # arithmetic), over transpositions where it is scored so.
        model = build_model(family, hparams, data.vocab_size, seed=self.base.seed).to(data.train.tokens.device)
        k = recipe.test_transpose
        return self._values(trial, pooled(lines), TranspositionAverage(model, k) if k else model)

    def _values(self, trial: optuna.Trial, value: float, model: torch.nn.Module) -> float | list[float]:
        """The trial's value, or in a multi-objective study its values (user attributes
        ``n_params`` and ``ms_per_note`` too): of ``model`` as it writes melodies."""
        if "n_params" not in trial.user_attrs:      # a cross-validated trial's (a single split's has it)
            trial.set_user_attr("n_params", count_parameters(model))
        if not self.multi:
            return value
        costs = measure_costs(model)
        for name, cost in costs.items():
            trial.set_user_attr(name, cost)
        return [value] + [float(costs[name]) for name in self.objectives[1:]]

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise KeyboardInterrupt     # as Ctrl-C does when the trial runs alone

    def _past_deadline(self, trial: optuna.Trial) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            trial.set_user_attr("stopped_by", "search timeout")
            return True
        return False

    @staticmethod
    def _failed(trial: optuna.Trial, e: Exception, data: Prepared) -> None:
        """Give back the memory ``trial`` held and record why it failed (a trial failed
        elsewhere as stale ends quietly: ``note_failure``)."""
        reason = f"{type(e).__name__}: {e}"
        if isinstance(e, torch.cuda.OutOfMemoryError):
            reason = f"out of memory on {data.train.tokens.device}: {e}"
        # The traceback's frames hold the model, its gradients and activations: let go of
        # them before giving the memory back.
        traceback.clear_frames(e.__traceback__)
        gc.collect()
        free_memory(data.train.tokens.device)
        note_failure(trial, reason, e)


def _report_melodies(trial: optuna.Trial, notes, seed: int) -> dict[int, float]:
    """Report each melody of a scored fold: its nats/note, its step the melody's fixed id (its
    place in the collection), in a shuffled order as the Wilcoxon pruner's documentation asks.
    The same records give the trial's value, so the evidence and the value cannot disagree."""
    nats = notes.table["information.content"].to_numpy() * math.log(2)     # bits → nats
    losses = {int(m): float(v) for m, v in pd.Series(nats).groupby(np.asarray(notes.melody)).mean().items()}
    order = np.random.default_rng(seed + trial.number).permutation(sorted(losses))
    for m in order:
        trial.report(losses[int(m)], int(m))
    return losses


def _paired_evidence(trial: optuna.Trial, losses: dict[int, float]) -> str:
    """On what the paired pruner stopped ``trial``: the melodies it shares with the best trial
    and the one-sided signed-rank p-value (user attribute ``pruned_on``), in words."""
    try:
        best = trial.study.best_trial.intermediate_values
    except ValueError:
        return ""
    common = sorted(set(losses) & set(best))
    diffs = [losses[m] - best[m] for m in common]
    if len(diffs) < 2:
        return ""
    from scipy import stats
    p = float(stats.wilcoxon(diffs, alternative="greater", zero_method="zsplit").pvalue)
    trial.set_user_attr("pruned_on", on := {"melodies": len(common), "p_value": p})
    return ", " + pruned_words(on)


def _median_evidence(trial: optuna.Trial, step: int, best: float) -> str:
    """On what the median pruner stopped ``trial`` at ``step``, as Optuna's MedianPruner judges:
    its best report so far (``best``) against the median of the finished trials' reports at that
    step (user attribute ``pruned_on``), in words; empty under another pruner."""
    if not isinstance(trial.study.pruner, optuna.pruners.MedianPruner):
        return ""
    others = [t.intermediate_values[step] for t in trial.study.get_trials(deepcopy=False, states=(
        optuna.trial.TrialState.COMPLETE,)) if step in t.intermediate_values]
    if not others:
        return ""
    on = {"step": step, "best": best, "median": float(np.nanmedian(others)), "trials": len(others)}
    trial.set_user_attr("pruned_on", on)
    return ", " + pruned_words(on)


def pruned_words(on: dict) -> str:
    """A pruned trial's evidence (its user attribute ``pruned_on``) in words."""
    if "p_value" in on:
        return f"worse than the best on {on['melodies']} paired melodies (Wilcoxon p = {on['p_value']:.3g})"
    n = on["trials"]
    return (f"its best so far {on['best']:.4f} against the median {on['median']:.4f} of {n} "
            f"finished trial{'s' * (n != 1)} at that step")


class _Deadline(Exception):
    """The search's timeout came while a cross-validated trial was still training its folds."""
