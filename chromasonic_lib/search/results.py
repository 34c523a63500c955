"""Result files in ``output_dir``, rewritten atomically after every trial.

The seed's names are kept: ``best_hyperparameters.json``, ``optimization_results.json``,
``optimization_report.txt``, ``optimization_history.png``; plus ``trials.csv`` and
``best_model.pt`` (written by the objective when a trial beats the study's best).
"""
from __future__ import annotations

import datetime as dt
import logging
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..atomic import atomic_write, write_json

log = logging.getLogger(__name__)

FILES = ("best_hyperparameters.json", "optimization_results.json", "optimization_report.txt",
         "optimization_history.png", "trials.csv")


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def trial_config(t: FrozenTrial) -> dict[str, Any]:
    """The flat parameter dict of a trial, as ``train_best`` and the API take it."""
    return dict(t.user_attrs.get("config") or t.params)


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name,
        "params": t.params,
        "config": trial_config(t),
        "value": _finite(t.value),
        "intermediate_values": {str(k): _finite(v) for k, v in sorted(t.intermediate_values.items())},
        "duration": t.duration.total_seconds() if t.duration else None,
        "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
        "user_attrs": {k: v for k, v in t.user_attrs.items() if k != "config"},
    }


def summarize(study: optuna.Study, max_epochs: int | None = None) -> dict[str, Any]:
    """Counts, the best trial, wall time and the epochs that pruning saved."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = min(done, key=lambda t: t.value) if done else None
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    max_epochs = max_epochs or study.user_attrs.get("config", {}).get("epochs")
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    saved = sum(max(0, max_epochs - len(t.intermediate_values)) for t in pruned) if max_epochs else None
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    return {
        "best_params": trial_config(best) if best else {},
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "n_trials": len(trials),
        "states": counts,
        "total_time": (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0,
        "epochs_trained": sum(len(t.intermediate_values) for t in trials),
        "epochs_saved_by_pruning": saved,
    }


def report_text(study: optuna.Study, summary: dict[str, Any], top: int = 10) -> str:
    """The human-readable report: the best trial and the top ten."""
    attrs = study.user_attrs
    lines = [f"Chromasonic Lab — study {study.study_name!r}",
             f"written {dt.datetime.now().isoformat(timespec='seconds')}", ""]
    cfg = attrs.get("config", {})
    if cfg:
        lines.append(f"data: {attrs.get('data', cfg.get('dataset'))}")
        lines.append(f"model: {cfg.get('model')}, sampler: {cfg.get('sampler')}, pruner: "
                     f"{cfg.get('pruner')}, up to {cfg.get('epochs')} epochs per trial")
        lines.append(f"measured on: seed {cfg.get('seed')}, {cfg.get('val_fraction')} of the melodies "
                     f"validate, {cfg.get('test_fraction')} are held out for train_best's test")
    s = summary["states"]
    lines.append(f"trials: {summary['n_trials']} ({s['complete']} complete, {s['pruned']} pruned, "
                 f"{s['fail']} failed, {s['running']} running) in {summary['total_time']:.0f} s")
    if summary["epochs_saved_by_pruning"] is not None:
        lines.append(f"epochs trained: {summary['epochs_trained']}; saved by pruning: "
                     f"{summary['epochs_saved_by_pruning']}")
    lines.append("")
    if summary["best_value"] is None:
        lines.append("No trial has completed yet.")
        return "\n".join(lines) + "\n"
    best = study.trials[summary["best_trial"]] if summary["best_trial"] < len(study.trials) else None
    bits = summary["best_value"] / math.log(2)
    lines.append(f"BEST: trial {summary['best_trial']}: {summary['best_value']:.4f} nats/note "
                 f"({bits:.3f} bits/note) on the validation melodies")
    for name, label in (("floor", "floor (the generator's own loss)"),
                        ("markov_baseline", "markov baseline")):
        if attrs.get(name) is not None:
            lines.append(f"  {label}: {attrs[name]:.4f}  (best − it = "
                         f"{summary['best_value'] - attrs[name]:+.4f})")
    for k, v in summary["best_params"].items():
        lines.append(f"  {k:>16} = {v}")
    if best is not None:
        ua = best.user_attrs
        if "n_params" in ua:
            lines.append(f"  {ua['n_params']:,} weights, {ua.get('epochs_trained')} epochs, "
                         f"{ua.get('train_seconds', 0):.1f} s, accuracy {ua.get('val_accuracy', 0):.3f}")
    lines += ["", f"TOP {top}:", f"{'rank':>4} {'trial':>5} {'nats/note':>10}  parameters"]
    done = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
                  key=lambda t: t.value)
    for rank, t in enumerate(done[:top], 1):
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial_config(t).items())
        lines.append(f"{rank:>4} {t.number:>5} {t.value:>10.4f}  {params}")
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    if failed:
        lines += ["", "FAILED:"]
        lines += [f"  trial {t.number}: {t.user_attrs.get('fail_reason', 'unknown reason')}" for t in failed]
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_results(study: optuna.Study, output_dir: Path, plot: bool = True) -> dict[str, Any]:
    """(Re)write every result file; returns the summary."""
    summary = summarize(study)
    attrs = study.user_attrs
    write_json(output_dir / "best_hyperparameters.json", summary["best_params"])
    write_json(output_dir / "optimization_results.json", {
        "timestamp": dt.datetime.now().isoformat(timespec="seconds"),
        "study_name": study.study_name,
        **summary,
        "floor": attrs.get("floor"),
        "markov_baseline": attrs.get("markov_baseline"),
        "data": attrs.get("data"),
        "config": attrs.get("config"),
        "trials": [trial_record(t) for t in study.get_trials(deepcopy=False)],
    })
    atomic_write(output_dir / "optimization_report.txt", report_text(study, summary))
    df = study.trials_dataframe()
    atomic_write(output_dir / "trials.csv", df.to_csv(index=False))
    if plot and summary["best_value"] is not None:
        from ..plots import history_figure, save_figure
        save_figure(history_figure(study), output_dir / "optimization_history.png")
    return summary
