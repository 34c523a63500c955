"""Reading a finished (or running) study for ``analysis.ipynb``."""
from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass, field

import optuna
import pandas as pd
from optuna.trial import TrialState

from .config.checks import check_bool, check_storage, check_study_name
from .config.namespace import FromNamespace
from .errors import ConfigError
from .folds import paired_difference
from .imports import shown_config
from .plots import optuna_figure
from .search.results import curve, front_records, report_text, summarize, trial_config
from .search.settings import stored_settings
from .search.study import load_existing_study
from .search.objectives import is_multi, loss
from .pyplot import plt

log = logging.getLogger(__name__)


@dataclass
class AnalysisConfig(FromNamespace):
    """Everything ``analysis.ipynb`` takes."""

    study_name: str = "melody-search"
    storage: str = field(default="sqlite:///runs/studies.db", repr=False)  # may hold a password
    compare: list = field(default_factory=list)
    watch: bool = False               # in JupyterLab: refresh the history while workers add trials

    def __post_init__(self) -> None:
        self.study_name = check_study_name("study_name", self.study_name)
        self.storage = check_storage("storage", self.storage)
        self.watch = check_bool("watch", self.watch)
        if isinstance(self.compare, str):
            self.compare = [s for s in re.split(r"[,\s]+", self.compare) if s]
        if not isinstance(self.compare, (list, tuple)):
            raise ConfigError(f"compare must be a list of study names, got {self.compare!r}")
        self.compare = [check_study_name("compare", s) for s in self.compare]


# Fewer complete trials than this, and the importances plot comes with a word of caution.
FEW_FOR_IMPORTANCES = 20
# The slice plot's panels a figure.
SLICES_PER_FIGURE = 4
# The parallel-coordinate plot's parameter axes (the most important).
PARALLEL_AXES = 6
# The complete trials the parallel-coordinate and contour plots wait for: with fewer, no range is
# seen to be shared, and the contour interpolates a landscape between a few points that isn't there.
FEW_FOR_SHAPES = 5


def load_study(cfg: AnalysisConfig, name: str | None = None) -> optuna.Study:
    """Load ``name`` (default: ``cfg.study_name``) from ``cfg.storage``; a missing one names the others."""
    return load_existing_study(cfg.storage, name or cfg.study_name)


def overview(study: optuna.Study) -> str:
    """The same text as ``optimization_report.txt``, read live from the storage."""
    return report_text(study, summarize(study))


def max_epochs(study: optuna.Study) -> int:
    """The most steps a trial reports: its epochs, or a cross-validated trial's folds."""
    settings = stored_settings(study)
    epochs = settings.get("folds") or settings.get("epochs")
    return epochs or max((len(curve(t)) for t in study.trials), default=1)


