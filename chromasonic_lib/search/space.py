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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from ..config import (SEARCHABLE_TRAINING, TrainConfig, check_context, check_float,
                      check_int, check_test_transpose)
from ..data.context import context_label, context_names
from ..errors import ConfigError
from ..folds import PROTOCOL_SETTINGS
from ..models import MODELS, RHYTHM, is_own
from ..models import family as model_family
from ..models.own import same_class

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
        if value is None:       # a constructor's None default ("choose for me"): the range's middle
            middle = (self.low * self.high) ** 0.5 if self.log else (self.low + self.high) / 2
            return int(round(middle)) if self.type == "int" else float(middle)
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


# Where a search starts: each family's defaults with TrainConfig's (known to train), and
# crossval's protocol defaults.
TRAINING_DEFAULTS = {**{name: getattr(TrainConfig(), name) for name in SEARCHABLE_TRAINING},
                     **PROTOCOL_SETTINGS}
# What a space's ``training`` section may search: TrainConfig's settings and how a configuration
# is trained and scored (crossval's protocol: epochs, val_fraction, test_transpose, ensemble).
SPACE_TRAINING = SEARCHABLE_TRAINING + tuple(PROTOCOL_SETTINGS)
# The markov model is counted, not trained: of the training section it takes only these.
MARKOV_TRAINING = ("transpose", "test_transpose")
# Searchable only where each trial is cross-validated (the single split's are the study's).
FOLDS_ONLY = ("val_fraction", "ensemble")


def _check_protocol(label: str, name: str, value: Any) -> None:
    if name == "epochs":
        check_int(label, value)
    elif name == "val_fraction":
        check_float(label, value, 0, 0.5)
    elif name == "test_transpose":
        check_test_transpose(value)
    elif name == "ensemble":
        check_int(label, value)
    else:
        try:
            TrainConfig(**{name: value})
        except ConfigError as e:
            raise ConfigError(f"{label}: {e}") from None


def _check_values(where: str, spec: "ParamSpec", check) -> None:
    """Every value ``spec`` can take passes ``check`` (its bounds for a range): a bad value is
    refused when the space is read, not when a trial that drew it fails."""
    for value in _possible(spec, None):
        check(f"search_space: {where}.{spec.name}", spec.name, value)


