"""What ``python -m chromasonic_lib.crossval`` takes: :class:`CrossvalConfig`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..paths import resolve
from .checks import (ENCODINGS, check_choice, check_context, check_model, check_dataset, check_device,
                     check_float, check_int, check_npz_file, check_other_collection, check_pretrain_model,
                     check_table_file, check_test_transpose)
from .params import check_param_file, check_settings_keys, resolve_setting


DEFAULT_PARAMS = "params/crossval.yaml"      # the configuration crossval runs when given none


@dataclass
class CrossvalConfig:
    """Everything ``python -m chromasonic_lib.crossval`` takes.

    ``None`` is "not given": the params file's value then, else the default (see
    :func:`~.params.resolve_setting`); after ``__post_init__`` every field holds its final value.
    """

    dataset: str = "chorales-185"
    encoding: str = "pitch"
    folds: int = 10
    model: str | None = None            # None: the params file's model (or markov)
    # None: params/crossval.yaml, unless ``model`` names another family (then its defaults);
    # "": no params file. A file given that names another family than ``model`` is refused.
    params: str | None = None
    epochs: int | None = None           # None: the params file's (or 30)
    seed: int = 42
    device: str = "auto"
    limit: int = 0                      # parse only the first files (a quick check); 0 = all
    ensemble: int | None = None         # models per fold whose probabilities are averaged; None: the params file's (or 1)
    test_transpose: int | None = None   # None: the params file's (or 0)
    # The share of each fold's training melodies held out for early stopping; 0: train on them
    # all for exactly ``epochs`` epochs and keep the last weights. None: the params file's (or 0.1).
    val_fraction: float | None = None
    # Melodies of another collection every fold's model first trains on (none of its tunes may
    # be one of ``dataset``'s: those are left out), for ``pretrain_epochs`` epochs at most.
    # None: the params file's ``pretrain`` (or none); "none": none, whatever the file says.
    pretrain: str | None = None
    # Melodies of another collection every fold's model also trains on, beside the fold's own
    # (copies of ``dataset``'s tunes left out). None: the params file's ``also_train_on`` (or
    # none); "none": none, whatever the file says.
    also_train_on: str | None = None
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
        given = self.params is not None
        if not given:
            # The shipped configuration, where there is one (a checkout); outside a checkout a
            # model given alone runs on its defaults rather than fail on a file never named.
            shipped = resolve(DEFAULT_PARAMS).is_file()
            if not shipped and not self.model:
                raise ConfigError(f"params: give a params file or a model; the default {DEFAULT_PARAMS} "
                                  f"ships with a checkout of chromasonic-lab, and there is none here")
            self.params = DEFAULT_PARAMS if shipped else ""
        self.settings = check_param_file("params", self.params) if self.params else {}
        self.members = self._mixture() if "mixture" in self.settings else ()
        if self.members:
            return
        self.model = resolve_setting(self.model, self.settings.get("model"), default="markov")
        self.model = check_model("model", self.model)
        named = check_model(f"model in {self.params}", self.settings["model"]) if "model" in self.settings \
            else self.model
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
        # epochs stays in settings (a training parameter too); crossval's own settings are taken out.
        self.epochs = check_int("epochs", resolve_setting(self.epochs, self.settings.get("epochs"), default=30))
        # Scored, not trained: the average over the test melody moved by ±this many semitones.
        self.test_transpose = check_test_transpose(self._own("test_transpose", self.test_transpose, 0))
        self.val_fraction = check_float("val_fraction", self._own("val_fraction", self.val_fraction, 0.1),
                                        0, 0.5)
        self.pretrain = self._other_collection("pretrain", self.pretrain)
        check_pretrain_model(self.pretrain, self.model)
        self.also_train_on = self._other_collection("also_train_on", self.also_train_on)
        self.pretrain_epochs = check_int("pretrain_epochs", self._own("pretrain_epochs", None, 5))
        self.seed = check_int("seed", self.seed, 0)
        self.device = check_device("device", self.device)
        self.limit = check_int("limit", self.limit, 0)
        self.ensemble = check_int("ensemble", self._own("ensemble", self.ensemble, 1))
        self.jobs = check_int("jobs", self.jobs, 0)
        # Every key left in the params file is one of the model's or its training's parameters.
        check_settings_keys("params", self.params, self.settings, self.model, "crossval")

    def _mixture(self) -> tuple[CrossvalConfig, ...]:
        """A params file that mixes configurations (``mixture: [A, B, ...]``): each member is its
        own params file, trained and scored on every fold as it is, and the members'
        probabilities are averaged note by note. The command line then sets only what all the
        members share (dataset, folds, seed, device, jobs, outputs)."""
        paths, rest = self.settings["mixture"], sorted(set(self.settings) - {"mixture"})
        if rest:
            raise ConfigError(f"params {self.params!r} is a mixture: it holds only `mixture` (its "
                              f"members' params files), got {', '.join(rest)} beside it")
        if not isinstance(paths, list) or len(paths) < 2 or not all(isinstance(x, str) for x in paths):
            raise ConfigError(f"mixture in {self.params!r} must list two or more params files, got {paths!r}")
        given = [k for k in ("model", "epochs", "ensemble", "test_transpose", "val_fraction", "pretrain",
                             "also_train_on") if getattr(self, k) is not None]
        if given:
            raise ConfigError(f"params {self.params!r} is a mixture of configurations: give "
                              f"{', '.join(given)} in its members' files, not for the mixture")
        members = []
        for path in paths:
            try:
                members.append(CrossvalConfig(self.dataset, self.encoding, self.folds, params=path,
                                              seed=self.seed, device=self.device, limit=self.limit, jobs=self.jobs))
            except ConfigError as e:
                raise ConfigError(f"mixture in {self.params!r}: member {path!r}: {e}") from None
        for path, m in zip(paths, members):
            if m.members:
                raise ConfigError(f"mixture in {self.params!r}: member {path!r} is a mixture itself")
            if m.pretrain or m.also_train_on:
                raise ConfigError(f"mixture in {self.params!r}: member {path!r} trains on another "
                                  f"collection (pretrain or also_train_on), which a mixture's members "
                                  f"can't (they share one set of folds)")
        self.model, self.epochs, self.test_transpose, self.val_fraction = "mixture", 0, 0, 0.1
        self.pretrain, self.also_train_on, self.pretrain_epochs, self.ensemble = "", "", 5, 1
        return tuple(members)

    def _check_outputs(self) -> None:
        """``per_note`` and ``distributions`` name files of a kind that can be written."""
        if self.per_note:
            check_table_file("per_note", self.per_note)
        if self.distributions:
            check_npz_file("distributions", self.distributions)

    def _other_collection(self, key: str, given: str | None) -> str:
        """The collection crossval's own ``key`` names (``given``, else the params file's, else
        none): another one than ``dataset``."""
        return check_other_collection(key, self._own(key, given, ""), self.dataset, "cross-validated")

    def _own(self, key: str, given: Any, default: Any) -> Any:
        """A crossval setting (not a training one, so taken out of ``settings``): ``given`` (the
        command line's), else the params file's ``key``, else ``default``."""
        return resolve_setting(given, self.settings.pop(key, None), default=default)

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


def _side_file(path: str, side: str) -> str:
    """``path`` with ``-side`` before its suffix; "" stays ""."""
    if not path:
        return ""
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{side}{p.suffix}"))
