"""Figures the notebooks show and the search saves: static matplotlib, fine headless and in HTML.

Optuna's own matplotlib plots are used where they say what we need; the learning curves,
pruning savings and baseline comparison are drawn here.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
import numpy as np
import optuna
from optuna.trial import TrialState

from .atomic import atomic_write


def save_figure(fig, path: Path) -> Path:
    """Save a figure atomically as PNG and close it."""
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110,
                                                          bbox_inches="tight"))
    finally:
        plt.close(fig)


def plain_numbers(ax) -> None:
    """Losses as they are on the y axis: no "+3.716" offset above it with ticks in 0.0002 steps
    (matplotlib's default when the values are close together)."""
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")


def whole_numbers_on_x(ax) -> None:
    """Whole trial or epoch numbers on the x axis (no "2.5")."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _reference_lines(ax, study: optuna.Study) -> None:
    floor, baseline = study.user_attrs.get("floor"), study.user_attrs.get("markov_baseline")
    if baseline is not None:
        ax.axhline(baseline, color="tab:red", ls="--", lw=1, label=f"markov baseline {baseline:.3f}")
    if floor is not None:
        ax.axhline(floor, color="black", ls=":", lw=1, label=f"floor {floor:.3f}")


def history_figure(study: optuna.Study, pyplot: bool = True):
    """Each trial's value and the running best, with the markov baseline and the floor.

    ``pyplot=False``: on a figure of its own that pyplot never holds, for code that may run in
    a widget's thread (see ``widgets._axes``: the inline backend's flush would race it)."""
    if pyplot:
        fig, ax = plt.subplots(figsize=(8, 4.5))
    else:
        fig = Figure(figsize=(8, 4.5))
        ax = fig.subplots()
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = {t.number: t.intermediate_values[max(t.intermediate_values)] for t in trials
              if t.state == TrialState.PRUNED and t.intermediate_values}     # number → last report
    if pruned:
        ax.scatter(list(pruned), list(pruned.values()), marker="x", color="tab:gray",
                   label="pruned (last reported)")
    if done:
        xs = [t.number for t in done]
        ys = [t.value for t in done]
        ax.scatter(xs, ys, color="tab:blue", label="complete")
        ax.step(xs, np.minimum.accumulate(ys), where="post", color="tab:orange", lw=2,
                label="best so far")
    _reference_lines(ax, study)
    ax.set_xlabel("trial")
    ax.set_ylabel("validation loss (nats/note)")
    ax.set_title(f"Optimization history — {study.study_name}")
    plain_numbers(ax)
    whole_numbers_on_x(ax)
    _clip_y(ax, [t.value for t in done] + [study.user_attrs.get(k) or math.nan
                                           for k in ("floor", "markov_baseline")])
    top = ax.get_ylim()[1]
    above = sum(value > top for value in pruned.values())
    if above:
        ax.text(0.01, 0.98, f"{above} pruned trial{'s' if above > 1 else ''} above {top:.2f}, off the plot",
                transform=ax.transAxes, va="top", fontsize=8, color="tab:gray")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _clip_y(ax, values) -> None:
    """Keep a few awful trials from squashing the interesting range."""
    vals = np.array([v for v in values if v is not None and math.isfinite(v)])
    if len(vals) >= 3:
        lo, hi = vals.min(), np.quantile(vals, 0.9)
        pad = max(0.02, 0.1 * (hi - lo))
        ax.set_ylim(lo - pad, hi + 3 * pad)


def learning_curves_figure(study: optuna.Study):
    """Validation loss per epoch of every trial: complete in colour, pruned in grey dashes."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    trials = study.get_trials(deepcopy=False)
    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value,
               default=None)
    values = []
    for t in trials:
        if not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        ys = [t.intermediate_values[s] for s in steps]
        values += ys
        if t.state == TrialState.PRUNED:
            ax.plot(steps, ys, color="tab:gray", ls="--", lw=0.8, alpha=0.7)
            ax.plot(steps[-1], ys[-1], "x", color="tab:gray")
        elif t is best or (best is not None and t.number == best.number):
            ax.plot(steps, ys, color="tab:orange", lw=2.5, label=f"best (trial {t.number})", zorder=5)
        else:
            ax.plot(steps, ys, color="tab:blue", lw=1, alpha=0.6)
    ax.plot([], [], color="tab:blue", label="complete")
    ax.plot([], [], color="tab:gray", ls="--", label="pruned (× = stopped)")
    _reference_lines(ax, study)
    _clip_y(ax, values)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (nats/note)")
    ax.set_title("Learning curves of all trials")
    plain_numbers(ax)
    whole_numbers_on_x(ax)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def pruning_savings_figure(study: optuna.Study, max_epochs: int):
    """Epochs trained per trial, and the epochs pruning saved (what a full run would have cost)."""
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    nums = [t.number for t in trials]
    trained = [len(t.intermediate_values) for t in trials]
    saved = [max_epochs - n if t.state == TrialState.PRUNED else 0 for t, n in zip(trials, trained)]
    ax.bar(nums, trained, color="tab:blue", label="epochs trained")
    ax.bar(nums, saved, bottom=trained, color="tab:green", alpha=0.4, label="saved by pruning")
    total = sum(trained) + sum(saved)
    pct = 100 * sum(saved) / total if total else 0
    ax.set_title(f"Pruning saved {sum(saved)} of {total} epochs ({pct:.0f} %)")
    ax.set_xlabel("trial")
    ax.set_ylabel("epochs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def baseline_figure(study: optuna.Study):
    """The best trial against the markov baseline (and the floor for synthetic data)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    bars = {}
    if study.user_attrs.get("floor") is not None:
        bars["floor\n(generator)"] = study.user_attrs["floor"]
    if done:
        best = min(done, key=lambda t: t.value)
        bars[f"best trial {best.number}\n({best.user_attrs.get('config', {}).get('model', '')})"] = best.value
    if study.user_attrs.get("markov_baseline") is not None:
        bars["markov\nbaseline"] = study.user_attrs["markov_baseline"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    palette = {"floor": "black", "best": "tab:orange", "markov": "tab:red"}
    ax.bar(list(bars), list(bars.values()), color=[palette[k.split()[0]] for k in bars])
    for i, v in enumerate(bars.values()):
        ax.text(i, v, f"{v:.3f}\n({v / math.log(2):.2f} bits)", ha="center", va="bottom", fontsize=8)
    if bars:
        ax.set_ylim(min(bars.values()) * 0.9, max(bars.values()) * 1.08)
    ax.set_ylabel("validation loss (nats/note)")
    ax.set_title("Best model vs baselines (lower is better)")
    plain_numbers(ax)
    fig.tight_layout()
    return fig


def compare_figure(studies: list[optuna.Study]):
    """Best-so-far curves of several studies on one plot."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for study in studies:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if done:
            ax.step([t.number for t in done], np.minimum.accumulate([t.value for t in done]),
                    where="post", lw=2, label=f"{study.study_name} (best {min(t.value for t in done):.4f})")
    ax.set_xlabel("trial")
    ax.set_ylabel("best validation loss so far (nats/note)")
    ax.set_title("Studies compared")
    plain_numbers(ax)
    whole_numbers_on_x(ax)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def optuna_figure(kind: str, study: optuna.Study, **kwargs):
    """One of Optuna's matplotlib plots (importances, parallel_coordinate, slice, contour, timeline)."""
    from optuna.visualization import matplotlib as ovm
    fn = {"importances": ovm.plot_param_importances, "parallel_coordinate": ovm.plot_parallel_coordinate,
          "slice": ovm.plot_slice, "contour": ovm.plot_contour, "timeline": ovm.plot_timeline}[kind]
    with warnings.catch_warnings():     # Optuna's experimental warnings; colour bars vs tight_layout
        warnings.simplefilter("ignore")
        ax = fn(study, **kwargs)
        first = ax.flat[0] if isinstance(ax, np.ndarray) else ax
        fig = first.figure
        fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 4.5))
        if kind != "parallel_coordinate":   # its colour bar axes do not take tight_layout
            fig.tight_layout()
    return fig


def history_curves_figure(train_loss: list[float], val_loss: list[float], title: str = "Learning curves"):
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(len(train_loss)), train_loss, label="train")
    ax.plot(range(len(val_loss)), val_loss, label="validation")
    if val_loss:
        best = int(np.argmin(val_loss))
        ax.plot(best, val_loss[best], "o", color="tab:orange", label=f"best epoch {best}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats/note)")
    ax.set_title(title)
    plain_numbers(ax)
    whole_numbers_on_x(ax)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
