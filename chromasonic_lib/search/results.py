"""Result files in ``output_dir``, rewritten atomically after every trial.

The seed's names are kept: ``best_hyperparameters.json``, ``optimization_results.json``,
``optimization_report.txt``, ``optimization_history.png``; plus ``trials.csv`` and
``best_model.pt`` (kept by the checkpoint keeper). :class:`ResultFiles` keeps them current
during a search at a cost per trial that does not grow with the study.
"""
from __future__ import annotations

import csv
import datetime as dt
import heapq
import io
import json
import logging
import math
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..atomic import atomic_write
from ..throttle import Throttle

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


def summarize(study: optuna.Study, max_epochs: int | None = None,
              trials: list[FrozenTrial] | None = None) -> dict[str, Any]:
    """Counts, the best trial, wall time and the epochs that pruning saved.

    ``trials``: the study's trials, when the caller has just read them.
    """
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    max_epochs = max_epochs or study.user_attrs.get("config", {}).get("epochs")
    counts = {s.name.lower(): 0 for s in TrialState}
    best, start, end, epochs, saved = None, None, None, 0, 0
    for t in trials:                    # one pass: this runs after every trial of a long study
        counts[t.state.name.lower()] += 1
        epochs += len(t.intermediate_values)
        if t.state == TrialState.COMPLETE and (best is None or t.value < best.value):
            best = t
        elif t.state == TrialState.PRUNED and max_epochs:
            saved += max(0, max_epochs - len(t.intermediate_values))
        if t.datetime_start and (start is None or t.datetime_start < start):
            start = t.datetime_start
        if t.datetime_complete and (end is None or t.datetime_complete > end):
            end = t.datetime_complete
    return {
        "best_params": trial_config(best) if best else {},
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "n_trials": len(trials),
        "states": counts,
        "total_time": (end - start).total_seconds() if start and end else 0.0,
        "epochs_trained": epochs,
        "epochs_saved_by_pruning": saved if max_epochs else None,
    }


def report_text(study: optuna.Study, summary: dict[str, Any], top: int = 10,
                trials: list[FrozenTrial] | None = None, attrs: dict[str, Any] | None = None) -> str:
    """The human-readable report: the best trial and the top ten.

    ``trials`` and ``attrs`` (the study's user attributes): when the caller has just read them.
    """
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    attrs = study.user_attrs if attrs is None else attrs
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
    best = trials[summary["best_trial"]] if summary["best_trial"] < len(trials) else None
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
    done = heapq.nsmallest(top, (t for t in trials if t.state == TrialState.COMPLETE),
                           key=lambda t: t.value)
    for rank, t in enumerate(done, 1):
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial_config(t).items())
        lines.append(f"{rank:>4} {t.number:>5} {t.value:>10.4f}  {params}")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if failed:
        lines += ["", "FAILED:"]
        lines += [f"  trial {t.number}: {t.user_attrs.get('fail_reason', 'unknown reason')}" for t in failed]
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# trials.csv has Study.trials_dataframe()'s columns, each trial's cells rendered on their own
# (an int stays an int beside a failed trial's empty cell), so a finished trial's row is reused.
# Less one: each trial's checkpoint link ("artifacts:<id>" among its system attributes) would be
# a column of its own, filled in one row: a table growing as the square of the study.
CSV_ATTRS = ("number", "value", "datetime_start", "datetime_complete", "duration", "params",
             "user_attrs", "system_attrs", "state")


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, TrialState):
        return v.name
    if isinstance(v, dt.timedelta):         # as pandas writes one: "0 days 00:00:01.250000"
        hours, rest = divmod(v.seconds, 3600)
        fraction = f".{v.microseconds:06d}" if v.microseconds else ""
        return f"{v.days} days {hours:02d}:{rest // 60:02d}:{rest % 60:02d}{fraction}"
    return str(v)


def csv_cells(t: FrozenTrial) -> dict[tuple[int, str], str]:
    """A trial's cells of trials.csv, keyed by (attribute's place in CSV_ATTRS, nested name)."""
    cells = {}
    for i, attr in enumerate(CSV_ATTRS):
        value = getattr(t, attr)
        if isinstance(value, dict):
            cells.update(((i, str(k)), _cell(v)) for k, v in value.items()
                         if not str(k).startswith("artifacts:"))
        else:
            cells[(i, "")] = _cell(value)
    return cells


