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
import time

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from ..config.checks import check_pick
from ..errors import ConfigError
from ..generate import sample
from ..models import count_parameters

# What Optuna's plots call them: the values are in nats/note, as everywhere in a search.
METRIC_NAMES = {"bits_per_note": "nats/note", "n_params": "parameters", "ms_per_note": "ms/note"}
LATENCY_NOTES = 256         # ms_per_note: the time to write a melody this long, per note


def is_multi(study: optuna.Study) -> bool:
    return len(study.directions) > 1


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


def pick_trial(study: optuna.Study, pick: str = "best") -> FrozenTrial:
    """The trial ``pick`` names: ``best`` (the lowest loss), ``smallest_within:x`` (the fewest
    parameters among the complete trials within x bits/note of the best), or a trial number."""
    pick = check_pick("pick", pick)
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
