"""Interactive panels for JupyterLab. Headless runs (papermill) build them harmlessly."""
from __future__ import annotations

import ipywidgets as W
import optuna
from IPython.display import Audio, display
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .generate import PIANO_ROLL_SIZE
from .imports import shown, shown_config
from .plots import plain_numbers, whole_numbers_on_x
from .search.results import curve, trial_config
from .search.objectives import loss


def _axes(figsize: tuple[float, float]) -> Axes:
    """Axes on a figure of a callback's own, which it shows with ``display(ax.figure)``.

    Not a pyplot figure: a callback runs as the kernel handles a widget's comm message, and
    after every comm message the inline backend shows and closes every figure pyplot holds.
    JupyterLab sends widget messages over a kernel subshell, which ipykernel runs in a thread
    of its own, so that flush could draw the callback's figure while the callback draws it too
    (the bars came out shifted against the axes, left of 0) or close it before the callback
    shows it (no figure at all).
    """
    return Figure(figsize=figsize).subplots()


def trial_explorer(study: optuna.Study) -> W.Widget:
    """Pick a trial (optionally filter by model family) and see its curve and parameters."""
    trials = [t for t in study.trials if curve(t)]
    families = sorted({trial_config(t).get("model", "?") for t in trials})
    family = W.Dropdown(options=[("all", "all")] + [(shown(f), f) for f in families], description="family")
    pick = W.Dropdown(description="trial")
    out = W.Output()

    def refresh_options(*_):
        chosen = [t for t in trials if family.value == "all" or trial_config(t).get("model") == family.value]
        pick.options = [(f"{t.number} ({t.state.name.lower()}, {loss(t) or min(curve(t).values()):.4f})",
                         t.number) for t in chosen]

    def draw(*_):
        out.clear_output(wait=True)
        if pick.value is None:
            return
        t = study.trials[pick.value]
        with out:
            ax = _axes((6, 3))
            c = curve(t)
            steps = sorted(c)
            ax.plot(steps, [c[s] for s in steps], marker="o")
            folds = "folds" in t.user_attrs        # a cross-validated trial reports after each fold
            ax.set_xlabel("fold" if folds else "epoch")
            ax.set_ylabel("mean loss over its folds so far (nats/note)" if folds else "validation loss (nats/note)")
            ax.set_title(f"trial {t.number}: {t.state.name.lower()}")
            plain_numbers(ax)
            whole_numbers_on_x(ax)
            display(ax.figure)
            print("\n".join(f"{k} = {v}" for k, v in shown_config(trial_config(t)).items()))
            if "fail_reason" in t.user_attrs:
                print("failed:", t.user_attrs["fail_reason"])

    family.observe(refresh_options, "value")
    pick.observe(draw, "value")
    refresh_options()
    return W.VBox([W.HBox([family, pick]), out])


def generator_panel(run, cfg) -> W.Widget:
    """Temperature, length, primer and a Generate button that makes and plays a new melody."""
    from .best import generate_samples
    from .config import parse_primer
    temperature = W.FloatSlider(value=cfg.temperature, min=0.1, max=2.0, step=0.05, description="temperature")
    length = W.IntSlider(value=cfg.sample_length, min=8, max=512, step=8, description="length")
    primer = W.Text(value=cfg.primer, description="primer", placeholder="C4 D4 E4")
    button = W.Button(description="Generate", button_style="primary")
    out = W.Output()
    counter = {"n": 0}

    def on_click(_):
        out.clear_output(wait=True)
        counter["n"] += 1
        with out:
            try:
                notes = parse_primer("primer", primer.value)
            except ValueError as e:
                print(e)
                return
            sample = generate_samples(run, cfg, n=1, length=length.value, temperature=temperature.value,
                                      primer=notes, seed=run.configuration.data.seed + counter["n"])[0]
            print(sample.describe())
            display(Audio(filename=str(sample.wav)))
            display(sample.piano_roll(ax=_axes(PIANO_ROLL_SIZE)))

    button.on_click(on_click)
    return W.VBox([W.HBox([temperature, length]), W.HBox([primer, button]), out])