def _csv_line(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue()


class ResultFiles:
    """The result files of one search, kept current after every trial at a cost per trial that
    does not grow with the study.

    A finished trial never changes, so its JSON record and CSV row are rendered once and reused;
    best_hyperparameters.json is written when the best changes; the history PNG, whose drawing
    grows with its points, is redrawn at most every ``png_interval`` seconds (rarer when it is
    slow to draw) and always by ``write(study, final=True)``, which ``run_search`` calls at the
    end, also when interrupted.
    """

    def __init__(self, output_dir: Path, plot: bool = True, png_interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.output_dir, self.plot = output_dir, plot
        self.png = Throttle(png_interval, max_share=0.05, clock=clock)
        self._records: dict[int, str] = {}      # finished trial's number → its JSON record
        self._cells: dict[int, dict] = {}       # finished trial's number → its CSV cells
        self._lines: dict[int, str] = {}        # ... → its CSV line under self._columns
        self._columns: list[tuple[int, str]] = []
        self._best: str | None = None           # the text best_hyperparameters.json holds

    def write(self, study: optuna.Study, final: bool = False) -> dict[str, Any]:
        """Rewrite the files (the PNG when due, or ``final``); returns the summary."""
        trials = study.get_trials(deepcopy=False)
        attrs = study.user_attrs
        summary = summarize(study, attrs.get("config", {}).get("epochs"), trials)
        best = json.dumps(summary["best_params"], indent=2, default=str) + "\n"
        path = self.output_dir / "best_hyperparameters.json"
        if best != self._best or not path.exists():
            atomic_write(path, best)
            self._best = best
        self._write_json(study, trials, attrs, summary)
        atomic_write(self.output_dir / "optimization_report.txt",
                     report_text(study, summary, trials=trials, attrs=attrs))
        self._write_csv(trials)
        if self.plot and summary["best_value"] is not None and (final or self.png.due()):
            from ..plots import history_figure, save_figure
            with self.png.timed():
                save_figure(history_figure(study), self.output_dir / "optimization_history.png")
        return summary

    def _write_json(self, study: optuna.Study, trials: list[FrozenTrial], attrs: dict,
                    summary: dict[str, Any]) -> None:
        head = json.dumps({
            "timestamp": dt.datetime.now().isoformat(timespec="seconds"),
            "study_name": study.study_name,
            **summary,
            "floor": attrs.get("floor"),
            "markov_baseline": attrs.get("markov_baseline"),
            "data": attrs.get("data"),
            "config": attrs.get("config"),
        }, indent=2, default=str)
        records = ",\n".join(self._reuse(self._records, t, _json_record) for t in trials)
        # The records are spliced in as "trials", the last key, indented as json.dumps would.
        text = head[:-2] + (f',\n  "trials": [\n{records}\n  ]\n}}\n' if records else
                            ',\n  "trials": []\n}\n')
        atomic_write(self.output_dir / "optimization_results.json", text)

    def _write_csv(self, trials: list[FrozenTrial]) -> None:
        columns, rows = set(self._columns), []
        for t in trials:
            known = t.number in self._cells
            cells = self._reuse(self._cells, t, csv_cells)
            if not known and not cells.keys() <= columns:
                columns |= cells.keys()
            rows.append((t, cells))
        if len(columns) > len(self._columns):   # a new parameter or attribute: a new column
            self._columns = sorted(columns)
            self._lines.clear()
        lines = [_csv_line(["_".join(filter(None, (CSV_ATTRS[i], name))) for i, name in self._columns])]
        for t, cells in rows:
            lines.append(self._reuse(self._lines, t, lambda _, cells=cells: _csv_line(
                [cells.get(key, "") for key in self._columns])))
        atomic_write(self.output_dir / "trials.csv", "".join(lines) if trials else "")

    @staticmethod
    def _reuse(cache: dict[int, Any], t: FrozenTrial, render: Callable[[FrozenTrial], Any]) -> Any:
        """``render(t)``, kept for a finished trial (a running one is rendered afresh)."""
        if not t.state.is_finished():
            return render(t)
        if t.number not in cache:
            cache[t.number] = render(t)
        return cache[t.number]


def _json_record(t: FrozenTrial) -> str:
    return textwrap.indent(json.dumps(trial_record(t), indent=2, default=str), "    ")


def write_results(study: optuna.Study, output_dir: Path, plot: bool = True) -> dict[str, Any]:
    """(Re)write every result file now, the PNG included; returns the summary."""
    return ResultFiles(output_dir, plot).write(study, final=True)
