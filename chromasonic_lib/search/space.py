"""Search spaces: YAML files in ``params/spaces/`` → ``trial.suggest_*`` calls.

A space has a ``training`` section (settings every neural family tunes: learning rate,
batch size, weight decay, transposition ...) and a ``models`` section with each family's
own hyperparameters. Each entry is ``{type: float|int|categorical, low, high, log, step}``
or ``{type: categorical, choices: [...]}``, or a plain value to fix it. With ``model: any``
the family itself is searched and each family's parameters are conditional on it. A neural
family's ``context`` is a choice of feature sets (``none``, ``duration+metre+phrase+key``, ...),
each checked against the study's encoding.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from ..config import MODELS, SEARCHABLE_TRAINING, TrainConfig, check_context
from ..data.context import context_label, context_names
from ..errors import ConfigError
from ..models import MODEL_DEFAULTS

TYPES = ("float", "int", "categorical")


@dataclass
class ParamSpec:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list | None = None
    value: Any = None           # fixed value (type "fixed")

    def closest(self, value: Any) -> Any:
        """``value`` if this parameter can take it, else the nearest value it can."""
        if self.type == "fixed":
            return self.value
        if self.type == "categorical":
            return value if value in self.choices else self.choices[0]
        clipped = min(max(value, self.low), self.high)
        return int(round(clipped)) if self.type == "int" else float(clipped)

    def suggest(self, trial: optuna.Trial, key: str) -> Any:
        if self.type == "fixed":
            return self.value
        if self.type == "categorical":
            return trial.suggest_categorical(key, self.choices)
        if self.type == "int":
            return trial.suggest_int(key, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(key, self.low, self.high, step=self.step, log=self.log)


@dataclass
class ContextSpec(ParamSpec):
    """A family's ``context``: each value one string (``context_label``), so Optuna can choose it."""

    def closest(self, value: Any) -> Any:
        # The defaults say () for no context, the space "none" (or another spelling of it).
        return super().closest(context_label(value))


def _context_param(where: str, spec: ParamSpec, family: str, encoding: str | None) -> ParamSpec:
    """``spec`` with each feature set as one string, each naming features ``encoding`` gives.

    A set the encoding lacks (the grid gives no duration or phrase) is an error here rather
    than left out: the study would otherwise search something else than the file says, and
    every trial that picked it would fail.
    """
    label = f"search_space: {where}.context"
    if spec.type in ("float", "int"):
        raise ConfigError(f"{label} is a choice of context feature sets, e.g. {{choices: [none, "
                          f"duration+metre+phrase+key]}}, got type {spec.type}")
    labels: list[str] = []
    for value in spec.choices if spec.type == "categorical" else [spec.value]:
        names = check_context(label, value, family, encoding) if encoding else context_names(value, label)
        if context_label(names) not in labels:
            labels.append(context_label(names))
    if spec.type == "fixed":
        return ContextSpec(spec.name, "fixed", value=labels[0])
    return ContextSpec(spec.name, "categorical", choices=labels)


# Where a search starts: each family's defaults with TrainConfig's (known to train).
TRAINING_DEFAULTS = {name: getattr(TrainConfig(), name) for name in SEARCHABLE_TRAINING}


