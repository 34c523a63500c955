"""What a study minimizes: the loss alone, or the loss and the model's size or speed (a Pareto front).

``objectives`` lists them, the loss first: ``[bits_per_note]`` (the default, one objective),
``[bits_per_note, n_params]`` or ``[bits_per_note, ms_per_note]``, or all three. A study with
more than one is an Optuna multi-objective study (``directions``): its trials' first value is the
loss in nats/note, as in a single-objective study, and the others the model's parameters and its
generation latency (milliseconds per note of a 256-note melody, on the trial's device). Every
trial of such a study records all three as user attributes (``n_params``, ``ms_per_note``).

Optuna prunes single-objective studies only, and a trial behind on the loss may still be on the
front (smaller, or faster): a multi-objective study trains every trial to the end.
"""
from __future__ import annotations

import itertools
import math
import re
import time
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from ..errors import ConfigError
from ..generate import sample
from ..models import count_parameters

OBJECTIVES = ("bits_per_note", "n_params", "ms_per_note")
# What Optuna's plots call them: the values are in nats/note, as everywhere in a search.
METRIC_NAMES = {"bits_per_note": "nats/note", "n_params": "parameters", "ms_per_note": "ms/note"}
LATENCY_NOTES = 256         # ms_per_note: the time to write a melody this long, per note


def check_objectives(value: Any) -> list[str]:
    """``objectives`` as a list of names, the loss first (a comma-separated string works too)."""
    names = [s for s in re.split(r"[,\s]+", value) if s] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"objectives must be a list of names from {', '.join(OBJECTIVES)}, the "
                          f"first bits_per_note; got {value!r}")
    names = list(names)
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise ConfigError(f"objectives: unknown {unknown[0]!r}; allowed: {', '.join(OBJECTIVES)}")
    if names[0] != "bits_per_note" or len(set(names)) != len(names):
        raise ConfigError(f"objectives must start with bits_per_note and name each objective once "
                          f"(for instance [bits_per_note, n_params]); got {names}")
    return names


def is_multi(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def stored_objectives(attrs: dict[str, Any]) -> list[str]:
    """The objectives a study was created with, from its user attributes."""
    return (attrs.get("settings") or {}).get("objectives") or ["bits_per_note"]


def loss(t: FrozenTrial) -> float | None:
    """A trial's loss in nats/note (its first value), whatever the number of objectives."""
    return t.values[0] if t.values else None


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The complete trial with the lowest loss (``study.best_trial`` where there is one
    objective); ValueError when none is complete, as Optuna's."""
    if not is_multi(study):
        return study.best_trial
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise ValueError("no trial is complete yet")
    return min(done, key=lambda t: (loss(t), t.number))


def measure_costs(model: torch.nn.Module) -> dict[str, float]:
    """The model's parameters and its generation latency in ms/note (``LATENCY_NOTES`` notes
    from the start token, after a short warm-up, on the model's own device)."""
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    context = {n: torch.zeros(LATENCY_NOTES, dtype=torch.long) for n in getattr(model, "context", ())}
    generator = torch.Generator().manual_seed(0)
    sample(model, [], 8, generator=generator, context=context or None)      # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    sample(model, [], LATENCY_NOTES, generator=generator, context=context or None)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    ms = (time.perf_counter() - start) * 1000 / LATENCY_NOTES
    return {"n_params": count_parameters(model), "ms_per_note": round(ms, 4)}


def values(loss_value: float, costs: dict[str, float], objectives: list[str]) -> list[float]:
    """A multi-objective trial's values, in the order of ``objectives``."""
    return [loss_value] + [float(costs[name]) for name in objectives[1:]]


def front_records(study: optuna.Study) -> list[dict[str, Any]]:
    """The study's Pareto front (Optuna's ``best_trials``), by loss: each trial's number, its
    three figures and its configuration."""
    from .results import trial_config
    out = []
    for t in sorted(study.best_trials, key=lambda t: (loss(t), t.number)):
        out.append({"number": t.number, "bits_per_note": loss(t) / math.log(2),
                    "n_params": t.user_attrs.get("n_params"), "ms_per_note": t.user_attrs.get("ms_per_note"),
                    "values": list(t.values), "config": trial_config(t)})
    return out


PICK = re.compile(r"^(best|smallest_within:(\d+(\.\d*)?|\.\d+)|\d+)$")


def check_pick(value: Any) -> str:
    text = str(value).strip()
    if not PICK.match(text):
        raise ConfigError(f"pick must be 'best', 'smallest_within:<bits/note>' (such as "
                          f"'smallest_within:0.02') or a trial number such as '12'; got {value!r}")
    return text


def pick_trial(study: optuna.Study, pick: str = "best") -> FrozenTrial:
    """The trial ``pick`` names: ``best`` (the lowest loss), ``smallest_within:x`` (the fewest
    parameters among the complete trials within x bits/note of the best), or a trial number."""
    pick = check_pick(pick)
    if pick.isdigit():
        number = int(pick)
        if number >= len(study.trials) or study.trials[number].state != TrialState.COMPLETE:
            done = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
            raise ConfigError(f"pick {pick}: study {study.study_name!r} has no complete trial {number}; "
                              f"complete: {', '.join(map(str, done)) or 'none'}")
        return study.trials[number]
    best = best_trial(study)
    if pick == "best":
        return best
    within = float(pick.split(":")[1]) * math.log(2)        # bits → nats, as the values are
    close = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if loss(t) <= loss(best) + within]
    if any("n_params" not in t.user_attrs for t in close):
        raise ConfigError(f"pick {pick}: the trials of study {study.study_name!r} do not record their "
                          f"parameters (n_params); pick 'best' or a trial number")
    return min(close, key=lambda t: (t.user_attrs["n_params"], loss(t), t.number))
