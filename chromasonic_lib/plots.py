"""Figures the notebooks show and the search saves: static matplotlib, fine headless and in HTML.

Optuna's own matplotlib plots are used where they say what we need; the learning curves,
pruning savings and baseline comparison are drawn here.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from .atomic import atomic_write
from .imports import shown
from .search.results import curve
from .search.objectives import loss
from .pyplot import plt


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
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def legend_below(ax, ncol: int, gap: float = 0.13) -> None:
    """The legend in a row (or rows) under the axes: inside, it covered the data of a study's
    plots (the trials in a corner, bars reaching the top, curves)."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -gap), ncol=ncol, fontsize=8, frameon=False)


def _reference_lines(ax, study: optuna.Study) -> list[float]:
    """The markov baseline and the floor as lines; their values, for the view to keep them in."""
    floor, baseline = study.user_attrs.get("floor"), study.user_attrs.get("markov_baseline")
    if baseline is not None:
        ax.axhline(baseline, color="tab:red", ls="--", lw=1, label=f"markov baseline {baseline:.3f}")
    if floor is not None:
        ax.axhline(floor, color="black", ls=":", lw=1, label=f"floor {floor:.3f}")
    return [v for v in (floor, baseline) if v is not None]


def history_figure(study: optuna.Study, pyplot: bool = True):
    """Each trial's value and the running best, with the markov baseline and the floor.

    ``pyplot=False``: on a figure of its own that pyplot never holds, for code that may run in
    a widget's thread (see ``widgets._axes``: the inline backend's flush would race it)."""
    if pyplot:
        fig, ax = plt.subplots(figsize=(8, 4.5))
    else:
        from matplotlib.figure import Figure
        fig = Figure(figsize=(8, 4.5))
        ax = fig.subplots()
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = {t.number: c[max(c)] for t in trials
              if t.state == TrialState.PRUNED and (c := curve(t))}         # number → last report
    if pruned:
        ax.scatter(list(pruned), list(pruned.values()), marker="x", color="tab:gray",
                   label="pruned (last reported)")
    if done:
        xs = [t.number for t in done]
        ys = [loss(t) for t in done]
        ax.scatter(xs, ys, color="tab:blue", label="complete")
        best = np.minimum.accumulate(ys)
        # Held to the last trial, complete or not: the pruned ones after the best ran too.
        ax.step(xs + [trials[-1].number], [*best, best[-1]], where="post", color="tab:orange", lw=2,
                label="best so far")
    refs = _reference_lines(ax, study)
    ax.set_xlabel("trial")
    ax.set_ylabel("validation loss (nats/note)")
    ax.set_title(f"Optimization history — {study.study_name}")
    plain_numbers(ax)
    whole_numbers_on_x(ax)
    _clip_y(ax, [loss(t) for t in done], refs)
    top = ax.get_ylim()[1]
    above = sum(value > top for value in pruned.values())
    if above:
        ax.text(0.01, 0.98, f"{above} pruned trial{'s' if above > 1 else ''} above {top:.2f}, off the plot",
                transform=ax.transAxes, va="top", fontsize=8, color="tab:gray")
    legend_below(ax, ncol=4)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _clip_y(ax, values, refs: list[float] = ()) -> None:
    """Keep a few awful trials from squashing the interesting range; the reference lines drawn
    (``refs``: markov baseline, floor) stay in it, or the legend would name a line not shown."""
    vals = np.array([v for v in values if v is not None and math.isfinite(v)])
    if len(vals) >= 3:
        lo, hi = min([vals.min(), *refs]), max([np.quantile(vals, 0.9), *refs])
        pad = max(0.02, 0.1 * (hi - lo))
        ax.set_ylim(lo - pad, hi + 3 * pad)


def cross_validated(study: optuna.Study) -> bool:
    """Its trials are cross-validations: their steps are folds, not epochs."""
    return bool((study.user_attrs.get("config") or {}).get("folds"))