def _param(where: str, name: str, raw: Any) -> ParamSpec:
    label = f"search_space: {where}.{name}"
    if not isinstance(raw, dict):
        return ParamSpec(name, "fixed", value=raw)
    unknown = set(raw) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise ConfigError(f"{label} has unknown keys {sorted(unknown)}; allowed: type, low, "
                          f"high, log, step, choices")
    kind = raw.get("type", "categorical" if "choices" in raw else None)
    if kind not in TYPES:
        raise ConfigError(f"{label}: type must be one of {', '.join(TYPES)}, got {kind!r}")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{label}: choices must be a non-empty list, got {choices!r}")
        return ParamSpec(name, kind, choices=choices)
    low, high = raw.get("low"), raw.get("high")
    for bound, v in (("low", low), ("high", high)):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ConfigError(f"{label}: {bound} must be a number, got {v!r}")
    if low > high:
        raise ConfigError(f"{label}: low must not exceed high, got low={low}, high={high}")
    log = bool(raw.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{label}: a log range must stay above 0, got low={low}")
    step = raw.get("step")
    if step is not None and (not isinstance(step, (int, float)) or step <= 0):
        raise ConfigError(f"{label}: step must be a positive number, got {step!r}")
    if log and step is not None:
        raise ConfigError(f"{label}: log and step cannot be combined")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{label}: an int range needs integer bounds, got {low}..{high}")
    return ParamSpec(name, kind, float(low) if kind == "float" else int(low),
                     float(high) if kind == "float" else int(high), log, step)


@dataclass
class SearchSpace:
    """The parsed space: which families may be tried, with their parameters."""

    families: list[str]
    training: dict[str, ParamSpec]
    models: dict[str, dict[str, ParamSpec]]

    def suggest(self, trial: optuna.Trial) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(family, model hyperparameters, training settings) for one trial.

        With several families the family is a categorical parameter ``model`` and each
        family's parameters are named ``<family>.<name>`` (conditional on it), so spaces of
        different families never clash inside one study.
        """
        if len(self.families) == 1:
            family, prefix = self.families[0], ""
        else:
            family = trial.suggest_categorical("model", self.families)
            prefix = f"{family}."
        hparams = {n: p.suggest(trial, prefix + n) for n, p in self.models.get(family, {}).items()}
        training = {}
        if family != "markov":      # the markov model is counted, not trained
            training = {n: p.suggest(trial, n) for n, p in self.training.items()}
        elif "transpose" in self.training:
            training["transpose"] = self.training["transpose"].suggest(trial, "transpose")
        return family, hparams, training


    def default_trials(self, overrides: dict[str, dict[str, Any]] | None = None
                       ) -> list[dict[str, Any]]:
        """Optuna parameters of each family's default configuration, clipped into the space.

        A new study runs these first (``enqueue_trial``), so the sampler starts from a
        configuration known to train instead of from random corners of the space.
        """
        families = self.families if len(self.families) == 1 else \
            [f for f in ("markov", "lstm") if f in self.families] or self.families[:1]
        trials = []
        for family in families:
            defaults = {**MODEL_DEFAULTS[family], **(overrides or {}).get(family, {})}
            prefix = "" if len(self.families) == 1 else f"{family}."
            params = {} if len(self.families) == 1 else {"model": family}
            for name, spec in self.models.get(family, {}).items():
                if spec.type != "fixed":
                    params[prefix + name] = spec.closest(defaults[name])
            for name, spec in self.training.items():
                if spec.type != "fixed" and (family != "markov" or name == "transpose"):
                    params[name] = spec.closest(TRAINING_DEFAULTS[name])
            trials.append(params)
        return trials


def load_space(source: str | Path | dict, model: str, encoding: str | None = None) -> SearchSpace:
    """Parse and check a space (a YAML file or the same structure as a dict) for ``model``
    (and, where given, the ``encoding`` whose context features the space may choose)."""
    if isinstance(source, dict):
        raw = source
    else:
        try:
            raw = yaml.safe_load(Path(source).read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"search_space: {source} is not valid YAML: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("models", {}), dict):
        raise ConfigError(f"search_space: {source} must be a mapping with 'training' and "
                          f"'models' sections")
    unknown = set(raw) - {"training", "models"}
    if unknown:
        raise ConfigError(f"search_space: unknown sections {sorted(unknown)}; allowed: training, models")
    training = {}
    for name, spec in (raw.get("training") or {}).items():
        if name not in SEARCHABLE_TRAINING:
            raise ConfigError(f"search_space: {name} is not a training setting that can be "
                              f"searched; allowed: {', '.join(SEARCHABLE_TRAINING)}")
        training[name] = _param("training", name, spec)
    models = {}
    for family, params in (raw.get("models") or {}).items():
        if family not in MODEL_DEFAULTS:
            raise ConfigError(f"search_space: unknown model family {family!r}; allowed: "
                              f"{', '.join(MODEL_DEFAULTS)}")
        models[family] = {}
        for name, spec in (params or {}).items():
            if name not in MODEL_DEFAULTS[family]:
                raise ConfigError(f"search_space: {name} is not a hyperparameter of {family}; "
                                  f"allowed: {', '.join(MODEL_DEFAULTS[family])}")
            models[family][name] = _param(f"models.{family}", name, spec)
            if name == "context":
                models[family][name] = _context_param(f"models.{family}", models[family][name],
                                                       family, encoding)
    families = [f for f in MODELS if f in models] if model == "any" else [model]
    if not families:
        raise ConfigError(f"search_space: {source} lists no model family, so model=any has "
                          f"nothing to search")
    _check_transformer_heads(models.get("transformer", {}))
    return SearchSpace(families, training, models)


def _check_transformer_heads(params: dict[str, ParamSpec]) -> None:
    """Every d_model the space can pick must divide by every nhead it can pick."""
    def values(name):
        p = params.get(name)
        if p is None:
            return [MODEL_DEFAULTS["transformer"][name]]
        return p.choices if p.type == "categorical" else [p.value] if p.type == "fixed" else None
    d_models, heads = values("d_model"), values("nhead")
    if d_models and heads:
        bad = [(d, h) for d in d_models for h in heads if d % h]
        if bad:
            raise ConfigError(f"search_space: transformer d_model must be divisible by nhead, "
                              f"but d_model={bad[0][0]} with nhead={bad[0][1]} is possible")