def _possible(spec: "ParamSpec | None", default: Any) -> list:
    """The values a parameter can take that matter for a combination check (a range: its ends)."""
    if spec is None:
        return [default]
    return spec.choices if spec.type == "categorical" else [spec.value] if spec.type == "fixed" \
        else [spec.low, spec.high]


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
    # Params files (crossval's, a best_hyperparameters.json) whose configurations a new study
    # runs first, instead of the families' defaults: a search starts from the best known point.
    start_from: list[str] = field(default_factory=list)

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
        params = self.models.get(family, {})
        hparams = {n: p.suggest(trial, prefix + n) for n, p in params.items() if n != "memory_rhythm"}
        if "memory_rhythm" in params and _rhythm_applies(family, hparams):
            # Conditional: only a model with the melody memory that reads the rhythm can link them.
            hparams["memory_rhythm"] = params["memory_rhythm"].suggest(trial, prefix + "memory_rhythm")
        training = {n: p.suggest(trial, n) for n, p in self.training.items()
                    if (family != "markov" or n in MARKOV_TRAINING) and n != "epochs"}
        if "epochs" in self.training and family != "markov" and training.get("val_fraction", 0) == 0:
            # Conditional: with early stopping (val_fraction > 0) the epochs are the study's
            # maximum; with none held out (0) they are how long the model trains, so drawn.
            training["epochs"] = self.training["epochs"].suggest(trial, "epochs")
        return family, hparams, training

    def start_params(self, params: dict[str, Any], where: str, study: dict[str, Any]) -> dict[str, Any]:
        """Optuna's parameters for the configuration ``params`` (a params file's, ``where``): the
        trial that draws them trains exactly that configuration, or a :class:`ConfigError` says
        which setting this space can't give it. ``study``: the values a trial takes for the
        protocol settings the space doesn't search (the study's epochs and val_fraction)."""
        params = dict(params)
        family = params.pop("model", None)
        if family not in self.families:
            raise ConfigError(f"search_space: start_from {where} is a {family!r}, which this space "
                              f"does not search ({', '.join(self.families)})")
        prefix = "" if len(self.families) == 1 else f"{family}."
        out = {} if len(self.families) == 1 else {"model": family}
        known = {**model_family(family).defaults, **TRAINING_DEFAULTS, **study}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(f"search_space: start_from {where} sets {', '.join(unknown)}, which a "
                              f"search does not take")
        hparams = {n: params.get(n, d) for n, d in model_family(family).defaults.items()}
        if "context" in hparams:
            hparams["context"] = context_label(hparams["context"])
        specs = {**{prefix + n: (p, hparams[n]) for n, p in self.models.get(family, {}).items()
                    if n != "memory_rhythm" or _rhythm_applies(family, hparams)},
                 **{n: (p, params.get(n, {**TRAINING_DEFAULTS, **study}[n])) for n, p in self.training.items()
                    if (family != "markov" or n in MARKOV_TRAINING)}}
        if "epochs" in specs and params.get("val_fraction", study.get("val_fraction")) != 0 and "val_fraction" in self.training:
            del specs["epochs"]
        for key, (spec, value) in specs.items():
            if spec.type == "fixed" and spec.value == value or spec.type != "fixed" and spec.closest(value) == value:
                if spec.type != "fixed":
                    out[key] = value
                continue
            raise ConfigError(f"search_space: start_from {where} has {key} {value!r}, which this "
                              f"space can't draw ({_describe(spec)})")
        # What the space leaves out, a trial takes from the defaults (or the study): the file must too.
        drawn = {n.removeprefix(prefix) for n in specs}
        for name in set(params) - drawn:
            expected = {**hparams, **TRAINING_DEFAULTS, **study}.get(name)
            if params[name] != expected and not (name == "context" and hparams["context"] == expected):
                raise ConfigError(f"search_space: start_from {where} has {name} {params[name]!r}, but "
                                  f"this space's trials take {expected!r}: add {name} to the space")
        return out

    def variants(self, family: str) -> list[dict[str, Any]]:
        """Hyperparameters a dry run builds ``family`` with: its defaults, then each categorical
        choice (and fixed value) of the space over them (a range is drawn anew each trial)."""
        out: list[dict[str, Any]] = [{}]
        for name, spec in self.models.get(family, {}).items():
            if name in ("memory_order", "memory_alpha", "memory_rhythm"):
                continue
            if spec.type in ("categorical", "fixed"):
                out += [{name: v} for v in (spec.choices if spec.type == "categorical" else [spec.value])]
        return out

    def check_single_split(self) -> None:
        """Refuse what only a cross-validated search can search (folds 0: one split)."""
        for name in FOLDS_ONLY:
            if name in self.training:
                raise ConfigError(
                    f"search_space: training.{name} is searchable only in a cross-validated search "
                    f"(folds ≥ 2): it is how each fold trains; a single-split search's "
                    f"{'val_fraction is the study parameter of that name' if name == 'val_fraction' else 'trials train one model each'}")


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
            defaults = {**model_family(family).defaults, **(overrides or {}).get(family, {})}
            prefix = "" if len(self.families) == 1 else f"{family}."
            params = {} if len(self.families) == 1 else {"model": family}
            for name, spec in self.models.get(family, {}).items():
                if spec.type != "fixed":
                    params[prefix + name] = spec.closest(defaults[name])
            for name, spec in self.training.items():
                if spec.type != "fixed" and (family != "markov" or name in MARKOV_TRAINING):
                    params[name] = spec.closest(TRAINING_DEFAULTS[name])
            trials.append(params)
        return trials