def learning_curves_figure(study: optuna.Study):
    """Validation loss per epoch of every trial: complete in colour, pruned in grey dashes."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    trials = study.get_trials(deepcopy=False)
    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=loss,
               default=None)
    values = []
    for t in trials:
        c = curve(t)
        if not c:
            continue
        steps = sorted(c)
        ys = [c[s] for s in steps]
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
    refs = _reference_lines(ax, study)
    _clip_y(ax, values, refs)
    if cross_validated(study):
        ax.set_xlabel("fold (0 = the first)")
        ax.set_ylabel("mean loss over the folds so far (nats/note)")
        ax.set_title("Cross-validated trials, fold by fold")
    else:
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation loss (nats/note)")
        ax.set_title("Learning curves of all trials")
    plain_numbers(ax)
    whole_numbers_on_x(ax)
    legend_below(ax, ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def pruning_savings_figure(study: optuna.Study, max_epochs: int):
    """Epochs trained per trial, and the epochs pruning saved (what a full run would have cost)."""
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    nums = [t.number for t in trials]
    trained = [len(curve(t)) for t in trials]
    saved = [max_epochs - n if t.state == TrialState.PRUNED else 0 for t, n in zip(trials, trained)]
    unit = "folds" if cross_validated(study) else "epochs"
    ax.bar(nums, trained, color="tab:blue", label=f"{unit} trained")
    ax.bar(nums, saved, bottom=trained, color="tab:green", alpha=0.4, label="saved by pruning")
    total = sum(trained) + sum(saved)
    pct = 100 * sum(saved) / total if total else 0
    ax.set_title(f"Pruning saved {sum(saved)} of {total} {unit} ({pct:.0f} %)")
    ax.set_xlabel("trial")
    ax.set_ylabel(unit)
    whole_numbers_on_x(ax)
    legend_below(ax, ncol=2, gap=0.18)
    fig.tight_layout()
    return fig


def fold_differences_figure(table):
    """Each top trial's paired difference from the best, fold by fold, with its 95 % interval
    (``analysis.fold_differences``): an interval that includes 0 is no clear difference."""
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(len(table), 1)))
    rows = table.iloc[1:][::-1]             # the best itself is the reference line at 0
    y = np.arange(len(rows))
    lo = rows["difference"] - rows["ci95_low"]
    hi = rows["ci95_high"] - rows["difference"]
    colours = ["tab:red" if clear else "tab:gray" for clear in rows["clearly_worse"]]
    for k, colour in enumerate(colours):        # errorbar takes one colour a call
        ax.errorbar(rows["difference"].iloc[k], y[k], xerr=[[lo.iloc[k]], [hi.iloc[k]]], fmt="o",
                    color=colour, ecolor=colour, capsize=3)
    ax.axvline(0, color="tab:orange", lw=2)
    ax.set_yticks(y, [f"#{r} trial {t}" for r, t in zip(rows["rank"], rows["trial"])])
    ax.set_xlabel("bits/note worse than the best, paired over the same folds (95 % interval)")
    ax.set_title(f"How much of the lead is luck? Each against the best, trial {table.iloc[0]['trial']} "
                 "(orange)\ngrey: the interval includes 0, no clear difference", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def baseline_figure(study: optuna.Study):
    """The best trial against the markov baseline (and the floor for synthetic data)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    bars = {}
    if study.user_attrs.get("floor") is not None:
        bars["floor\n(generator)"] = study.user_attrs["floor"]
    if done:
        best = min(done, key=loss)
        bars[f"best trial {best.number}\n({shown(best.user_attrs.get('config', {}).get('model', ''))})"] = loss(best)
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
            ax.step([t.number for t in done], np.minimum.accumulate([loss(t) for t in done]),
                    where="post", lw=2, label=f"{study.study_name} (best {min(loss(t) for t in done):.4f})")
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
    """One of Optuna's matplotlib plots (importances, parallel_coordinate, slice, contour, timeline,
    pareto_front)."""
    from optuna.visualization import matplotlib as ovm
    fn = {"importances": ovm.plot_param_importances, "parallel_coordinate": ovm.plot_parallel_coordinate,
          "slice": ovm.plot_slice, "contour": ovm.plot_contour, "timeline": ovm.plot_timeline,
          "pareto_front": ovm.plot_pareto_front}[kind]
    with warnings.catch_warnings():     # Optuna's experimental warnings; colour bars vs tight_layout
        warnings.simplefilter("ignore")
        ax = fn(study, **kwargs)
        first = ax.flat[0] if isinstance(ax, np.ndarray) else ax
        fig = first.figure
        fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 4.5))
        if kind == "parallel_coordinate":   # room for each axis' ticks, and for the slanted names below
            fig.set_size_inches(min(max(fig.get_size_inches()[0], 1.6 * len(first.get_xticks())), 20), 5)
            fig.subplots_adjust(bottom=0.2)
        elif kind != "slice":               # their colour bars don't take tight_layout
            fig.tight_layout()
    if kind == "pareto_front" and len(study.directions) == 2:
        _label_front(first, study)
    return fig


def _label_front(ax, study: optuna.Study) -> None:
    """A two-objective front: each of its trials named by its number, and the size or latency
    on a log scale (a study's models span orders of magnitude)."""
    # Along the front, labels above and below in turn: neighbours close together don't overlap.
    for i, t in enumerate(sorted(study.best_trials, key=lambda t: t.values[0])):
        ax.annotate(str(t.number), (t.values[0], t.values[1]), textcoords="offset points",
                    xytext=(4, 3 if i % 2 == 0 else -10), fontsize=8, color="tab:red")
    if all(t.values[1] > 0 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
        ax.set_yscale("log")
    ax.set_title("Pareto front: the trials no other beats in both (red, by number)")
    names = {"Trial": "other trials", "Best Trial": "on the front"}
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [names.get(label.strip(), label) for label in labels])


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


