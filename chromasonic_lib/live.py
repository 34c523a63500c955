"""A study as it runs, in one notebook output area that is redrawn in place.

:class:`LiveView` is a search callback (like the progress bar: the objective knows nothing of
it); :func:`watch` follows a study that other workers are filling. Each frame is plain HTML
with the history figure embedded as PNG, plus a text fallback, so the last frame survives
papermill and HTML export. Outside an IPython kernel nothing is displayed.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import html
import io
import logging
import time
from typing import Any, Callable, Protocol

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from .imports import shown
from .search.results import curve, trial_config
from .throttle import Throttle
from .search.objectives import loss

log = logging.getLogger(__name__)

CSS_CLASS = "chromasonic-live"      # browser tests find the view by this class


class DisplayHandle(Protocol):
    """What ``IPython.display.display(..., display_id=True)`` returns."""

    def update(self, obj: Any, raw: bool = False) -> None: ...


def kernel() -> Any:
    """The running IPython kernel, or None in plain Python (scripts, tests, a terminal IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return getattr(get_ipython(), "kernel", None)


def attended() -> bool:
    """Whether a person's frontend runs this cell. JupyterLab (and VS Code) execute cells with
    ``allow_stdin``; papermill/nbclient never do, and no one could press a button there."""
    k = kernel()
    return bool(k is not None and getattr(k, "_allow_stdin", False))


def open_display(text: str) -> DisplayHandle | None:
    """A new output area showing ``text``, to be updated in place; None outside a kernel."""
    if kernel() is None:
        return None
    from IPython.display import display
    return display({"text/plain": text, "text/html": _div(html.escape(text), "starting")},
                   raw=True, display_id=True)


# ---------------------------------------------------------------- one frame
def figure_png(study: optuna.Study, dpi: int = 80) -> bytes:
    """The history figure as PNG bytes, drawn on a figure pyplot never holds: the Stop button
    calls this from the widget's thread, where the inline backend's flush would race it."""
    from .plots import history_figure
    buf = io.BytesIO()
    history_figure(study, pyplot=False).savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _value(t: FrozenTrial) -> str:
    if t.state == TrialState.COMPLETE:
        return f"{loss(t):.4f}"
    if t.state == TrialState.PRUNED and (c := curve(t)):
        last = max(c)
        where = f"after fold {last + 1}" if "folds" in t.user_attrs else f"at epoch {last}"
        return f"{c[last]:.4f} {where}"
    if t.state == TrialState.FAIL:
        return t.user_attrs.get("fail_reason", "")[:60]
    return ""


def params_text(t: FrozenTrial) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={shown(v)}"
                     for k, v in trial_config(t).items())


def trials_table(trials: list[FrozenTrial]) -> pd.DataFrame:
    """One row per trial: number, state, value (last report if pruned), seconds, parameters."""
    return pd.DataFrame([{"trial": t.number, "state": t.state.name.lower(), "value": _value(t),
                          "seconds": f"{t.duration.total_seconds():.1f}" if t.duration else "",
                          "parameters": params_text(t)} for t in trials],
                        columns=["trial", "state", "value", "seconds", "parameters"])


def counts_line(study: optuna.Study, trials: list[FrozenTrial], running_label: str) -> str:
    n = {s: sum(t.state == s for t in trials) for s in TrialState}
    return (f"study {study.study_name}: {n[TrialState.COMPLETE]} complete · "
            f"{n[TrialState.PRUNED]} pruned · {n[TrialState.FAIL]} failed · "
            f"{n[TrialState.RUNNING]} {running_label}")


def best_line(trials: list[FrozenTrial]) -> str:
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        return "no complete trial yet"
    best = min(done, key=loss)
    return f"best {loss(best):.4f} nats/note (trial {best.number}): {params_text(best)}"


def best_value(trials: list[FrozenTrial]) -> float | None:
    return min((loss(t) for t in trials if t.state == TrialState.COMPLETE), default=None)


def _div(body: str, state: str, **data: Any) -> str:
    attrs = "".join(f' data-{k}="{html.escape(str(v))}"' for k, v in data.items() if v is not None)
    return (f'<div class="{CSS_CLASS}" data-state="{state}"{attrs} '
            f'style="font-family: sans-serif; font-size: 13px">{body}</div>')


