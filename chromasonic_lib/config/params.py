"""Params files (YAML/JSON): read safely, each key checked against what the tool takes."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

from ..errors import ConfigError
from ..models import family
from .checks import check_existing_file
from .training import TrainConfig


def resolve_setting(given: Any, file: Any = None, study: Any = None, default: Any = None) -> Any:
    """A setting's final value: the one given, else the params file's, else the study's, else
    ``default``. ``None`` is "not given" at every step, so 0, -1 or "" given are values."""
    return next((value for value in (given, file, study) if value is not None), default)


def check_settings_keys(name: str, path: str, settings: Mapping[str, Any], model: str, tool: str,
                        own: Iterable[str] = ()) -> None:
    """Every key of the params file ``path`` is one of the ``model``'s or its training's
    parameters, or one of ``own`` (``tool``'s own settings the file may give)."""
    takes = {*family(model).defaults, *(f.name for f in dataclasses.fields(TrainConfig)),
             "model", "epochs", "context", *own} - {"seed"}
    unknown = sorted(set(settings) - takes)
    if unknown:
        raise ConfigError(
            f"{name}: {path} has settings {tool} does not take: {', '.join(unknown)}. It takes a "
            "model's parameters and their training's (params/crossval.yaml, a search's "
            "best_hyperparameters.json); a search's own settings (dataset, study_name, n_trials, "
            f"seed, ...) are for the search notebook, and {tool}'s own are its "
            f"{'command-line options' if tool == 'crossval' else 'parameters'}")


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


