"""The cross-validation fold loop that crossval and a cross-validated search share.

A :class:`Recipe` is one configuration as crossval's protocol runs it: the model, its training,
the share of each fold's training melodies held out for early stopping, the test-time
transposition average and the ensemble size. :func:`scored_folds` trains and scores it on every
fold (side by side in worker processes on the CPU) and yields each fold's line as it finishes;
``python -m chromasonic_lib.crossval`` and a search trial with ``folds: K`` both call it, so a
one-trial cross-validated search and crossval give the same figure for the same seed.
"""
from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .config import TrainConfig
from .data import MelodySet, hold_out, kfold
from .errors import ConfigError
from .optuna_private import worker_processes
from .models import build_model
from .models.ensemble import Ensemble
from .pretraining import also_train_on, pretrained, start_from
from .surprise import fold_notes
from .training import pick_device, train_ensemble
from .transposition import TranspositionAverage

# The settings of a recipe that are neither the model's nor TrainConfig's: how a configuration
# is trained and scored on a fold. A search space may search them; a params file may give them.
PROTOCOL_SETTINGS = {"epochs": 30, "val_fraction": 0.1, "test_transpose": 0, "ensemble": 1}


@dataclass
class Recipe:
    """One configuration, trained and scored fold by fold as crossval does.

    ``training``: TrainConfig's fields (not ``epochs`` or ``seed``, which are the recipe's own).
    Member j of fold i starts from seed ``seed + i + j`` (or the pretrained weights) and trains
    with seed ``seed + j``.
    """

    model: str
    hparams: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    epochs: int = PROTOCOL_SETTINGS["epochs"]
    seed: int = 42
    val_fraction: float = PROTOCOL_SETTINGS["val_fraction"]
    test_transpose: int = PROTOCOL_SETTINGS["test_transpose"]
    ensemble: int = PROTOCOL_SETTINGS["ensemble"]
    device: str = "auto"
    # A mixture: these configurations, each trained and scored on every fold as it is (its own
    # transposition average and ensemble), and their probabilities averaged, note by note. The
    # recipe's own model fields are then unused.
    members: tuple[Recipe, ...] = ()

    def as_params(self) -> dict[str, Any]:
        """The flat parameter dict crossval's ``--params`` and train_best's ``best_params`` read."""
        return {"model": self.model, **self.hparams, **self.training,
                **{k: getattr(self, k) for k in PROTOCOL_SETTINGS}}

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, seed=self.seed, **self.training)


def train_fold(recipe: Recipe, pool: MelodySet, extra: list[int], state: dict | None, i: int,
               train_idx: list[int], on_epoch: Callable[[int, float], bool] | None = None):
    """Fold ``i``'s model (or ensemble), trained on ``train_idx`` less its held-out share (both
    in ``pool``) and on ``extra``, and each member's history. A mixture's model is the
    average of its members' (``Ensemble``), each trained as its own recipe says."""
    if recipe.members:
        trained = [train_fold(m, pool, extra, state, i, train_idx, on_epoch) for m in recipe.members]
        return Ensemble([model for model, _ in trained]), [h for _, hs in trained for h in hs]
    device = pick_device(recipe.device)
    fit, val = hold_out(pool.melodies, train_idx, recipe.val_fraction, recipe.seed + i)
    model, histories = train_ensemble(
        lambda j: start_from(build_model(recipe.model, recipe.hparams, pool.vocab_size,
                                         seed=recipe.seed + i + j), state),
        pool.tensor(fit + extra, device), pool.tensor(val, device) if val else None,
        recipe.train_config(), recipe.ensemble, on_epoch)
    if recipe.test_transpose:
        model = TranspositionAverage(model, recipe.test_transpose)
    return model, histories


def score_fold(recipe: Recipe, pool: MelodySet, extra: list[int], state: dict | None,
               distributions: bool, i: int, train_idx: list[int], test_idx: list[int],
               on_epoch: Callable[[int, float], bool] | None = None) -> dict:
    """Fold ``i`` trained and scored: its line of the report (bits and nats per note, notes), and
    under ``"notes"`` its test notes' per-note records (``surprise.FoldNotes``, with each note's
    distribution if ``distributions``), of which the line's figures are means."""
    model, histories = train_fold(recipe, pool, extra, state, i, train_idx, on_epoch)
    return fold_line(recipe, pool, distributions, i, test_idx, model, histories)