# ---------------------------------------------------------------- per-note surprise (surprise.py)
IC_COLOUR, ENTROPY_COLOUR = "tab:red", "tab:blue"


def _one_melody(table, melody: str | None):
    """The rows of ``melody`` (a ``melody.id`` or ``melody.name``; default the table's first)."""
    from .errors import ConfigError
    if melody is None:
        melody = table["melody.id"].iloc[0]
    rows = table[(table["melody.id"] == melody) | (table["melody.name"] == melody)]
    if rows.empty:
        raise ConfigError(f"melody {melody!r} is not in the table; it has "
                          f"{', '.join(map(str, table['melody.name'].unique()[:5]))}, …")
    return rows.sort_values("note.id")


def _times(rows) -> tuple[np.ndarray, np.ndarray, str]:
    """Each note's onset and duration, and the time axis's label: quarter notes where the score
    gives them, else the note's number."""
    if rows["onset"].notna().all():
        return rows["onset"].to_numpy(float), rows["dur"].to_numpy(float), "time (quarter notes)"
    return rows["note.id"].to_numpy(float) - 1, np.ones(len(rows)), "note"


def _score_marks(axes, rows, onset: np.ndarray, dur: np.ndarray) -> None:
    """Bar lines (thin grey) and phrase ends (dashed, after the note a fermata ends) on every axis."""
    bars = np.unique(np.round(onset - rows["bar.offset"].to_numpy(float), 3)) if "bar.offset" in rows else []
    ends = (onset + dur)[rows["phrase"].to_numpy() == -1] if "phrase" in rows else []
    for ax in axes:
        for x in bars:
            ax.axvline(x, color="0.8", lw=0.6, zorder=0)
        for x in ends:
            ax.axvline(x, color="0.3", lw=1, ls="--", zorder=0)


def _piano_roll(ax, rows, onset: np.ndarray, dur: np.ndarray, marked: np.ndarray) -> None:
    pitch = rows["cpitch"].to_numpy(float)
    keys = ~np.isnan(pitch)
    ax.barh(pitch[keys], dur[keys] * 0.95, left=onset[keys], height=0.8, color="tab:purple")
    ax.barh(pitch[marked], dur[marked] * 0.95, left=onset[marked], height=0.8, color=IC_COLOUR)
    lo, hi = int(np.nanmin(pitch)), int(np.nanmax(pitch))
    ticks = [p for p in range(lo - 1, hi + 2) if p % 12 in (0, 4, 7)]    # every C, E and G
    from .data.encodings import midi_name
    ax.set_yticks(ticks, [midi_name(p) for p in ticks])
    ax.set_ylim(lo - 1.5, hi + 1.5)


def surprise_figure(table, melody: str | None = None, top: int = 5):
    """One melody's notes as a piano roll, and beneath it on the same time axis the model's
    information content at each note and its entropy before it (bits). The ``top`` most
    surprising notes are red in the roll and circled on the IC line; bar lines (grey) and phrase
    ends (dashed) where the score gives them. ``table``: ``surprise``'s or crossval's per-note table."""
    rows = _one_melody(table, melody)
    onset, dur, label = _times(rows)
    ic, h = rows["information.content"].to_numpy(), rows["entropy"].to_numpy()
    marked = np.zeros(len(rows), bool)
    marked[np.argsort(-ic)[:top]] = True
    fig, (roll, line) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True, height_ratios=[3, 2])
    _piano_roll(roll, rows, onset, dur, marked)
    _score_marks((roll, line), rows, onset, dur)
    line.step(onset, ic, where="post", color=IC_COLOUR, label="information content")
    line.step(onset, h, where="post", color=ENTROPY_COLOUR, alpha=0.8, label="entropy")
    line.plot(onset[marked], ic[marked], "o", mfc="none", mec=IC_COLOUR, ms=9)
    for x, y, n in zip(onset[marked], ic[marked], rows["note"].to_numpy()[marked]):
        line.annotate(n, (x, y), textcoords="offset points", xytext=(3, 4), fontsize=8)
    line.set_ylabel("bits")
    line.set_xlabel(label)
    line.set_ylim(0, max(ic.max(), h.max()) * 1.15)
    line.legend(loc="upper right", fontsize=8, ncol=2)
    roll.set_title(f"{rows['melody.name'].iloc[0]}: {ic.mean():.2f} bits/note "
                   f"(mean IC), mean entropy {h.mean():.2f} bits")
    fig.tight_layout()
    return fig


