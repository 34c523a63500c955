"""Typed, validated configs: the one place where every user input is checked.

Each notebook's ``parameters`` cell, the command-line tools and the Python API build one of
these dataclasses; a bad value raises :class:`ConfigError` naming the parameter, the value
given and what is allowed, before any data is loaded or any training starts.

``checks`` holds the value checks and the names a user may give, ``namespace`` how a notebook
hands its parameters over, ``params`` params files; then a module per config: ``training``
(:class:`TrainConfig`, :class:`DataConfig`), ``train_best``, ``crossval``. The search's own
config is beside the search (``search/config.py``), the analysis notebook's in ``analysis.py``.
"""
from .checks import *  # noqa: F401,F403  (the checks and name lists, as before the split)
from .checks import __all__ as _checks
from .crossval import CrossvalConfig
from .namespace import FromNamespace
from .params import check_param_file, check_settings_keys
from .train_best import TrainBestConfig, parse_primer
from .training import DATA_FIELDS, SEARCHABLE_TRAINING, DataConfig, StudyAndData, TrainConfig

__all__ = [*_checks, "CrossvalConfig", "FromNamespace", "check_param_file", "check_settings_keys",
           "TrainBestConfig", "parse_primer", "DATA_FIELDS", "SEARCHABLE_TRAINING", "DataConfig",
           "StudyAndData", "TrainConfig"]