def _describe(spec: ParamSpec) -> str:
    if spec.type == "fixed":
        return f"fixed at {spec.value!r}"
    if spec.type == "categorical":
        return f"choices {spec.choices}"
    return f"{spec.low}..{spec.high}"


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
    unknown = set(raw) - {"training", "models", "start_from"}
    if unknown:
        raise ConfigError(f"search_space: unknown sections {sorted(unknown)}; allowed: training, "
                          "models, start_from")
    start_from = raw.get("start_from") or []
    if not isinstance(start_from, list) or not all(isinstance(p, str) for p in start_from):
        raise ConfigError(f"search_space: start_from must be a list of params files, got {start_from!r}")
    training = {}
    for name, spec in (raw.get("training") or {}).items():
        if name not in SPACE_TRAINING:
            raise ConfigError(f"search_space: {name} is not a training setting that can be "
                              f"searched; allowed: {', '.join(SPACE_TRAINING)}")
        training[name] = _param("training", name, spec)
        _check_values("training", training[name], _check_protocol)
    models = {}
    for family, params in (raw.get("models") or {}).items():
        if is_own(family):
            # A model of one's own under its import path: imported, so that a misspelled one is
            # an error rather than an entry quietly left out; the search's own under its name.
            family = model if same_class(family, model) else model_family(family).name
            if family != model:
                continue
        elif family not in MODELS:
            raise ConfigError(f"search_space: unknown model family {family!r}; allowed: "
                              f"{', '.join(MODELS)}, or a class of one's own as 'package.module:Class' "
                              f"or 'path/to/file.py:Class'")
        models[family] = {}
        searchable = model_family(family).searchable
        for name, spec in (params or {}).items():
            if name not in searchable:
                raise ConfigError(f"search_space: {name} is not a hyperparameter of {family} "
                                  f"({'its constructor does not take it; ' if is_own(family) else ''}"
                                  f"allowed: {', '.join(searchable)})")
            models[family][name] = _param(f"models.{family}", name, spec)
            if name == "context":
                models[family][name] = _context_param(f"models.{family}", models[family][name],
                                                       family, encoding)
    families = [f for f in MODELS if f in models] if model == "any" else [model]
    if not families:
        raise ConfigError(f"search_space: {source} lists no model family, so model=any has "
                          f"nothing to search")
    _check_transformer_heads(models.get("transformer", {}))
    for family in families:
        _check_rhythm(family, models.get(family, {}))
    return SearchSpace(families, training, models, start_from)


def _rhythm_applies(family: str, hparams: dict[str, Any]) -> bool:
    """A trial's model can take memory_rhythm: it has the melody memory and reads the rhythm."""
    defaults = model_family(family).defaults
    return bool(hparams.get("memory_order", defaults["memory_order"])) and \
        bool(set(RHYTHM) & set(context_names(hparams.get("context", defaults.get("context", ())))))


def _check_rhythm(family: str, params: dict[str, ParamSpec]) -> None:
    """memory_rhythm is drawn only where the trial's model can take it (the melody memory and a
    context with a rhythm feature); a space where no trial's model can is refused by name."""
    spec = params.get("memory_rhythm")
    if spec is None or not any(_possible(spec, 0)):
        return
    defaults = model_family(family).defaults
    orders = _possible(params.get("memory_order"), defaults["memory_order"])
    contexts = _possible(params.get("context"), defaults.get("context", ()))
    if not any(orders) or not any(set(RHYTHM) & set(context_names(c)) for c in contexts):
        raise ConfigError(
            f"search_space: models.{family}.memory_rhythm needs the melody memory (memory_order ≥ 1) "
            f"and a context with one of {', '.join(RHYTHM)}, but this space's {family} can have "
            f"{'no memory_order above 0' if not any(orders) else 'no such context'}: add them "
            "to the space, or take memory_rhythm out")


def _check_transformer_heads(params: dict[str, ParamSpec]) -> None:
    """Every d_model the space can pick must divide by every nhead it can pick."""
    def values(name):
        p = params.get(name)
        if p is None:
            return [model_family("transformer").defaults[name]]
        return p.choices if p.type == "categorical" else [p.value] if p.type == "fixed" else None
    d_models, heads = values("d_model"), values("nhead")
    if d_models and heads:
        bad = [(d, h) for d in d_models for h in heads if d % h]
        if bad:
            raise ConfigError(f"search_space: transformer d_model must be divisible by nhead, "
                              f"but d_model={bad[0][0]} with nhead={bad[0][1]} is possible")