def surprise_comparison_figure(a, b, melody: str | None = None, labels: tuple[str, str] = ("A", "B")):
    """Two models' information content note by note on one melody: the piano roll, both IC
    lines, and B − A per note (below 0: B found the note less surprising)."""
    ra, rb = _one_melody(a, melody), _one_melody(b, melody if melody is not None else a["melody.id"].iloc[0])
    if len(ra) != len(rb):
        from .errors import ConfigError
        raise ConfigError(f"the two tables hold {len(ra)} and {len(rb)} notes of {melody!r}: not one melody")
    onset, dur, label = _times(ra)
    ia, ib = ra["information.content"].to_numpy(), rb["information.content"].to_numpy()
    diff = ib - ia
    fig, (roll, line, delta) = plt.subplots(3, 1, figsize=(11, 7), sharex=True, height_ratios=[3, 2, 1.6])
    _piano_roll(roll, ra, onset, dur, np.zeros(len(ra), bool))
    _score_marks((roll, line, delta), ra, onset, dur)
    line.step(onset, ia, where="post", color="tab:gray", label=f"{labels[0]}: {ia.mean():.2f} bits/note")
    line.step(onset, ib, where="post", color=IC_COLOUR, label=f"{labels[1]}: {ib.mean():.2f} bits/note")
    line.set_ylabel("IC (bits)")
    line.legend(loc="upper right", fontsize=8, ncol=2)
    delta.bar(onset, diff, width=np.minimum(dur, 1) * 0.8, align="edge",
              color=np.where(diff < 0, "tab:green", "tab:orange"))
    delta.axhline(0, color="black", lw=0.6)
    delta.set_ylabel("difference (bits)")
    delta.set_xlabel(label)
    roll.set_title(f"{ra['melody.name'].iloc[0]}: {labels[1]} against {labels[0]}, note by note "
                   f"\n(bars: {labels[1]} − {labels[0]}; green where {labels[1]} is less surprised)")
    fig.tight_layout()
    return fig


def melody_means_figure(means, label: int = 5):
    """Each melody's mean IC (``surprise.per_melody``), sorted, as a strip with the entropy beside
    it: which melodies the model finds hardest. The ``label`` hardest and easiest are named."""
    m = means.sort_values("mean.information.content").reset_index(drop=True)
    x = np.arange(len(m))
    named = np.array([*range(min(label, len(m))), *range(max(len(m) - label, label), len(m))], int)
    colour = np.full(len(m), IC_COLOUR, object)
    colour[named] = "darkred"
    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.bar(x, m["mean.information.content"], width=0.85, color=colour, alpha=0.75, label="mean IC")
    ax.plot(x, m["mean.entropy"], ".", color=ENTROPY_COLOUR, ms=4, label="mean entropy")
    # Names in two lists rather than over the bars: with a hundred melodies they would overlap.
    for side, rows, where in (("easiest", named[named < label], (0.01, 0.97)),
                              ("hardest", named[named >= label][::-1], (0.99, 0.97))):
        text = "\n".join([side] + [f"{m['melody.name'].iloc[k]}  {m['mean.information.content'].iloc[k]:.2f}"
                                   for k in rows])
        ax.text(*where, text, transform=ax.transAxes, fontsize=8, va="top",
                ha="left" if side == "easiest" else "right", family="monospace")
    ax.set_xticks([])
    ax.set_xlabel(f"{len(m)} melodies, easiest to hardest")
    ax.set_ylabel("bits/note")
    ax.set_ylim(0, m["mean.information.content"].max() * 1.45)
    ax.legend(loc="upper center", fontsize=8)
    ax.set_title("Mean information content per melody")
    fig.tight_layout()
    return fig


def ic_profile_figure(tables: dict):
    """Information content of several sets of melodies (``name → per-note table``, e.g. real
    test melodies against generated ones): its distribution, and its mean at each note position."""
    fig, (dist, prof) = plt.subplots(1, 2, figsize=(11, 3.8))
    top = max(float(t["information.content"].quantile(0.99)) for t in tables.values())
    bins = np.linspace(0, max(top, 1), 40)
    for name, t in tables.items():
        ic = t["information.content"]
        dist.hist(ic, bins=bins, density=True, alpha=0.5, label=f"{name}: {ic.mean():.2f} bits/note")
        by = t.groupby("note.id")["information.content"]
        mean, count = by.mean(), by.size()
        keep = count >= max(2, 0.2 * count.max())       # positions most melodies reach
        prof.plot(mean.index[keep], mean[keep], label=name)
    dist.set_xlabel("information content (bits)")
    dist.set_title("Distribution of IC")
    dist.legend(fontsize=8)
    prof.set_xlabel("note")
    prof.set_ylabel("mean IC (bits)")
    prof.set_title("Mean IC by position in the melody")
    prof.legend(fontsize=8)
    whole_numbers_on_x(prof)
    fig.tight_layout()
    return fig