def complete_trials(study: optuna.Study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def top_params(study: optuna.Study, n: int | None = 2) -> list[str]:
    """The ``n`` most important parameters (PED-ANOVA; None: all of them, in that order), or the
    first ones when too few trials."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            names = list(optuna.importance.get_param_importances(study, **loss_target(study)))
    except Exception:
        names = list(dict.fromkeys(p for t in complete_trials(study) for p in t.params))
    return names[:n]


def show(kind: str, study: optuna.Study, **kwargs) -> None:
    """Draw an Optuna plot, or say why it can't be drawn yet (too few trials ...).

    Returns nothing: in a notebook the figure is shown once, by matplotlib's inline backend.
    """
    n = len(complete_trials(study))
    if kind == "timeline":
        if not study.trials:
            print("timeline: the study has no trial yet.")
            return
    elif kind in ("parallel_coordinate", "contour") and n < FEW_FOR_SHAPES:
        print(f"{kind}: {n} complete trials are too few to show where the good ones lie; it is drawn "
              f"once {FEW_FOR_SHAPES} are complete.")
        return
    elif n < 2:
        print(f"{kind}: needs at least two complete trials; this study has {n}.")
        return
    if kind == "importances" and n < FEW_FOR_IMPORTANCES:
        print(f"importances: from {n} complete trials they are mostly chance, and their order may "
              f"change with the next trials (it settles after a few dozen).")
    if kind not in ("timeline", "pareto_front") and "target" not in kwargs:
        kwargs = {**kwargs, **loss_target(study)}
    figures = [kwargs]
    if kind == "slice" and kwargs.get("params") is None:
        # Optuna draws every parameter in one row: with ten, each panel is a sliver. A few a
        # figure here, the most important in the first.
        names = top_params(study, n=None)
        figures = [{**kwargs, "params": names[i:i + SLICES_PER_FIGURE]}
                   for i in range(0, len(names), SLICES_PER_FIGURE)]
    if kind == "parallel_coordinate" and kwargs.get("params") is None:
        # Optuna's axes share one row and their tick labels overlap past a few: the most important.
        names = top_params(study, n=None)
        if len(names) > PARALLEL_AXES:
            chance = (f"; from {n} complete trials that ranking is mostly chance" if n < FEW_FOR_IMPORTANCES
                      else "")
            print(f"parallel_coordinate: the {PARALLEL_AXES} most important of {len(names)} parameters"
                  f"{chance} (others: analysis.show(\"parallel_coordinate\", study, params=[...])).")
        figures = [{**kwargs, "params": names[:PARALLEL_AXES]}]
    for args in figures:
        try:
            optuna_figure(kind, study, **args)
        except Exception as e:          # e.g. a contour with a single parameter
            print(f"{kind}: cannot be drawn for this study ({type(e).__name__}: {e})")


def loss_target(study: optuna.Study) -> dict:
    """What Optuna's single-objective plots read of a multi-objective study: the loss."""
    return {"target": loss, "target_name": "nats/note"} if is_multi(study) else {}


def pareto(study: optuna.Study) -> pd.DataFrame | None:
    """A multi-objective study's Pareto front as a table (bits/note, parameters, ms/note), its
    plot drawn above it; None (and a word) for a study with one objective."""
    if not is_multi(study):
        print("Only for a multi-objective study (objectives: [bits_per_note, n_params] or "
              "[bits_per_note, ms_per_note]); this one minimizes bits/note alone.")
        return None
    front = front_records(study)
    if not front:
        print("pareto_front: no trial is complete yet.")
        return None
    show("pareto_front", study)
    plt.show()          # the plot now, above the table (the notebook would draw it after)
    return pd.DataFrame([{"trial": r["number"], "bits/note": r["bits_per_note"], "parameters": r["n_params"],
                          "ms/note": r["ms_per_note"], **shown_config(r["config"])} for r in front])


def top_trials(study: optuna.Study, n: int = 10) -> pd.DataFrame:
    rows = []
    for t in sorted(complete_trials(study), key=loss)[:n]:
        rows.append({"trial": t.number, "nats/note": loss(t),
                     "bits/note": t.user_attrs.get("val_bits_per_note", t.user_attrs.get("bits_per_note")),
                     "accuracy": t.user_attrs.get("val_accuracy"),
                     "epochs": t.user_attrs.get("epochs_trained"),
                     "seconds": t.user_attrs.get("train_seconds"),
                     "weights": t.user_attrs.get("n_params"), **shown_config(trial_config(t))})
    return pd.DataFrame(rows)


def fold_differences(study: optuna.Study, n: int = 5) -> pd.DataFrame:
    """The ``n`` best cross-validated trials, each against the best on the same folds: the mean
    of the notes-weighted per-fold differences (bits/note: the difference of the trials' values)
    with its 95 % interval (``folds.paired_difference``).
    Is #1 really better than #2? Empty for a study whose trials are not cross-validated."""
    done = sorted((t for t in complete_trials(study) if "folds" in t.user_attrs), key=loss)[:n]
    rows = []
    for rank, t in enumerate(done, 1):
        # Each fold weighted by its notes (k·n_i/N), so the mean difference is the difference of
        # the trials' values (pooled over every note), the figure they are ranked by.
        folds = t.user_attrs["folds"]
        total = sum(f["notes"] for f in folds)
        bits = [len(folds) * f["notes"] / total * f["nats_per_note"] / math.log(2) for f in folds]
        if rank == 1:
            best_bits, d = bits, {"mean_difference": 0.0, "ci95": [0.0, 0.0], "excludes_zero": False}
        else:
            d = paired_difference(best_bits, bits)
        rows.append({"rank": rank, "trial": t.number, "bits/note": loss(t) / math.log(2),
                     "difference": d["mean_difference"], "ci95_low": d["ci95"][0],
                     "ci95_high": d["ci95"][1], "clearly_worse": d["excludes_zero"]})
    return pd.DataFrame(rows, columns=["rank", "trial", "bits/note", "difference", "ci95_low",
                                       "ci95_high", "clearly_worse"])
