"""Typed, validated configs: the one place where every user input is checked.

Each notebook's ``parameters`` cell, the command-line tools and the Python API build one
of these dataclasses; a bad value raises :class:`ConfigError` naming the parameter, the
value given and what is allowed, before any data is loaded or any training starts.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

from .data.corpora import CORPUS_FOLDERS
from .data.encodings import ENCODINGS as ENCODING_TYPES
from .errors import ConfigError
from .models import MODEL_DEFAULTS, MODELS
from .paths import has_password, mask_url, resolve

log = logging.getLogger(__name__)

# The names a user may give, each read from the registry that defines them.
ENCODINGS = tuple(ENCODING_TYPES)
CORPORA = tuple(CORPUS_FOLDERS)
SAMPLERS = ("tpe", "random", "gp", "cmaes")
PRUNERS = ("median", "hyperband", "none")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "constant")
STORAGE_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+", "mysql://", "mysql+", "journal:")
STORAGE_ENV = "CHROMASONIC_STORAGE"     # the storage URL when the storage parameter is env or empty


# ---------------------------------------------------------------- value checks
def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """An integer ≥ ``minimum``; a float with an integral value is accepted, a string is not."""
    ok = not isinstance(value, bool) and (
        isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    )
    if not ok or value < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(
            minimum, f"an integer ≥ {minimum}")
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_test_transpose(value: Any) -> int:
    """How far (semitones) a melody is moved both ways when scored as an average: 0 to 12."""
    value = check_int("test_transpose", value, 0)
    if value > 12:
        raise ConfigError(f"test_transpose must be an integer from 0 to 12 semitones, got {value}")
    return value


def check_float(name: str, value: Any, low: float = 0.0, high: float = math.inf,
                low_open: bool = False) -> float:
    """A finite number in [low, high] (or (low, high] with ``low_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        lo = "(" if low_open else "["
        hi = "∞)" if high == math.inf else f"{high:g}]"
        raise ConfigError(f"{name} must be a number in {lo}{low:g}, {hi}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_str(name: str, value: Any, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def check_study_name(name: str, value: Any) -> str:
    value = check_str(name, value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", value):
        raise ConfigError(f"{name} may hold letters, digits, '-', '_' and '.', got {value!r}")
    return value


DEVICE_PATTERN = r"cpu|mps|cuda(:\d+)?"


def check_device(name: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(rf"auto|{DEVICE_PATTERN}", value):
        raise ConfigError(f"{name} must be one of auto, cpu, cuda, cuda:N, mps; got {value!r}")
    return value


def check_devices(name: str, value: Any) -> str:
    """``auto`` or a comma-separated list of devices, each named once (``cuda:0,cuda:1``)."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else []
    if value != "auto" and (not items or not all(re.fullmatch(DEVICE_PATTERN, v) for v in items)):
        raise ConfigError(f"{name} must be auto or a comma-separated list of cpu, cuda, cuda:N, "
                          f"mps (e.g. cuda:0,cuda:1); got {value!r}")
    twice = sorted({v for v in items if items.count(v) > 1})
    if twice:
        raise ConfigError(f"{name} names {', '.join(twice)} twice in {value!r}: list each device "
                          f"once; trials_per_device says how many trials share one")
    return value


def check_dataset(name: str, value: Any) -> str:
    """A corpus name, ``essen/<file>``, ``synthetic`` or an existing folder of score files."""
    check_str(name, value)
    if value == "synthetic" or value in CORPORA:
        return value
    if value.startswith("essen/"):
        from .data.corpora import essen_files
        files = essen_files()
        if value[len("essen/"):] in files:
            return value
        raise ConfigError(f"{name}: no Essen file {value[6:]!r}; the files are "
                          f"{', '.join(sorted(files))}")
    path = resolve(value)
    if path.is_dir():
        from .data.files import folder_files
        if not folder_files(path):
            raise ConfigError(f"{name}: the folder {value!r} holds no score files "
                              f"(.mid, .midi, .abc, .xml, .mxl, .musicxml)")
        return value
    if path.exists():
        raise ConfigError(f"{name} must be a corpus name or a folder, got the file {value!r}")
    raise ConfigError(f"{name} must be synthetic, one of {', '.join(CORPORA)}, essen/<file> "
                      f"or an existing folder of score files; got {value!r} (not found)")


def check_storage(name: str, value: Any) -> str:
    """A storage URL; empty or ``env`` means the ``CHROMASONIC_STORAGE`` environment variable.

    The variable keeps a password out of the notebook: a parameter ends up in the executed
    copy (papermill's injected-parameters cell), the environment does not.
    """
    check_str(name, value, allow_empty=True)
    given = value.strip()
    if given in ("", "env"):
        value = os.environ.get(STORAGE_ENV, "").strip()
        if not value:
            raise ConfigError(f"{name} is {given!r}, which means the {STORAGE_ENV} environment "
                              f"variable, and it is not set: set {STORAGE_ENV} "
                              f"(e.g. postgresql://user:pw@host/db) or pass {name}")
    elif has_password(value):
        _warn_password_parameter(name, value)
    if value in ("memory", ":memory:") or value.startswith(STORAGE_SCHEMES):
        return value
    origin = f" (from {STORAGE_ENV})" if given in ("", "env") else ""
    raise ConfigError(f"{name} must be a URL starting with sqlite:///, postgresql://, mysql:// "
                      f"or journal:<file>, 'memory', or env (the {STORAGE_ENV} variable); "
                      f"got {mask_url(value)!r}{origin}")


_warned: set[str] = set()   # masked URLs already warned about: a batch builds one config per worker


def _warn_password_parameter(name: str, url: str) -> None:
    """Say once per URL that a password given as a parameter is now in the executed notebook."""
    masked = mask_url(url)
    if masked in _warned:
        return
    _warned.add(masked)
    log.warning("%s %s holds a password: a notebook run with it as a parameter keeps it in plain "
                "text in papermill's injected-parameters cell and notebook metadata (the HTML report shows neither). "
                "To keep it out, drop it from the URL "
                "and use PGPASSWORD or ~/.pgpass, or export %s=<url> and pass %s=env.",
                name, masked, STORAGE_ENV, name)


def check_context(name: str, value: Any, model: str, encoding: str) -> list[str]:
    """The context features a model is to read: known names the encoding gives, a neural model."""
    from .data.context import context_names
    names = context_names(value, name)
    if names and model == "markov":
        raise ConfigError(f"{name}: markov counts pitches only and reads no context, got {value!r}; "
                          f"rnn, lstm, gru and transformer read it")
    available = ENCODING_TYPES[encoding].context_features
    missing = [n for n in names if n not in available]
    if missing:
        raise ConfigError(f"{name}: the {encoding} encoding gives no {missing[0]!r} context, got "
                          f"{value!r}; it gives {', '.join(available)}")
    return list(names)


def check_existing_file(name: str, value: Any) -> Path:
    check_str(name, value)
    path = resolve(value)
    if not path.is_file():
        raise ConfigError(f"{name}: file not found: {value!r} (looked at {path})")
    if path.stat().st_size == 0:
        raise ConfigError(f"{name}: file is empty: {value!r}")
    return path


def check_writable_dir(name: str, path: Path) -> Path:
    """Create the folder if needed and prove it can be written, before any training."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{name}: cannot write to {str(path)!r}: {e.strerror or e}") from None
    return path


# ---------------------------------------------------------------- configs
@dataclass
class TrainConfig:
    """How one model is trained: optimizer, schedule, augmentation, stopping.

    The device is not here: training runs where its data tensors are (see ``prepare``).
    These defaults are also where a search starts (each family's defaults trial) and what
    a trial uses for any setting its space leaves out: the seed task's tuning used them.
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

    def __post_init__(self) -> None:
        self.dataset = check_dataset("dataset", self.dataset)
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


class _FromNamespace:
    """``Config.from_namespace(globals())``: a notebook hands its parameters over unrenamed."""

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any], **overrides: Any):
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: overrides.get(n, namespace[n]) for n in names
                      if n in namespace or n in overrides})


@dataclass
class _StudyAndData(_FromNamespace):
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

    def __post_init__(self) -> None:
        self._check_study()
        self.seed = check_int("seed", self.seed, 0)
        self.data = DataConfig(**{name: getattr(self, name) for name in DATA_FIELDS})

    def _check_study(self) -> None:
        self.study_name = check_study_name("study_name", self.study_name)
        self.storage = check_storage("storage", self.storage)
        self.output_dir = check_str("output_dir", self.output_dir, allow_empty=True)
        self.device = check_device("device", self.device)


@dataclass
class SearchConfig(_StudyAndData):
    """Everything ``search.ipynb`` and ``run_search`` take (the notebook's parameters)."""

    model: str = "lstm"
    search_space: str = "params/spaces/default.yaml"
    n_trials: int = 20
    timeout: float = 0
    epochs: int = 15
    sampler: str = "tpe"
    pruner: str = "median"
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

    def __post_init__(self) -> None:
        super().__post_init__()
        self.model = check_choice("model", self.model, MODELS + ("any",))
        self.n_trials = check_int("n_trials", self.n_trials)
        self.timeout = check_float("timeout", self.timeout, 0)
        self.epochs = check_int("epochs", self.epochs)
        self.sampler = check_choice("sampler", self.sampler, SAMPLERS)
        self.pruner = check_choice("pruner", self.pruner, PRUNERS)
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
        self.pretrain_epochs = check_int("pretrain_epochs", self.pretrain_epochs)
        for name in ("pretrain", "also_train_on"):
            value = check_other_collection(name, check_str(name, getattr(self, name), allow_empty=True),
                                           self.dataset, "searched")
            if value and not self.folds:
                raise ConfigError(f"{name} {value!r} needs a cross-validated search (folds ≥ 2): "
                                  "the single split's losses are not comparable with another "
                                  "collection's melodies in training")
            setattr(self, name, value)
        # Imported here: the space module needs the model registry, which needs torch.
        from .search.space import load_space
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


@dataclass
class TrainBestConfig(_StudyAndData):
    """Everything ``train_best.ipynb`` takes.

    The data parameters and ``epochs`` default to the study's: what the search measured its
    trials on (see :meth:`resolve_data`). Each such field's own default below stands for "the
    study's"; with ``best_params`` and no study it means ``DataConfig``'s default (and
    ``FILE_EPOCHS``).
    """

    dataset: str = ""
    encoding: str = ""
    n_sequences: int = 0
    sequence_length: int = 0
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    seed: int = -1                    # -1, not 0: 0 is a real seed
    best_params: str = ""
    epochs: int = 0
    n_samples: int = 3
    sample_length: int = 64
    temperature: float = 1.0
    top_k: int = 0
    primer: str = ""
    ensemble: int = 1                 # models (seeds seed, seed+1, …) whose probabilities are averaged
    # Score and sample as the average over the melody moved ±this; -1: the best_params file's (or 0).
    test_transpose: int = -1
    # Another collection the model first trains on, and one it also trains on, less every copy of
    # a tune of ``dataset`` (as crossval's params files say); "": the best_params file's (or none);
    # "none": none, whatever the file says.
    pretrain: str = ""
    pretrain_epochs: int = 0          # 0: the best_params file's (or 5)
    also_train_on: str = ""

    FILE_EPOCHS: ClassVar[int] = 30   # epochs for a best_params file that gives none
    FROM_STUDY: ClassVar[tuple[str, ...]] = DATA_FIELDS + ("epochs",)
    # The settings of a crossval params file (params/crossval*.yaml), beside the model's and
    # training's parameters, that train_best takes too, each with its value when neither the
    # file nor a parameter gives it.
    FROM_FILE: ClassVar[dict[str, Any]] = {"test_transpose": 0, "pretrain": "", "pretrain_epochs": 5,
                                           "also_train_on": "", "ensemble": 1}

    def __post_init__(self) -> None:
        self._check_study()
        if self.best_params:
            check_existing_file("best_params", self.best_params)
        given = self.given()
        # Each value given is checked now, before the study is opened; DataConfig's defaults
        # stand in for the rest until resolve_data() knows the study's.
        DataConfig(**{k: v for k, v in given.items() if k in DATA_FIELDS})
        if "epochs" in given:
            self.epochs = check_int("epochs", self.epochs)
        self.n_samples = check_int("n_samples", self.n_samples, 0)
        self.sample_length = check_int("sample_length", self.sample_length)
        self.temperature = check_float("temperature", self.temperature, 0, 10, low_open=True)
        self.top_k = check_int("top_k", self.top_k, 0)
        self.ensemble = check_int("ensemble", self.ensemble)
        if self.test_transpose != -1:
            self.test_transpose = check_test_transpose(self.test_transpose)
        for name in ("pretrain", "also_train_on"):
            if check_str(name, getattr(self, name), allow_empty=True) not in ("", "none"):
                check_dataset(name, getattr(self, name))
        self.pretrain_epochs = check_int("pretrain_epochs", self.pretrain_epochs, 0)
        self.primer_notes = parse_primer("primer", self.primer)

    def extras(self, settings: Mapping[str, Any], dataset: str, model: str) -> dict[str, Any]:
        """test_transpose, pretrain, pretrain_epochs, also_train_on, ensemble (and the file's
        val_fraction): each given here, else the
        best_params file's (``settings``), else none; checked against the ``dataset`` trained on
        and the ``model`` family."""
        unset = {f.name: f.default for f in dataclasses.fields(self) if f.name in self.FROM_FILE}
        out = {name: settings.get(name, default) if getattr(self, name) == unset[name] else getattr(self, name)
               for name, default in self.FROM_FILE.items()}
        out["test_transpose"] = check_test_transpose(out["test_transpose"])
        out["ensemble"] = check_int("ensemble", out["ensemble"])
        # A crossval file's share of each fold held out for early stopping: train_best holds out
        # its own split's validation melodies instead, except that 0 (train for exactly the
        # file's epochs, keep the last weights) is kept. None: the file says nothing.
        out["val_fraction"] = None if settings.get("val_fraction") is None else \
            check_float("best_params: val_fraction", settings["val_fraction"], 0, 0.5)
        out["pretrain_epochs"] = check_int("pretrain_epochs", out["pretrain_epochs"])
        for name in ("pretrain", "also_train_on"):
            out[name] = check_other_collection(name, out[name], dataset,
                                               "trained and tested on (the dataset parameter)")
        check_pretrain_model(out["pretrain"], model)
        if self.pretrain_epochs and not out["pretrain"]:
            log.warning("pretrain_epochs %d is ignored: nothing is pretrained (no pretrain)", self.pretrain_epochs)
        return out

    def given(self) -> dict[str, Any]:
        """The data parameters and epochs given explicitly (not left to the study)."""
        unset = {f.name: f.default for f in dataclasses.fields(self) if f.name in self.FROM_STUDY}
        return {name: getattr(self, name) for name in self.FROM_STUDY
                if getattr(self, name) != unset[name]}

    def resolve_data(self, settings: Mapping[str, Any] | None,
                     study_name: str | None = None) -> tuple[DataConfig, int]:
        """The data and the epochs to train: each value given, else the study's, else the default.

        ``settings`` are the study's stored settings (``None``: no study, a ``best_params``
        file). A value given that differs from the study's is logged with what it changes; a
        setting the study does not record is logged with the default used instead.
        """
        from .search.settings import SYNTHETIC_ONLY
        given, study = self.given(), dict(settings or {})
        # The study's melody counts apply only to the synthetic source it searched.
        counts_apply = given.get("dataset", study.get("dataset")) == study.get("dataset") == "synthetic"
        values, missing = {}, []
        for name in self.FROM_STUDY:
            applies = name not in SYNTHETIC_ONLY or counts_apply
            theirs = study.get(name) if applies else None
            if name in given:
                values[name] = given[name]
                if theirs is not None and theirs != given[name]:
                    log.warning("%s %r differs from the study's %r: %s", name, given[name], theirs,
                                _what_it_changes(name, given[name], theirs))
            elif theirs is not None:
                values[name] = theirs
            elif settings is not None and applies:
                missing.append(name)
        epochs = values.pop("epochs", self.FILE_EPOCHS)
        data = DataConfig(**values)
        if missing:
            log.warning("study %r does not record its %s: using %s; give them explicitly if the "
                        "search used others", study_name, ", ".join(missing),
                        ", ".join(f"{n} {epochs if n == 'epochs' else getattr(data, n)!r}"
                                  for n in missing))
        if data.test_fraction == 0:
            raise ConfigError(f"test_fraction: study {study_name!r} was searched with test_fraction 0 "
                              f"(no test split) and train_best evaluates on the test split; give "
                              f"test_fraction (e.g. 0.1): its test melodies will include melodies "
                              f"the search trained on")
        return data, check_int("epochs", epochs)

    @property
    def output_path(self) -> Path:
        # A best_params file's model goes beside the file's name, not over the study's; a
        # search's own best_hyperparameters.json names its study by its folder (runs/<study>/).
        name = self.study_name
        if self.best_params:
            file = Path(self.best_params)
            name = file.parent.name if file.stem == "best_hyperparameters" and file.parent.name else file.stem
        return resolve(self.output_dir or f"runs/{name}/best")


def _what_it_changes(name: str, ours: Any, theirs: Any) -> str:
    """Why a train_best value that differs from the study's matters, in the warning's words."""
    if name in ("seed", "test_fraction"):
        return "the test split may overlap the search's training melodies"
    if name == "val_fraction":
        return "it trains and stops early on other melodies than the search's trials did"
    if name == "epochs":
        return f"it trains {'longer' if ours > theirs else 'shorter'} than the search's trials did"
    return "the test scores won't compare with the search's validation losses"


@dataclass
class AnalysisConfig(_FromNamespace):
    """Everything ``analysis.ipynb`` takes."""

    study_name: str = "melody-search"
    storage: str = field(default="sqlite:///runs/studies.db", repr=False)  # may hold a password
    compare: list = field(default_factory=list)
    watch: bool = False               # in JupyterLab: refresh the history while workers add trials

    def __post_init__(self) -> None:
        self.study_name = check_study_name("study_name", self.study_name)
        self.storage = check_storage("storage", self.storage)
        self.watch = check_bool("watch", self.watch)
        if isinstance(self.compare, str):
            self.compare = [s for s in re.split(r"[,\s]+", self.compare) if s]
        if not isinstance(self.compare, (list, tuple)):
            raise ConfigError(f"compare must be a list of study names, got {self.compare!r}")
        self.compare = [check_study_name("compare", s) for s in self.compare]


_NOTE_NAME = re.compile(r"([A-Ga-g])([#b]?)(-?\d)$")
_STEPS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}


def parse_primer(name: str, value: Any) -> list[int]:
    """``"60 62 64"`` or ``"C4 D4 E4"`` → MIDI numbers within the piano's range (21–108)."""
    if isinstance(value, (list, tuple)):
        parts = [str(v) for v in value]
    else:
        parts = check_str(name, value, allow_empty=True).replace(",", " ").split()
    notes = []
    for part in parts:
        m = _NOTE_NAME.match(part)
        if part.isdigit():
            midi = int(part)
        elif m:
            midi = 12 * (int(m.group(3)) + 1) + _STEPS[m.group(1).lower()] + \
                {"#": 1, "b": -1, "": 0}[m.group(2)]
        else:
            raise ConfigError(f"{name} must be MIDI numbers or note names like C4 D#4 Bb3, "
                              f"got {part!r} in {value!r}")
        if not 21 <= midi <= 108:
            raise ConfigError(f"{name}: {part!r} is MIDI {midi}, outside the piano (21–108)")
        notes.append(midi)
    return notes


def check_other_collection(name: str, value: str, dataset: str, role: str) -> str:
    """``pretrain`` or ``also_train_on``: empty or ``none`` (none: "") or a collection other
    than ``dataset``, the one ``role`` (cross-validated, trained and tested on)."""
    if value == "none":
        return ""
    if value and check_dataset(name, value) == dataset:
        raise ConfigError(f"{name} must be another collection than the one {role}, got {value!r} for both")
    return value


def check_settings_keys(name: str, path: str, settings: Mapping[str, Any], model: str, tool: str,
                        own: Iterable[str] = ()) -> None:
    """Every key of the params file ``path`` is one of the ``model``'s or its training's
    parameters, or one of ``own`` (``tool``'s own settings the file may give)."""
    takes = {*MODEL_DEFAULTS[model], *(f.name for f in dataclasses.fields(TrainConfig)),
             "model", "epochs", "context", *own} - {"seed"}
    unknown = sorted(set(settings) - takes)
    if unknown:
        raise ConfigError(
            f"{name}: {path} has settings {tool} does not take: {', '.join(unknown)}. It takes a "
            "model's parameters and their training's (params/crossval.yaml, a search's "
            "best_hyperparameters.json); a search's own settings (dataset, study_name, n_trials, "
            f"seed, ...) are for the search notebook, and {tool}'s own are its "
            f"{'command-line options' if tool == 'crossval' else 'parameters'}")


def check_pretrain_model(pretrain: str, model: str) -> None:
    if pretrain and model == "markov":
        raise ConfigError("pretrain needs a neural model: the markov model counts its training "
                          "melodies afresh, so pretrained counts would be lost")


def check_param_file(name: str, value: Any) -> dict[str, Any]:
    """A YAML/JSON file holding one flat mapping (safe loader: nothing is unpickled)."""
    import json

    import yaml
    path = check_existing_file(name, value)
    try:
        # JSON as JSON: YAML 1.1 reads a number such as 1e-05 (json.dumps writes small learning
        # rates so) as a string.
        data = json.loads(path.read_text()) if path.suffix.lower() == ".json" else yaml.safe_load(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ConfigError(f"{name}: {value} is not valid YAML/JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: {value} must hold a mapping of parameter names to values")
    return data


@dataclass
class CrossvalConfig:
    """Everything ``python -m chromasonic_lib.crossval`` takes."""

    dataset: str = "chorales-185"
    encoding: str = "pitch"
    folds: int = 10
    model: str = ""                     # empty: the params file's model
    # None: params/crossval.yaml, unless ``model`` names another family (then its defaults);
    # "": no params file. A file given that names another family than ``model`` is refused.
    params: str | None = None
    epochs: int = 0                     # 0: the params file's (or 30)
    seed: int = 42
    device: str = "auto"
    limit: int = 0                      # parse only the first files (a quick check); 0 = all
    ensemble: int | None = None         # models per fold whose probabilities are averaged; None: the params file's (or 1)
    test_transpose: int = -1            # -1: the params file's (or 0)
    # The share of each fold's training melodies held out for early stopping; 0: train on them
    # all for exactly ``epochs`` epochs and keep the last weights. -1: the params file's (or 0.1).
    val_fraction: float = -1
    # Melodies of another collection every fold's model first trains on (none of its tunes may
    # be one of ``dataset``'s: those are left out), for ``pretrain_epochs`` epochs at most.
    # "": the params file's ``pretrain`` (or none).
    pretrain: str = ""
    # Melodies of another collection every fold's model also trains on, beside the fold's own
    # (copies of ``dataset``'s tunes left out). "": the params file's ``also_train_on`` (or none).
    also_train_on: str = ""
    compare: tuple = ()                 # two params files (A, B) to run on the same folds instead
    # Folds trained at once, each in a process of its own with its share of the threads (small
    # models use one core far better than two). 0: on the CPU one per core (at most one per
    # fold), elsewhere 1. The command line's default is 0; here 1, since worker processes
    # re-import a script that has no ``if __name__ == "__main__":`` guard.
    jobs: int = 1
    # Every note's probability, IC and entropy, out of fold: a .csv or .parquet file; "": none.
    per_note: str = ""
    # Every note's whole predicted distribution: a .npz file; "": none.
    distributions: str = ""

    def __post_init__(self) -> None:
        self.dataset = check_dataset("dataset", self.dataset)
        self._check_outputs()
        self.encoding = check_choice("encoding", self.encoding, ENCODINGS)
        self.folds = check_int("folds", self.folds, 2)
        # With compare, A and B are each a config of their own, built from the raw model and epochs.
        self.sides = self._compare_sides() if self.compare else ()
        given, self.params = self.params is not None, "params/crossval.yaml" if self.params is None else self.params
        self.settings = check_param_file("params", self.params) if self.params else {}
        self.model = self.model or self.settings.get("model", "markov")
        self.model = check_choice("model", self.model, MODELS)
        named = self.settings.get("model", self.model)
        if named != self.model and given:
            # Dropping the file's context, transposition and epochs quietly would run another
            # configuration than the one asked for.
            raise ConfigError(f"model {self.model!r} and params {self.params!r} disagree: the file "
                              f"is a {named!r} configuration. Allowed: leave out model to run it "
                              f"as {named!r}, or give a params file for {self.model!r}")
        if named != self.model:         # the default file is another family's: not this one's
            self.params, self.settings = "", {}
        if "context" in self.settings:
            context = check_context("context", self.settings["context"], self.model, self.encoding)
            self.settings = {k: v for k, v in self.settings.items() if k != "context"}
            if context:
                self.settings["context"] = context
        self.epochs = check_int("epochs", self.epochs or self.settings.get("epochs", 30))
        # Scored, not trained: the average over the test melody moved by ±this many semitones.
        self.test_transpose = check_test_transpose(self._own("test_transpose", self.test_transpose, 0, -1))
        self.val_fraction = check_float("val_fraction", self._own("val_fraction", self.val_fraction, 0.1, -1),
                                        0, 0.5)
        self.pretrain = self._other_collection("pretrain", self.pretrain)
        check_pretrain_model(self.pretrain, self.model)
        self.also_train_on = self._other_collection("also_train_on", self.also_train_on)
        self.pretrain_epochs = check_int("pretrain_epochs", self._own("pretrain_epochs", None, 5, None))
        self.seed = check_int("seed", self.seed, 0)
        self.device = check_device("device", self.device)
        self.limit = check_int("limit", self.limit, 0)
        self.ensemble = check_int("ensemble", self._own("ensemble", self.ensemble, 1, None))
        self.jobs = check_int("jobs", self.jobs, 0)
        # Every key left in the params file is one of the model's or its training's parameters.
        check_settings_keys("params", self.params, self.settings, self.model, "crossval")

    def _check_outputs(self) -> None:
        """``per_note`` and ``distributions`` name files of a kind that can be written."""
        if self.per_note:
            check_table_file("per_note", self.per_note)
        if self.distributions:
            check_npz_file("distributions", self.distributions)

    def _other_collection(self, key: str, given: str) -> str:
        """The collection crossval's own ``key`` names (``given``, else the params file's, else
        none): another one than ``dataset``."""
        return check_other_collection(key, self._own(key, given, "", ""), self.dataset, "cross-validated")

    def _own(self, key: str, given: Any, default: Any, unset: Any) -> Any:
        """A crossval setting (not a training one, so taken out of ``settings``): ``given`` (the
        command line's) unless it is ``unset``, else the params file's ``key``, else ``default``."""
        from_file = self.settings.pop(key, default)
        return from_file if given == unset else given

    def _compare_sides(self) -> tuple[CrossvalConfig, CrossvalConfig]:
        if not isinstance(self.compare, (list, tuple)) or len(self.compare) != 2:
            raise ConfigError(f"compare must be two params files (A and B), got {self.compare!r}")
        if self.model:
            raise ConfigError("model: with compare, each params file names its own model; "
                              f"got model={self.model!r}")
        for path in self.compare:
            check_param_file("compare", path)
        self.compare = tuple(self.compare)
        # Each side's per-note files get its letter: FILE-A.csv, FILE-B.csv.
        return tuple(dataclasses.replace(self, params=p, compare=(), per_note=_side_file(self.per_note, side),
                                         distributions=_side_file(self.distributions, side))
                     for p, side in zip(self.compare, "AB"))


def check_table_file(name: str, path: str) -> Path:
    """``path`` (resolved) for a per-note table: a ``.csv`` file, or ``.parquet`` where pyarrow is
    installed."""
    p = resolve(str(path))
    if p.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"{name} must be a .csv or .parquet file, got {path!r}")
    if p.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(f"{name}: writing {path!r} needs pyarrow (pip install pyarrow), "
                              "or name a .csv file") from None
    return p


def check_npz_file(name: str, path: str) -> Path:
    """``path`` (resolved) for every note's distribution: a ``.npz`` file."""
    p = resolve(str(path))
    if p.suffix.lower() != ".npz":
        raise ConfigError(f"{name} must be a .npz file, got {path!r}")
    return p


def _side_file(path: str, side: str) -> str:
    """``path`` with ``-side`` before its suffix; "" stays ""."""
    if not path:
        return ""
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{side}{p.suffix}"))
