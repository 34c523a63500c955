"""What a study's numbers mean: the settings stored on the study at creation, and the guard.

A trial's validation loss only compares with another trial's when both were measured on the
same data, split, epochs and search space. The study stores those settings once (user
attribute ``settings``); a resume that changes one stops with a :class:`ConfigError`, and
``train_best`` and the analysis read them instead of their own defaults.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna

from ..config.training import SYNTHETIC_ONLY
from ..data import USER_TOKENS
from ..errors import ConfigError
from ..models import PROTOCOL, family, is_own
from ..paths import resolve

log = logging.getLogger(__name__)

# Settings that change what a trial's number means, in the order errors name them. Anything
# else (n_trials, timeout, sampler, pruner, device, plot, heartbeats, threads) may change freely.
# The original API's token lists are known by their melodies (dataset_fingerprint) and vocabulary.
MEASURED = ("protocol", "dataset", "dataset_fingerprint", "encoding", "vocab_size", "model", "seed",
            "val_fraction", "test_fraction", "n_sequences", "sequence_length", "epochs",
            "folds", "folds_leave_out_test", "pretrain", "pretrain_epochs", "also_train_on",
            "exclude_copies_of", "search_space", "objectives")
# What a study created before a setting existed measured: the value that setting has now.
BEFORE = {"folds": 0, "folds_leave_out_test": False, "pretrain": "", "pretrain_epochs": 5, "also_train_on": "",
          "exclude_copies_of": "", "objectives": ["bits_per_note"]}


@functools.lru_cache(maxsize=1)
def library_version() -> str:
    """The package's version and a hash of the library's own source files (``0.3.0+src.1a2b3c4d``).

    The package version alone stays put while the code under it changes (an editable install,
    a checkout between releases), so the "created by another version" warning never fired;
    the source hash changes with every edit of the library."""
    try:
        release = metadata.version("chromasonic-lab")
    except metadata.PackageNotFoundError:
        release = "unknown"
    package = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for f in sorted(package.rglob("*.py")):
        h.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes())
    return f"{release}+src.{h.hexdigest()[:8]}"


def data_fingerprint(melodies: list) -> str:
    """A hash of the encoded melodies themselves: the same notes give the same fingerprint,
    whatever the folder is called or when its files were touched."""
    h = hashlib.sha256()
    for m in melodies:
        h.update(m.tobytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _is_folder(dataset: str) -> bool:
    return resolve(dataset).is_dir()


def study_settings(cfg, data) -> dict[str, Any]:
    """The settings of a search (a ``SearchConfig``) on ``data`` (its ``Prepared`` data)."""
    synthetic = cfg.dataset == "synthetic"
    return json.loads(json.dumps({
        "protocol": PROTOCOL,
        "dataset": cfg.dataset,
        "dataset_fingerprint": data_fingerprint(data.data.melodies),
        "encoding": cfg.encoding,
        "vocab_size": data.vocab_size,
        "model": cfg.model,
        "seed": cfg.seed,
        "val_fraction": cfg.val_fraction,
        "test_fraction": cfg.test_fraction,
        "n_sequences": cfg.n_sequences if synthetic else None,
        "sequence_length": cfg.sequence_length if synthetic else None,
        "epochs": cfg.epochs,
        "folds": cfg.folds,
        # A cross-validated study's folds leave its test melodies out (before: every melody).
        "folds_leave_out_test": bool(cfg.folds),
        "pretrain": cfg.pretrain,
        "pretrain_epochs": cfg.pretrain_epochs if cfg.pretrain else BEFORE["pretrain_epochs"],
        "also_train_on": cfg.also_train_on,
        "exclude_copies_of": cfg.exclude_copies_of,
        "objectives": cfg.objectives,
        # Where a study starts is not what its trials measure: start_from is left out.
        "search_space": {k: v for k, v in dataclasses.asdict(cfg.space).items() if k != "start_from"},
        "library_version": library_version(),
        # A model of one's own: its class's source, so an edit between runs is seen.
        "model_source": model_source(cfg.model),
    }))


def model_source(name: str) -> str | None:
    """The source hash of a model class of one's own (None for ours and for ``any``)."""
    return family(name).source_hash or None if is_own(name) else None


