"""What ``search.ipynb`` and ``run_search`` take: :class:`SearchConfig`, checked, with its space."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from ..config.checks import (PRUNERS, SAMPLERS, check_bool, check_choice, check_devices, check_model,
                             check_existing_file, check_float, check_int, check_objectives,
                             check_other_collection, check_pretrain_model, check_str)
from ..config.params import check_param_file
from ..config.training import StudyAndData, TrainConfig
from ..errors import ConfigError
from ..paths import resolve
from .space import load_space


log = logging.getLogger(__name__)


@dataclass
class SearchConfig(StudyAndData):
    """Everything ``search.ipynb`` and ``run_search`` take (the notebook's parameters)."""

    model: str = "lstm"
    search_space: str = "params/spaces/default.yaml"
    n_trials: int = 20
    timeout: float = 0
    epochs: int = 15
    sampler: str = "tpe"
    # auto: wilcoxon for a cross-validated study (folds ≥ 2), median for a single split; the
    # measured better one for each (docs/search.md, "Which pruner").
    pruner: str = "auto"
    # What the study minimizes: [bits_per_note] (one objective), or with n_params and/or
    # ms_per_note a Pareto front (a multi-objective study; its trials are not pruned).
    objectives: list = dataclasses.field(default_factory=lambda: ["bits_per_note"])
    wilcoxon_p: float = 0.1           # pruner wilcoxon: prune when a trial is worse than the best with this p-value
    plot: bool = True
    live: bool = True                 # in a notebook: one output area redrawn after each trial
    heartbeat_interval: int = 10
    grace_period: int = 30
    storage_patience: float = 600     # seconds a storage outage is waited out before the worker stops
    threads: int = 0
    trials_per_device: int = 1        # trials that run at once on each device (threads, a CUDA stream each)
    devices: str = "auto"             # where trials run: "cuda:0,cuda:1"; auto: device's choice, every visible GPU for device auto
    total_trials: int = 0             # stop when the study holds this many finished trials; 0 = no cap
    artifact_store: str = ""          # where trials' checkpoints go: a folder or s3://bucket/prefix
    keep_checkpoints: int = 10        # the best trials whose checkpoints stay in the artifact store
    # Cross-validated trials: each trial trains and scores its configuration on every one of
    # this many folds of the dataset, as crossval does (0: the single split val_fraction / test_fraction).
    folds: int = 0
    fold_jobs: int = 0                # folds of a trial trained at once on the CPU; 0: one per core
    pretrain: str = ""                # folds only: every model first trains on this other collection
    pretrain_epochs: int = 5
    also_train_on: str = ""           # folds only: every fold also trains on this other collection
    # A training step of one's own for a custom loss, "package.module:function" or
    # "file.py:function": fn(model, batch, optimizer, params) computes the loss and calls backward.
    train_step: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.model = check_model("model", self.model, ("any",))
        self.n_trials = check_int("n_trials", self.n_trials)
        self.timeout = check_float("timeout", self.timeout, 0)
        self.epochs = check_int("epochs", self.epochs)
        self.sampler = check_choice("sampler", self.sampler, SAMPLERS)
        self.pruner = check_choice("pruner", self.pruner, PRUNERS)
        self.objectives = check_objectives("objectives", self.objectives)
        if len(self.objectives) > 1 and self.sampler == "cmaes":
            raise ConfigError("sampler cmaes optimizes one objective; with objectives "
                              f"{self.objectives} use tpe, random or gp")
        if len(self.objectives) > 1 and self.pruner != "none":
            # Optuna prunes single-objective studies only; a trial behind on the loss may still
            # be on the front (smaller or faster).
            log.info("objectives %s: a multi-objective study trains every trial to the end (pruner "
                     "%s is not used)", self.objectives, self.pruner)
            self.pruner = "none"
        self.wilcoxon_p = check_float("wilcoxon_p", self.wilcoxon_p, 0, 1, low_open=True)
        self.plot = check_bool("plot", self.plot)
        self.live = check_bool("live", self.live)
        self.heartbeat_interval = check_int("heartbeat_interval", self.heartbeat_interval)
        self.grace_period = check_int("grace_period", self.grace_period)
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(f"grace_period must be longer than heartbeat_interval "
                              f"({self.heartbeat_interval} s), got {self.grace_period}")
        self.storage_patience = check_float("storage_patience", self.storage_patience, 0)
        self.threads = check_int("threads", self.threads, 0)
        self.trials_per_device = check_int("trials_per_device", self.trials_per_device)
        self.devices = check_devices("devices", self.devices)
        listed = [d.strip() for d in self.devices.split(",")]
        if "auto" not in (self.device, self.devices) and self.device not in listed:
            raise ConfigError(f"device {self.device!r} is not among devices {self.devices!r}: "
                              f"give devices alone (device auto), or a device it lists")
        self.total_trials = check_int("total_trials", self.total_trials, 0)
        self.artifact_store = check_str("artifact_store", self.artifact_store, allow_empty=True)
        self.keep_checkpoints = check_int("keep_checkpoints", self.keep_checkpoints)
        self.folds = check_int("folds", self.folds, 0)
        if self.folds == 1:
            raise ConfigError("folds must be 0 (a single validation split) or at least 2, got 1")
        self.fold_jobs = check_int("fold_jobs", self.fold_jobs, 0)
        if self.pruner == "auto":
            self.pruner = "wilcoxon" if self.folds else "median"
        if self.pruner == "wilcoxon" and not self.folds:
            raise ConfigError("pruner wilcoxon compares a trial with the best melody by melody, so it "
                              "needs cross-validated trials (folds ≥ 2); got folds 0. Allowed: "
                              "median, hyperband or none for a single split")
        self.pretrain_epochs = check_int("pretrain_epochs", self.pretrain_epochs)
        self.train_step = TrainConfig(train_step=check_str("train_step", self.train_step, allow_empty=True)).train_step
        for name in ("pretrain", "also_train_on"):
            value = check_other_collection(name, check_str(name, getattr(self, name), allow_empty=True),
                                           self.dataset, "searched")
            if value and not self.folds:
                raise ConfigError(f"{name} {value!r} needs a cross-validated search (folds ≥ 2): "
                                  "the single split's losses are not comparable with another "
                                  "collection's melodies in training")
            setattr(self, name, value)
        source = self.search_space if isinstance(self.search_space, dict) else \
            check_existing_file("search_space", self.search_space)
        self.space = load_space(source, self.model, self.encoding)
        if not self.folds:
            self.space.check_single_split()
        if self.pretrain and "markov" in self.space.families:
            check_pretrain_model(self.pretrain, "markov")
        # The configurations a new study runs first, checked now: each must be one the space draws.
        study = {"epochs": self.epochs, "val_fraction": self.val_fraction}
        self.starts = [self.space.start_params(check_param_file("search_space: start_from", path), path, study)
                       for path in self.space.start_from]

    @property
    def output_path(self) -> Path:
        return resolve(self.output_dir or f"runs/{self.study_name}")


