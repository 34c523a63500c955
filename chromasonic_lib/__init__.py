"""Chromasonic Lab: tune Chromasonic's melody models with Optuna, from notebooks or Python.

>>> from chromasonic_lib import SearchConfig, run_search
>>> result = run_search(SearchConfig(dataset="synthetic", n_trials=5))
"""
from __future__ import annotations

import logging
import sys

from .config import DataConfig, TrainBestConfig, TrainConfig
from .data import MelodySet, load_dataset, prepare
from .errors import ChromasonicError, ConfigError, DataError, TrainingDiverged
from .models import build_model
from .checkpoints import load_checkpoint, save_checkpoint
from .paths import mask_url
from .search import SearchResult, run_search
from .search.config import SearchConfig
from .analysis import AnalysisConfig
from .search.compat import HyperparameterOptimizer, HyperparameterSearchSpace
from .surprise import per_melody, surprise
from .training import History, Metrics, evaluate, pick_device, train

__all__ = [
    "SearchConfig", "TrainConfig", "DataConfig", "TrainBestConfig", "AnalysisConfig",
    "load_dataset", "prepare", "MelodySet", "build_model", "train", "evaluate", "pick_device",
    "History", "Metrics", "run_search", "SearchResult", "save_checkpoint", "load_checkpoint",
    "HyperparameterSearchSpace", "HyperparameterOptimizer", "ChromasonicError", "ConfigError",
    "DataError", "TrainingDiverged", "setup_logging", "mask_url", "surprise", "per_melody",
]


def setup_logging(level: int = logging.INFO) -> None:
    """Plain-text progress lines on stdout (they stay readable in executed notebooks and HTML)."""
    logger = logging.getLogger("chromasonic_lib")
    logger.setLevel(level)
    if not any(getattr(h, "_chromasonic", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        handler._chromasonic = True
        logger.addHandler(handler)
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
