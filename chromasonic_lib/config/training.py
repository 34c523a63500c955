"""How one model is trained (:class:`TrainConfig`), on which melodies (:class:`DataConfig`), and
the study-and-data parameters the search and train_best notebooks share."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .checks import (ENCODINGS, OPTIMIZERS, SCHEDULES, check_choice, check_dataset, check_device,
                     check_float, check_int, check_other_collection, check_storage, check_str,
                     check_study_name)
from .namespace import FromNamespace

# ---------------------------------------------------------------- configs
@dataclass
class TrainConfig:
    """How one model is trained: optimizer, schedule, augmentation, stopping.

    The device is not here: training runs where its data tensors are (see ``prepare``).
    These defaults are also where a search starts (each family's defaults trial) and what
    a trial uses for any setting its space leaves out: the original task's tuning used them.
    """

    optimizer: str = "adamw"          # adamw, adam or sgd
    learning_rate: float = 1e-2
    batch_size: int = 32
    epochs: int = 15                  # maximum; early stopping may end sooner
    weight_decay: float = 1e-4
    schedule: str = "cosine"          # learning-rate schedule over the epochs: cosine or constant
    grad_clip: float = 1.0            # max gradient norm; 0 = no clipping
    patience: int = 5                 # epochs without improvement before stopping; 0 = never
    transpose: int = 6                # random transposition of training melodies, ± semitones; 0 = off
    min_epoch_tokens: int = 32768     # an epoch repeats a small training set up to this many notes
    # Evaluate and keep an exponential moving average of the weights (this decay per step)
    # instead of the weights themselves; 0 = off.
    weight_average: float = 0.0
    seed: int = 42
    # A training step of one's own, "package.module:function" or "file.py:function": called as
    # fn(model, batch, optimizer, params), it computes the loss and calls backward (see train).
    train_step: str = ""

    def __post_init__(self) -> None:
        self.optimizer = check_choice("optimizer", self.optimizer, OPTIMIZERS)
        self.learning_rate = check_float("learning_rate", self.learning_rate, 0, 10, low_open=True)
        self.batch_size = check_int("batch_size", self.batch_size)
        self.epochs = check_int("epochs", self.epochs)
        self.weight_decay = check_float("weight_decay", self.weight_decay, 0, 1)
        self.schedule = check_choice("schedule", self.schedule, SCHEDULES)
        self.grad_clip = check_float("grad_clip", self.grad_clip, 0)
        self.patience = check_int("patience", self.patience, 0)
        self.transpose = check_int("transpose", self.transpose, 0)
        if self.transpose > 24:
            raise ConfigError(f"transpose must be between 0 and 24 semitones, got {self.transpose}")
        self.min_epoch_tokens = check_int("min_epoch_tokens", self.min_epoch_tokens, 0)
        self.weight_average = check_float("weight_average", self.weight_average, 0, 0.9999)
        self.seed = check_int("seed", self.seed, 0)
        if self.train_step:
            from ..imports import function_name
            self.train_step = function_name(self.train_step)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# Training settings a search space may tune (everything else in TrainConfig is fixed per run).
SEARCHABLE_TRAINING = ("optimizer", "learning_rate", "batch_size", "weight_decay", "grad_clip",
                       "transpose", "weight_average")


@dataclass
class DataConfig:
    """Which melodies, how they are encoded and split."""

    dataset: str = "chorales"
    encoding: str = "pitch"
    n_sequences: int = 100            # synthetic only
    sequence_length: int = 64         # synthetic only
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42
    # Another collection whose tunes this one's copies are left out of first (a tuning search
    # that must never see the tunes it will be evaluated on); "": none.
    exclude_copies_of: str = ""

    def __post_init__(self) -> None:
        self.dataset = check_dataset("dataset", self.dataset)
        self.exclude_copies_of = check_other_collection(
            "exclude_copies_of", check_str("exclude_copies_of", self.exclude_copies_of, allow_empty=True),
            self.dataset, "searched")
        self.encoding = check_choice("encoding", self.encoding, ENCODINGS)
        self.n_sequences = check_int("n_sequences", self.n_sequences)
        self.sequence_length = check_int("sequence_length", self.sequence_length, 2)
        self.val_fraction = check_float("val_fraction", self.val_fraction, 0, 0.9, low_open=True)
        self.test_fraction = check_float("test_fraction", self.test_fraction, 0, 0.9)
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"val_fraction + test_fraction must be below 1, got "
                              f"{self.val_fraction} + {self.test_fraction}")
        if self.dataset == "synthetic" and self.n_sequences < 3:
            raise ConfigError(f"n_sequences must be at least 3 to split, got {self.n_sequences}")
        self.seed = check_int("seed", self.seed, 0)


DATA_FIELDS = tuple(f.name for f in dataclasses.fields(DataConfig))
# Data settings that mean something for the synthetic source only.
SYNTHETIC_ONLY = ("n_sequences", "sequence_length")


@dataclass
class StudyAndData(FromNamespace):
    """The parameters the search and train_best notebooks share: which study, which data."""

    study_name: str = "melody-search"
    storage: str = field(default="sqlite:///runs/studies.db", repr=False)  # may hold a password
    output_dir: str = ""
    dataset: str = "chorales"
    encoding: str = "pitch"
    n_sequences: int = 100
    sequence_length: int = 64
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42
    device: str = "auto"
    exclude_copies_of: str = ""

    def __post_init__(self) -> None:
        self._check_study()
        self.seed = check_int("seed", self.seed, 0)
        self.data = DataConfig(**{name: getattr(self, name) for name in DATA_FIELDS})

    def _check_study(self) -> None:
        self.study_name = check_study_name("study_name", self.study_name)
        self.storage = check_storage("storage", self.storage)
        self.output_dir = check_str("output_dir", self.output_dir, allow_empty=True)
        self.device = check_device("device", self.device)