def fold_line(recipe: Recipe, pool: MelodySet, distributions: bool, i: int, test_idx: list[int],
              model: torch.nn.Module, histories: list) -> dict:
    """Fold ``i``'s trained ``model`` scored on its test melodies: the fold's line (see
    :func:`score_fold`)."""
    notes = fold_notes(model, pool, test_idx, i, pick_device(recipe.device), distributions)
    epochs = [h.epochs_trained for h in histories]      # one per ensemble member
    return {"fold": i, "bits_per_note": notes.bits_per_note, "nats_per_note": notes.bits_per_note * math.log(2),
            "n_notes": len(notes.table), "n_melodies": len(test_idx),
            "epochs": epochs[0] if len(epochs) == 1 else epochs, "notes": notes}


@dataclass
class FoldSet:
    """A collection cut into ``k`` folds by ``seed``, with what every fold's model also trains
    on (``also_train_on``) or starts from (``pretrain``), and how many folds train at once."""

    data: MelodySet
    k: int
    seed: int = 42
    jobs: int = 1
    device: str = "auto"
    val_fraction: float = PROTOCOL_SETTINGS["val_fraction"]    # a trial's, unless it searches its own
    pretrain: str = ""
    pretrain_epochs: int = 5
    also_train_on: str = ""
    limit: int = 0                      # of the other collections' files: the first N (a quick check)
    distributions: bool = False         # keep every note's whole predicted distribution
    # Melodies no fold holds: a search's test melodies, kept for train_best's test alone.
    exclude: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        left_out = set(self.exclude)
        keep = [i for i in range(len(self.data.melodies)) if i not in left_out]
        self.folds = [([keep[j] for j in train], [keep[j] for j in test]) for train, test in
                      kfold([self.data.melodies[i] for i in keep], self.k, self.seed)]
        self.pool, self.extra, self.also_trained = also_train_on(self.also_train_on, self.data, self.limit)
        self.jobs, self.threads = jobs_and_threads(self.jobs, self.k, self.device)

    def start(self, recipe: Recipe) -> tuple[dict | None, dict]:
        """The weights every fold's model of ``recipe`` starts from (None: its own initial
        weights), and what the pretraining did; pretrained once per configuration (cached)."""
        return pretrained(self.pretrain, self.pretrain_epochs, recipe.model,
                          (recipe.hparams, recipe.training), self.data, pick_device(self.device),
                          self.seed, self.limit)

    def lines(self, recipe: Recipe, state: dict | None,
              on_epoch: Callable[[int, float], bool] | None = None) -> Iterator[dict]:
        """Each fold's line (``score_fold``) as it finishes."""
        return scored_folds(recipe, self.folds, self.pool, self.extra, state, self.jobs,
                            self.threads, on_epoch, self.distributions)

    def study_params(self) -> dict[str, Any]:
        """The other collections a params file must name to train as these folds do."""
        return {**({"pretrain": self.pretrain, "pretrain_epochs": self.pretrain_epochs} if self.pretrain else {}),
                **({"also_train_on": self.also_train_on} if self.also_train_on else {})}


def pooled(results: list[dict], key: str = "nats_per_note") -> float:
    """The notes-weighted mean of the folds' ``key``: every note counts once."""
    return sum(r[key] * r["n_notes"] for r in results) / sum(r["n_notes"] for r in results)


def paired_difference(a: list[float], b: list[float]) -> dict[str, Any]:
    """The mean of the per-fold differences ``b - a`` with its 95 % t interval (k − 1 degrees of
    freedom). Folds share most of their training data, so the interval is somewhat too narrow
    (Nadeau & Bengio 2003): read one that barely excludes 0 with care."""
    diffs = np.array(b, dtype=float) - np.array(a, dtype=float)
    k = len(diffs)
    mean, sd = float(diffs.mean()), float(diffs.std(ddof=1))
    from scipy import stats
    half = float(stats.t.ppf(0.975, k - 1) * sd / np.sqrt(k))
    return {"differences": diffs.tolist(), "mean_difference": mean, "sd_difference": sd,
            "ci95": [mean - half, mean + half], "excludes_zero": bool(mean - half > 0 or mean + half < 0)}