def _table_html(table: pd.DataFrame) -> str:
    """A plain table, left-aligned (notebook styles right-align a DataFrame's long parameter text)."""
    cell = 'style="text-align: left; padding: 1px 8px"'
    head = "".join(f"<th {cell}>{html.escape(str(c))}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(f"<td {cell}>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in table.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def frame(headline: str, lines: list[str], table: pd.DataFrame, table_title: str,
          png: bytes | None, state: str, progress: tuple[int, int] | None = None,
          **data: Any) -> dict[str, str]:
    """One frame as a MIME bundle: HTML (with the PNG inline) and the same words as plain text.

    ``state`` (running, finished, ...) and ``data`` become ``data-*`` attributes of the
    ``chromasonic-live`` element, for browser tests.
    """
    parts = [f'<div class="{CSS_CLASS}-headline" style="font-size: 15px"><b>'
             f'{html.escape(headline)}</b></div>']
    if progress is not None and progress[1]:
        parts.append(f'<progress value="{progress[0]}" max="{progress[1]}" '
                     f'style="width: 40em"></progress>')
    parts += [f"<div>{html.escape(line)}</div>" for line in lines]
    if png is not None:
        parts.append(f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
                     f'alt="optimization history" style="max-width: 100%">')
    if len(table):
        parts.append(f"<div><b>{html.escape(table_title)}</b></div>" + _table_html(table))
    text = "\n".join([headline, *lines]
                     + ([f"{table_title}:", table.to_string(index=False)] if len(table) else []))
    return {"text/html": _div("\n".join(parts), state, **data), "text/plain": text}


# ---------------------------------------------------------------- the search callback
class LiveView:
    """Optuna callback: the running search in one output area, updated in place.

    Shows the history figure (unless ``plot`` is False), the study's counts, the best value
    and its parameters and the last few trials. Redraws at most once per ``min_interval``
    seconds, and rarer when a frame is slow to draw (drawing takes at most ``max_share`` of
    the time), so a fast study is not slowed by it; :meth:`finish` always draws.
    """

    def __init__(self, handle: DisplayHandle, total: int, plot: bool = True, timeout: float = 0,
                 min_interval: float = 1.0, max_share: float = 0.05, last: int = 5,
                 clock: Callable[[], float] = time.monotonic):
        self.handle, self.total, self.plot, self.timeout = handle, total, plot, timeout
        self.last, self.clock = last, clock
        self.count = 0                  # trials this run has finished
        self.start = clock()
        self.throttle = Throttle(min_interval, max_share, clock)

    @property
    def draws(self) -> int:
        return self.throttle.count

    @property
    def draw_seconds(self) -> float:
        return self.throttle.seconds

    @classmethod
    def open(cls, study: optuna.Study, total: int, plot: bool = True,
             timeout: float = 0) -> "LiveView | None":
        """A view in a new output area, with the study's first frame; None outside a kernel."""
        handle = open_display(f"search starting: 0 of {total} trials")
        if handle is None:
            return None
        view = cls(handle, total, plot, timeout)
        view.draw(study)
        return view

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.count += 1
        if self.throttle.due():
            self.draw(study)

    def finish(self, study: optuna.Study, interrupted: bool = False) -> None:
        """The last frame: what this run did, the study as it is now."""
        self.draw(study, "interrupted" if interrupted else "finished")

    def draw(self, study: optuna.Study, state: str = "running") -> None:
        if self.handle is None:         # an earlier frame failed: the search goes on without
            return
        try:
            with self.throttle.timed():
                self.handle.update(self._frame(study, state), raw=True)
        except Exception as e:          # a display problem must never stop the search
            log.warning("live view stopped: %s: %s", type(e).__name__, e)
            self.handle = None

    def _frame(self, study: optuna.Study, state: str) -> dict[str, str]:
        trials = study.get_trials(deepcopy=False)
        best = best_value(trials)
        elapsed = self.clock() - self.start
        limit = f" · timeout {self.timeout:.0f} s" if self.timeout else ""
        best_txt = f" · best {best:.4f}" if best is not None else " · no complete trial yet"
        if state == "running":
            headline = f"trial {self.count} of {self.total}{best_txt}{limit}"
        else:
            headline = f"search {state}: {self.count}/{self.total} trials{best_txt} · {elapsed:.0f} s"
        rate = f" · {60 * self.count / elapsed:.1f} trials/min" if self.count and elapsed > 0 else ""
        lines = [counts_line(study, trials, "running on other workers") + f" · {elapsed:.0f} s{rate}",
                 best_line(trials)]
        finished = [t for t in trials if t.state.is_finished()]
        table = trials_table(finished[-self.last:][::-1])
        png = figure_png(study) if self.plot and best is not None else None
        return frame(headline, lines, table, f"last {len(table)} trials", png, state,
                     (self.count, self.total), trial=self.count, total=self.total,
                     best=None if best is None else f"{best:.4f}")


# ---------------------------------------------------------------- watching a study
class Watch:
    """The study's history and top trials, redrawn every ``interval`` seconds until Stop is
    pressed or no trial has been running for two refreshes in a row.

    The refreshes run as an asyncio task in the kernel's event loop, so the cell returns at
    once and the Stop button's clicks (and other cells) are processed in between.
    """

    def __init__(self, study: optuna.Study, handle: DisplayHandle, interval: float = 5.0,
                 top: int = 10, plot: bool = True):
        self.study, self.handle, self.interval, self.top, self.plot = study, handle, interval, top, plot
        self.refreshes, self.state = 0, "watching"
        self.task: asyncio.Task | None = None
        self.button = None

    def draw(self) -> list[FrozenTrial]:
        trials = self.study.get_trials(deepcopy=False)
        best = best_value(trials)
        now = dt.datetime.now().strftime("%H:%M:%S")
        running = sum(t.state == TrialState.RUNNING for t in trials)
        headline = {"watching": f"watching: {len(trials)} trials, {running} running",
                    "stopped": f"stopped watching: {len(trials)} trials",
                    "idle": f"no trial running any more: {len(trials)} trials",
                    "once": f"{len(trials)} trials, {running} running"}[self.state]
        headline += (f" · best {best:.4f}" if best is not None else "") + f" · {now}"
        done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=loss)
        png = figure_png(self.study) if self.plot and best is not None else None
        self.handle.update(frame(headline, [counts_line(self.study, trials, "running"),
                                            best_line(trials)],
                                 trials_table(done[:self.top]), f"top {min(self.top, len(done))} trials",
                                 png, self.state, trials=len(trials), running=running,
                                 best=None if best is None else f"{best:.4f}"), raw=True)
        self.refreshes += 1
        return trials

    async def run(self) -> None:
        quiet = 0
        try:
            while True:
                await asyncio.sleep(self.interval)
                trials = self.draw()
                quiet = 0 if any(t.state == TrialState.RUNNING for t in trials) else quiet + 1
                if quiet >= 2:          # a worker between two trials has none running for a moment
                    self.finish("idle")
                    return
        except Exception as e:          # say so in the view rather than dying silently in a task
            log.warning("watch stopped: %s: %s", type(e).__name__, e)
            self.finish("stopped")

    def stop(self, *_: Any) -> None:
        """Stop refreshing (the Stop button calls this); the view keeps its last frame."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.finish("stopped")

    def finish(self, state: str) -> None:
        if self.state != "watching":
            return
        self.state = state
        if self.button is not None:
            self.button.disabled, self.button.description = True, "stopped"
        try:
            self.draw()
        except Exception as e:
            log.warning("watch: the last frame failed: %s: %s", type(e).__name__, e)


def watch(study: optuna.Study, interval: float = 5.0, top: int = 10, plot: bool = True) -> Watch | None:
    """Follow ``study`` live in JupyterLab while other workers add trials; returns at once.

    Headless (papermill, nbconvert) or when no trial is running, the view is drawn once and
    nothing keeps running. Outside a kernel nothing is displayed (returns None).
    """
    if kernel() is None:
        return None
    for old in _WATCHES.pop(study.study_name, []):      # the cell run again: one poller per study
        old.stop()
    live = attended() and bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    button = None
    if live:
        import ipywidgets as W
        from IPython.display import display
        button = W.Button(description="Stop watching", icon="stop")
        display(button)
    w = Watch(study, open_display(f"watching study {study.study_name}"), interval, top, plot)
    if not live:
        w.state = "once"
        w.draw()
        return w
    w.button = button
    button.on_click(w.stop)
    w.draw()
    w.task = asyncio.ensure_future(w.run())
    _WATCHES.setdefault(study.study_name, []).append(w)
    return w


_WATCHES: dict[str, list[Watch]] = {}      # study name -> the watches refreshing it