def stored_settings(study: optuna.Study) -> dict[str, Any]:
    """The settings a study was created with (older studies: what their ``config`` kept)."""
    attrs = study.user_attrs
    if "settings" in attrs:
        # Studies from before the start token record no protocol: theirs left first notes out.
        return {"protocol": 1, **BEFORE, **attrs["settings"]}
    # ``config`` named the space's file, not its content, and kept the synthetic-only sizes
    # for every dataset: those can't be compared.
    legacy = {k: v for k, v in (attrs.get("config") or {}).items()
              if k in MEASURED and k != "search_space"}
    if legacy and legacy.get("dataset") != "synthetic":
        for k in SYNTHETIC_ONLY:
            legacy[k] = None
    return {"protocol": 1, **legacy} if legacy else legacy


def _first_difference(old: Any, new: Any, path: str = "") -> str:
    """Where two JSON values first differ, e.g. ``models.lstm.hidden_size.high: 24 → 32``."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    return f"{path or 'value'}: {old!r} there, {new!r} now"


def check_resume(study: optuna.Study, settings: dict[str, Any]) -> None:
    """Stop a resume whose settings would make its trials incomparable with the study's."""
    old, settings = stored_settings(study), {**BEFORE, **settings}
    folder = _is_folder(settings["dataset"])
    for name in MEASURED:
        if name not in old or old[name] == settings.get(name):
            continue
        if name == "dataset" and folder:
            continue                    # a folder is known by its melodies, not by its path
        if name == "dataset_fingerprint" and not folder and settings["dataset"] != USER_TOKENS:
            # A named corpus re-parsed by another music21: same name, close enough to go on.
            log.warning("the melodies of %r differ from those study %r was searched on "
                        "(another music21 version?)", settings["dataset"], study.study_name)
            continue
        if name == "protocol":
            what = (f"its trials' losses leave out each melody's first note (protocol "
                    f"{old[name]}), this version scores every note (protocol {settings[name]})")
        elif name == "folds_leave_out_test":
            what = ("its folds held every melody, its test melodies too, so its trials were chosen "
                    "on train_best's test; this version leaves the test melodies out of the folds")
        elif name == "search_space":
            what = f"search_space differs ({_first_difference(old[name], settings[name])})"
        elif name == "dataset_fingerprint" and not folder:
            what = (f"the {settings['dataset']} differ from those the study searched "
                    f"(dataset_fingerprint {old[name]} there, {settings[name]} now)")
        elif name == "dataset_fingerprint":
            what = (f"the melodies in folder {settings['dataset']!r} changed since the study "
                    f"searched {old.get('dataset')!r} (fingerprint {old[name]} there, "
                    f"{settings[name]} now)")
        else:
            what = f"{name} is {settings.get(name)!r} now but {old[name]!r} in the study"
        advice = {"protocol": "run the chromasonic-lab version that created it",
                  "search_space": "run with the study's search space",
                  "folds_leave_out_test": "run the chromasonic-lab version that created it",
                  "dataset_fingerprint": "run with the study's melodies"}.get(
                      name, f"run with {name} {old[name]!r}")
        raise ConfigError(
            f"study_name {study.study_name!r} already holds {_trials(len(study.trials))} measured "
            f"with different settings: {what}. New trials would not compare with them. To add "
            f"trials to this study, {advice}; for the new settings, choose a new study_name "
            f"(e.g. {study.study_name + '-2'!r}). The study keeps all its trials.")
    source = old.get("model_source")
    if source and source != settings.get("model_source"):
        log.warning("the source of %s changed since study %r was created (hash %s there, %s now): "
                    "new trials train the edited class, old ones the class as it was",
                    settings["model"], study.study_name, source, settings.get("model_source"))
    version = old.get("library_version")
    if version and version != settings.get("library_version"):
        log.warning("study %r was created by chromasonic-lab %s, this is %s: if training changed "
                    "between them, new trials may not compare with old ones", study.study_name,
                    version, settings.get("library_version"))


def _trials(n: int) -> str:
    return f"{n} trial" if n == 1 else f"{n} trials"