def jobs_and_threads(jobs: int, folds: int, device: str) -> tuple[int, int]:
    """How many folds train at once, and each one's torch threads: ``jobs`` (0: as many as this
    process has threads, at most one per fold, on the CPU; 1 on a GPU), sharing those threads
    (torch's own count: the physical cores, or ``OMP_NUM_THREADS``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    budget = max(1, min(cores, torch.get_num_threads()))
    on_cpu = pick_device(device).type == "cpu"
    jobs = min(jobs or (budget if on_cpu else 1), folds)
    return jobs, max(1, budget // jobs)


_worker: tuple = ()     # in a worker process: the arguments every fold shares


def _start_worker(threads: int, *shared) -> None:
    global _worker
    torch.set_num_threads(threads)
    _worker = shared


def _worker_fold(i: int, train_idx: list[int], test_idx: list[int]) -> dict:
    return score_fold(*_worker, i, train_idx, test_idx)


def _worker_member(i: int, j: int, train_idx: list[int]) -> tuple:
    recipe, pool, extra, state, _ = _worker
    return train_fold(recipe.members[j], pool, extra, state, i, train_idx)


def scored_folds(recipe: Recipe, folds: list[tuple[list[int], list[int]]], pool: MelodySet,
                 extra: list[int], state: dict | None, jobs: int, threads: int,
                 on_epoch: Callable[[int, float], bool] | None = None,
                 distributions: bool = False) -> Iterator[dict]:
    """Every fold trained and scored (``jobs`` at once, each in a process of its own with
    ``threads`` torch threads); yields each fold's line as it finishes. Closing the generator
    early (a pruned trial, Ctrl-C) ends the folds still training. ``on_epoch`` is called after
    each epoch of folds trained in this process (``jobs`` 1), as ``train``'s callback."""
    shared = (recipe, pool, extra, state, distributions)
    todo = list(enumerate(folds))
    if jobs == 1:
        for i, (train_idx, test_idx) in todo:
            yield score_fold(*shared, i, train_idx, test_idx, on_epoch)
        return
    for r in (recipe, *recipe.members):     # each worker imports the class by its path
        if r.model.startswith("__main__:"):
            raise ConfigError(
                f"model {r.model!r} is defined in a notebook or script (__main__), which the fold "
                f"workers (separate processes) can't import: put the class in a file and give "
                f"model as 'path/to/file.py:{r.model.partition(':')[2]}', or train the folds in "
                f"this process (jobs 1)")
    # spawn: a forked copy of a process whose torch threads already ran can hang.
    workers = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_start_worker, initargs=(threads, *shared))
    # A mixture's members train one at a time a worker, each fold's scored here once all of its
    # members are in: with units that much smaller, no worker sits idle while the last fold's
    # two trainings run one after the other in the other.
    units = [(i, j) for i, _ in todo for j in range(len(recipe.members))] if recipe.members else \
        [(i, None) for i, _ in todo]
    trained: dict[int, dict[int, tuple]] = {}
    running: dict = {}
    try:
        while units or running:
            while units and len(running) < jobs:     # one unit a worker: none waits in a queue
                i, j = units.pop(0)
                train_idx, test_idx = folds[i]
                future = workers.submit(_worker_fold, i, train_idx, test_idx) if j is None else \
                    workers.submit(_worker_member, i, j, train_idx)
                running[future] = (i, j)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                i, j = running.pop(future)
                if j is None:
                    yield future.result()
                    continue
                trained.setdefault(i, {})[j] = future.result()
                if len(trained[i]) == len(recipe.members):
                    members = [m for _, m in sorted(trained.pop(i).items())]
                    yield fold_line(recipe, pool, distributions, i, folds[i][1],
                                    Ensemble([model for model, _ in members]),
                                    [h for _, hs in members for h in hs])
    except BaseException:   # a fold failed, pruned, Ctrl-C, a notebook's stop: no fold goes on
        _stop(workers)
        raise
    workers.shutdown()


def in_order(lines: Iterator[dict]) -> Iterator[dict]:
    """The folds' lines as they finish, put back in fold order: fold k's line comes once folds
    0..k are all in. A pruner compares trials fold by fold, so a trial reports its running
    mean after fold k only when it covers the same folds as every other trial's did."""
    done: dict[int, dict] = {}
    next_fold = 0
    for line in lines:
        done[line["fold"]] = line
        while next_fold in done:
            yield done.pop(next_fold)
            next_fold += 1


def _stop(workers: ProcessPoolExecutor) -> None:
    """End ``workers`` now, folds they are still training included."""
    if hasattr(workers, "terminate_workers"):        # Python 3.14
        workers.terminate_workers()
        return
    for process in worker_processes(workers):
        process.terminate()
    workers.shutdown(wait=False, cancel_futures=True)


__all__ = ["Recipe", "FoldSet", "PROTOCOL_SETTINGS", "score_fold", "fold_line", "scored_folds", "train_fold", "pooled",
           "jobs_and_threads", "in_order", "kfold", "paired_difference"]
