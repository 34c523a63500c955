"""What ``train_best.ipynb`` takes: :class:`TrainBestConfig`, and the primer's notes."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from ..errors import ConfigError
from ..paths import resolve
from .checks import (check_dataset, check_existing_file, check_float, check_int, check_other_collection,
                     check_pick, check_pretrain_model, check_str, check_test_transpose)
from .params import resolve_setting
from .training import DATA_FIELDS, SYNTHETIC_ONLY, DataConfig, StudyAndData

log = logging.getLogger(__name__)


@dataclass
class TrainBestConfig(StudyAndData):
    """Everything ``train_best.ipynb`` takes.

    ``None`` is "not given": the data parameters and ``epochs`` then come from the study (what
    the search measured its trials on; see :meth:`resolve_data`), and test_transpose, pretrain,
    pretrain_epochs, also_train_on and ensemble from a ``best_params`` file (see :meth:`extras`),
    each through :func:`~.params.resolve_setting`. With ``best_params`` and no study, a data
    parameter not given is ``DataConfig``'s default, and epochs the file's (or ``FILE_EPOCHS``).
    """

    dataset: str | None = None
    encoding: str | None = None
    n_sequences: int | None = None
    sequence_length: int | None = None
    val_fraction: float | None = None
    test_fraction: float | None = None
    seed: int | None = None
    exclude_copies_of: str | None = None
    best_params: str = ""
    # Which of the study's trials: best (the lowest bits/note), smallest_within:0.02 (the fewest
    # parameters within 0.02 bits/note of the best), or a trial number such as "12".
    pick: str = "best"
    epochs: int | None = None
    n_samples: int = 3
    sample_length: int = 64
    temperature: float = 1.0
    top_k: int = 0
    primer: str = ""
    ensemble: int | None = None       # models (seeds seed, seed+1, …) whose probabilities are averaged
    # Score and sample as the average over the melody moved ±this.
    test_transpose: int | None = None
    # Another collection the model first trains on, and one it also trains on, less every copy of
    # a tune of ``dataset`` (as crossval's params files say); "none": none, whatever the file says.
    pretrain: str | None = None
    pretrain_epochs: int | None = None
    also_train_on: str | None = None

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
        self.pick = check_pick("pick", self.pick)
        if self.best_params and self.pick != "best":
            raise ConfigError(f"pick {self.pick!r} chooses among a study's trials, but best_params "
                              f"{self.best_params!r} names a file: give one or the other")
        # Each value given is checked now, before the study is opened; DataConfig's defaults
        # stand in for the rest until resolve_data() knows the study's.
        DataConfig(**self._given(DATA_FIELDS))
        if self.test_fraction is not None:      # 0 is allowed in DataConfig, not here
            self.test_fraction = check_float("test_fraction", self.test_fraction, 0, 0.9, low_open=True)
        for name in ("epochs", "ensemble", "pretrain_epochs"):
            if getattr(self, name) is not None:
                setattr(self, name, check_int(name, getattr(self, name)))
        self.n_samples = check_int("n_samples", self.n_samples, 0)
        self.sample_length = check_int("sample_length", self.sample_length)
        self.temperature = check_float("temperature", self.temperature, 0, 10, low_open=True)
        self.top_k = check_int("top_k", self.top_k, 0)
        if self.test_transpose is not None:
            self.test_transpose = check_test_transpose(self.test_transpose)
        for name in ("pretrain", "also_train_on"):
            value = getattr(self, name)
            if value is not None and check_str(name, value, allow_empty=True) not in ("", "none"):
                check_dataset(name, value)
        self.primer_notes = parse_primer("primer", self.primer)

    def _given(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The parameters of ``names`` given (not None)."""
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def extras(self, settings: Mapping[str, Any], dataset: str, model: str) -> dict[str, Any]:
        """test_transpose, pretrain, pretrain_epochs, also_train_on, ensemble (and the file's
        val_fraction): each given here, else the
        best_params file's (``settings``), else none; checked against the ``dataset`` trained on
        and the ``model`` family."""
        out = {name: resolve_setting(getattr(self, name), settings.get(name), default=default)
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
        if self.pretrain_epochs is not None and not out["pretrain"]:
            log.warning("pretrain_epochs %d is ignored: nothing is pretrained (no pretrain)", self.pretrain_epochs)
        return out

    def resolve_data(self, settings: Mapping[str, Any] | None, study_name: str | None = None,
                     file: Mapping[str, Any] | None = None) -> tuple[DataConfig, int]:
        """The data and the epochs to train: each value given, else (epochs) the params file's
        (``file``: a best_params file's or a cross-validated trial's settings), else the
        study's, else the default.

        ``settings`` are the study's stored settings (``None``: no study, a ``best_params``
        file). A value given that differs from the study's is logged with what it changes; a
        setting the study does not record is logged with the default used instead.
        """
        given, study, file = self._given(self.FROM_STUDY), dict(settings or {}), dict(file or {})
        # The study's melody counts apply only to the synthetic source it searched.
        counts_apply = given.get("dataset", study.get("dataset")) == study.get("dataset") == "synthetic"
        values, missing = {}, []
        for name in self.FROM_STUDY:
            applies = name not in SYNTHETIC_ONLY or counts_apply
            theirs = study.get(name) if applies else None
            from_file = file.get(name) if name == "epochs" else None
            if name in given and theirs is not None and theirs != given[name]:
                log.warning("%s %r differs from the study's %r: %s", name, given[name], theirs,
                            _what_it_changes(name, given[name], theirs))
            value = resolve_setting(given.get(name), from_file, theirs)
            if value is not None:
                values[name] = value
            elif settings is not None and applies and name != "exclude_copies_of":   # older: none
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
        from_file = self.epochs is None and file.get("epochs") is not None
        return data, check_int("best_params: epochs" if from_file and self.best_params else "epochs", epochs)

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


