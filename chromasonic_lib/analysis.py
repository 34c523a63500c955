"""Reading a finished (or running) study for ``analysis.ipynb``."""
from __future__ import annotations

import logging
import warnings

import optuna
import pandas as pd
from optuna.trial import TrialState

from .config import AnalysisConfig
from .plots import optuna_figure
from .search.results import report_text, summarize, trial_config
from .search.settings import stored_settings
from .search.study import load_existing_study

log = logging.getLogger(__name__)


def load_study(cfg: AnalysisConfig, name: str | None = None) -> optuna.Study:
    """Load ``name`` (default: ``cfg.study_name``) from ``cfg.storage``; a missing one names the others."""
    return load_existing_study(cfg.storage, name or cfg.study_name)


def overview(study: optuna.Study) -> str:
    """The same text as ``optimization_report.txt``, read live from the storage."""
    return report_text(study, summarize(study))


def max_epochs(study: optuna.Study) -> int:
    epochs = stored_settings(study).get("epochs")
    return epochs or max((len(t.intermediate_values) for t in study.trials), default=1)


def complete_trials(study: optuna.Study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def top_params(study: optuna.Study, n: int = 2) -> list[str]:
    """The ``n`` most important parameters (PED-ANOVA), or the first ones when too few trials."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            names = list(optuna.importance.get_param_importances(study))
    except Exception:
        names = list(dict.fromkeys(p for t in complete_trials(study) for p in t.params))
    return names[:n]


def show(kind: str, study: optuna.Study, **kwargs) -> None:
    """Draw an Optuna plot, or say why it can't be drawn yet (too few trials ...).

    Returns nothing: in a notebook the figure is shown once, by matplotlib's inline backend.
    """
    if kind == "timeline":
        if not study.trials:
            print("timeline: the study has no trial yet.")
            return
    elif len(complete_trials(study)) < 2:
        print(f"{kind}: needs at least two complete trials; this study has "
              f"{len(complete_trials(study))}.")
        return
    try:
        optuna_figure(kind, study, **kwargs)
    except Exception as e:          # e.g. a contour with a single parameter
        print(f"{kind}: cannot be drawn for this study ({type(e).__name__}: {e})")


def top_trials(study: optuna.Study, n: int = 10) -> pd.DataFrame:
    rows = []
    for t in sorted(complete_trials(study), key=lambda t: t.value)[:n]:
        rows.append({"trial": t.number, "nats/note": t.value,
                     "bits/note": t.user_attrs.get("val_bits_per_note"),
                     "accuracy": t.user_attrs.get("val_accuracy"),
                     "epochs": t.user_attrs.get("epochs_trained"),
                     "seconds": t.user_attrs.get("train_seconds"),
                     "weights": t.user_attrs.get("n_params"), **trial_config(t)})
    return pd.DataFrame(rows)
