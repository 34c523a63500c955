"""Result files in ``output_dir``, rewritten atomically after every trial.

The original script's names are kept: ``best_hyperparameters.json``, ``optimization_results.json``,
``optimization_report.txt``, ``optimization_history.png``; plus ``trials.csv`` and
``best_model.pt`` (kept by the checkpoint keeper). :class:`ResultFiles` keeps them current
during a search at a cost per trial that does not grow with the study.
"""
from __future__ import annotations

import bisect
import copy
import csv
import datetime as dt
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

from ..imports import shown, shown_config
from ..atomic import atomic_write, write_json
from ..throttle import Throttle
from .housekeeping import Chores
from .objectives import is_multi, loss

log = logging.getLogger(__name__)

FILES = ("best_hyperparameters.json", "optimization_results.json", "optimization_report.txt",
         "optimization_history.png", "trials.csv")


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def trial_config(t: FrozenTrial) -> dict[str, Any]:
    """The flat parameter dict of a trial, as ``train_best`` and the API take it."""
    return dict(t.user_attrs.get("config") or t.params)


def curve(t: FrozenTrial) -> dict[int, float]:
    """A trial's loss step by step, as the views draw and count it: each epoch's validation loss,
    or for a cross-validated trial the running nats/note after each fold (from its ``folds``
    attribute: its reports may be per melody, for the paired pruner). A multi-objective study's
    trials report nothing: their epochs' losses are the ``val_curve`` attribute."""
    folds = t.user_attrs.get("folds")
    if "val_curve" in t.user_attrs:
        return dict(enumerate(t.user_attrs["val_curve"]))
    if not folds:
        return dict(t.intermediate_values)
    out, notes, nats = {}, 0, 0.0
    for i, f in enumerate(folds):
        notes, nats = notes + f["notes"], nats + f["notes"] * f["nats_per_note"]
        out[i] = nats / notes
    return out


def front_records(study: optuna.Study) -> list[dict[str, Any]]:
    """The study's Pareto front (Optuna's ``best_trials``), by loss: each trial's number, its
    three figures and its configuration."""
    out = []
    for t in sorted(study.best_trials, key=lambda t: (loss(t), t.number)):
        out.append({"number": t.number, "bits_per_note": loss(t) / math.log(2),
                    "n_params": t.user_attrs.get("n_params"), "ms_per_note": t.user_attrs.get("ms_per_note"),
                    "values": list(t.values), "config": trial_config(t)})
    return out


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name,
        "params": t.params,
        "config": trial_config(t),
        "value": _finite(loss(t)),
        **({"values": [_finite(v) for v in t.values]} if t.values and len(t.values) > 1 else {}),
        "intermediate_values": {str(k): _finite(v) for k, v in sorted(t.intermediate_values.items())},
        "duration": t.duration.total_seconds() if t.duration else None,
        "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
        "user_attrs": {k: v for k, v in t.user_attrs.items() if k != "config"},
    }


class Tally:
    """Counts, the best trials, time span and epochs of trials added one at a time: what the
    summary and the report say, kept across the writes of a search so that each write adds
    only the trials that finished since."""

    def __init__(self, max_epochs: int | None, top: int = 10):
        self.max_epochs, self.top_n = max_epochs, top
        self.counts = {s.name.lower(): 0 for s in TrialState}
        self.n, self.epochs, self.saved = 0, 0, 0
        self.start: dt.datetime | None = None
        self.end: dt.datetime | None = None
        self.top: list[FrozenTrial] = []        # the best complete trials, best first
        self.failed: list[FrozenTrial] = []

    def add(self, t: FrozenTrial) -> None:
        self.n += 1
        self.counts[t.state.name.lower()] += 1
        self.epochs += len(curve(t))
        if t.state == TrialState.COMPLETE:
            if len(self.top) < self.top_n or loss(t) < loss(self.top[-1]):
                bisect.insort(self.top, t, key=loss)   # after equal values: stable
                del self.top[self.top_n:]
        elif t.state == TrialState.PRUNED and self.max_epochs:
            self.saved += max(0, self.max_epochs - len(curve(t)))
        elif t.state == TrialState.FAIL:
            self.failed.append(t)
        if t.datetime_start and (self.start is None or t.datetime_start < self.start):
            self.start = t.datetime_start
        if t.datetime_complete and (self.end is None or t.datetime_complete > self.end):
            self.end = t.datetime_complete

    def plus(self, trials: list[FrozenTrial]) -> "Tally":
        """A new tally of these trials and ``trials``."""
        out = copy.copy(self)
        out.counts, out.top, out.failed = dict(self.counts), list(self.top), list(self.failed)
        for t in trials:
            out.add(t)
        return out

    def summary(self) -> dict[str, Any]:
        best = self.top[0] if self.top else None
        return {
            "best_params": trial_config(best) if best else {},
            "best_value": loss(best) if best else None,
            "best_trial": best.number if best else None,
            "n_trials": self.n,
            "states": dict(self.counts),
            "total_time": (self.end - self.start).total_seconds() if self.start and self.end else 0.0,
            "epochs_trained": self.epochs,
            "epochs_saved_by_pruning": self.saved if self.max_epochs else None,
        }


def max_steps(config: dict[str, Any]) -> int | None:
    """The most steps a trial of a study reports: its epochs, or a cross-validated trial's folds."""
    return config.get("folds") or config.get("epochs")


def _tally(study: optuna.Study, max_epochs: int | None = None, top: int = 10) -> Tally:
    max_epochs = max_epochs or max_steps(study.user_attrs.get("config", {}))
    return Tally(max_epochs, top).plus(study.get_trials(deepcopy=False))


def summarize(study: optuna.Study, max_epochs: int | None = None) -> dict[str, Any]:
    """Counts, the best trial, wall time and the epochs that pruning saved."""
    return _tally(study, max_epochs).summary()


def report_text(study: optuna.Study, summary: dict[str, Any], top: int = 10) -> str:
    """The human-readable report: the best trial and the top ten."""
    return _report(study, study.user_attrs, summary, _tally(study, top=top),
                   front_records(study) if is_multi(study) else None)


def _report(study: optuna.Study, attrs: dict[str, Any], summary: dict[str, Any], tally: Tally,
            front: list[dict[str, Any]] | None = None) -> str:
    lines = [f"Chromasonic Lab — study {study.study_name!r}",
             f"written {dt.datetime.now().isoformat(timespec='seconds')}", ""]
    cfg = attrs.get("config", {})
    if cfg:
        lines.append(f"data: {attrs.get('data', cfg.get('dataset'))}")
        lines.append(f"model: {shown(cfg.get('model'))}, sampler: {cfg.get('sampler')}, pruner: "
                     f"{cfg.get('pruner')}, up to {cfg.get('epochs')} epochs per trial")
        if cfg.get("folds"):
            lines.append(f"measured on: {cfg['folds']} folds of every melody but the "
                         f"{cfg.get('test_fraction')} held out for train_best's test (seed "
                         f"{cfg.get('seed')}), each trial cross-validated as crossval does; the value "
                         "is nats/note over all their notes")
        else:
            lines.append(f"measured on: seed {cfg.get('seed')}, {cfg.get('val_fraction')} of the melodies "
                         f"validate, {cfg.get('test_fraction')} are held out for train_best's test")
    s = summary["states"]
    lines.append(f"trials: {summary['n_trials']} ({s['complete']} complete, {s['pruned']} pruned, "
                 f"{s['fail']} failed, {s['running']} running) in {summary['total_time']:.0f} s")
    if summary["epochs_saved_by_pruning"] is not None:
        unit = "folds" if cfg.get("folds") else "epochs"
        lines.append(f"{unit} trained: {summary['epochs_trained']}; saved by pruning: "
                     f"{summary['epochs_saved_by_pruning']}")
    lines.append("")
    if summary["best_value"] is None:
        lines.append("No trial has completed yet.")
        return "\n".join(lines) + "\n"
    best = tally.top[0]
    bits = summary["best_value"] / math.log(2)
    scored = f"cross-validated over {cfg['folds']} folds" if cfg.get("folds") else "on the validation melodies"
    lines.append(f"BEST: trial {summary['best_trial']}: {summary['best_value']:.4f} nats/note "
                 f"({bits:.3f} bits/note) {scored}")
    for name, label in (("floor", "floor (the generator's own loss)"),
                        ("markov_baseline", "markov baseline")):
        if attrs.get(name) is not None:
            lines.append(f"  {label}: {attrs[name]:.4f}  (best − it = "
                         f"{summary['best_value'] - attrs[name]:+.4f})")
    for k, v in shown_config(summary["best_params"]).items():   # the full path: best_hyperparameters.json
        lines.append(f"  {k:>16} = {v}")
    ua = best.user_attrs
    if "n_params" in ua:
        line = f"  {ua['n_params']:,} weights, {ua.get('epochs_trained')} epochs"
        if "folds" in ua:       # a cross-validated trial trains K models: no one run's time or accuracy
            line += f" over {len(ua['folds'])} folds"
        elif "val_accuracy" in ua:
            line += f", {ua['train_seconds']:.1f} s, accuracy {ua['val_accuracy']:.3f}"
        lines.append(line)
    lines += ["", f"TOP {tally.top_n}:", f"{'rank':>4} {'trial':>5} {'nats/note':>10}  parameters"]
    for rank, t in enumerate(tally.top, 1):
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial_config(t).items())
        lines.append(f"{rank:>4} {t.number:>5} {loss(t):>10.4f}  {params}")
    if front is not None:
        lines += ["", "PARETO FRONT (pareto_front.json):",
                  f"{'trial':>5} {'bits/note':>10} {'parameters':>11} {'ms/note':>8}"]
        lines += [f"{r['number']:>5} {r['bits_per_note']:>10.4f} {r['n_params']:>11,} {r['ms_per_note']:>8.3f}"
                  for r in front]
    if tally.failed:
        lines += ["", "FAILED:"]
        lines += [f"  trial {t.number}: {t.user_attrs.get('fail_reason', 'unknown reason')}"
                  for t in tally.failed]
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(shown(v))


# trials.csv has Study.trials_dataframe()'s columns, each trial's cells rendered on their own
# (an int stays an int beside a failed trial's empty cell), so a finished trial's row is reused.
# Less two: each trial's checkpoint link ("artifacts:<id>" among its system attributes) would be
# a column of its own, filled in one row: a table growing as the square of the study; and the
# token of the call that created it ("chromasonic:created_by"), which means nothing to a reader.
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
        value = loss(t) if attr == "value" else getattr(t, attr)     # the loss, however many objectives
        if isinstance(value, dict):
            cells.update(((i, str(k)), _cell(v)) for k, v in value.items()
                         if not str(k).startswith(("artifacts:", "chromasonic:")))
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

    Finished trials never change: those numbered below the first unfinished one are tallied,
    and their JSON records and CSV lines rendered, once; each write adds the newer trials to
    that. best_hyperparameters.json is written when the best changes. The files that hold
    every trial (optimization_results.json, trials.csv, the report), whose size grows with the
    study, are rewritten at most every ``files_interval`` seconds and within 2 % of the time
    (0: after every trial);
    the history PNG at most every ``png_interval`` seconds, within 5 %. Both are written always
    by ``write(study, final=True)``, which ``run_search`` calls at the end, also when
    interrupted or stopped by an error. With ``chores``, a file
    that can't be written (disk full) is the chores' to log; the summary is returned anyway.
    """

    def __init__(self, output_dir: Path, plot: bool = True, png_interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, chores: Chores | None = None,
                 files_interval: float = 1.0):
        self.output_dir, self.plot = output_dir, plot
        # During a search, writing the files is housekeeping: a full disk is logged once and
        # the files are written again after the next trial. Without chores, errors raise.
        self.chores = chores
        self.png = Throttle(png_interval, max_share=0.05, clock=clock)
        self.files = Throttle(files_interval, max_share=0.02, clock=clock)
        self._best: str | None = None   # the text best_hyperparameters.json holds
        self._start(None)

    def _start(self, max_epochs: int | None) -> None:
        self._done = Tally(max_epochs)  # trials[:n], all finished, n = self._done.n
        self._records: list[str] = []   # their JSON records
        self._cells: list[dict] = []    # their CSV cells
        self._lines: list[str] = []     # their CSV lines, under self._columns
        self._columns: list[tuple[int, str]] = []

    def write(self, study: optuna.Study, final: bool = False) -> dict[str, Any]:
        """Rewrite the files (the PNG when due, or ``final``); returns the summary."""
        trials = study.get_trials(deepcopy=False)
        attrs = study.user_attrs
        max_epochs = max_steps(attrs.get("config", {}))
        if max_epochs != self._done.max_epochs:         # the study was set up since: start over
            self._start(max_epochs)
        n = self._done.n
        while n < len(trials) and trials[n].state.is_finished():
            self._add(trials[n])
            n += 1
        tail = trials[n:]               # running trials, and those after them
        tally = self._done.plus(tail)
        summary = tally.summary()
        self._write_best(summary)
        if final or not self.files.min_interval or self.files.count == 0 or self.files.due():
            self._chore(f"result files in {self.output_dir}", self._write_files, study, attrs,
                        summary, tally, tail)
        if self.plot and summary["best_value"] is not None and (final or self.png.due()):
            self._chore("the history figure (optimization_history.png)", self._draw, study)
        return summary

    def _chore(self, name: str, fn: Callable, *args) -> Any:
        if self.chores is None:
            return fn(*args)
        return self.chores.run(name, fn, *args)[0]

    def _write_best(self, summary: dict[str, Any]) -> None:
        best = json.dumps(summary["best_params"], indent=2, default=str) + "\n"
        path = self.output_dir / "best_hyperparameters.json"
        if best != self._best or not path.exists():
            if self._chore(f"result files in {self.output_dir}", atomic_write, path, best) is not None:
                self._best = best

    def _write_files(self, study: optuna.Study, attrs: dict, summary: dict[str, Any], tally: Tally,
                     tail: list[FrozenTrial]) -> None:
        with self.files.timed():
            self._write_json(study, attrs, summary, tail)
            front = front_records(study) if is_multi(study) else None
            atomic_write(self.output_dir / "optimization_report.txt", _report(study, attrs, summary, tally, front))
            self._write_csv(tail)
            if front is not None:
                write_json(self.output_dir / "pareto_front.json", front)

    def _draw(self, study: optuna.Study) -> None:
        from ..plots import history_figure, save_figure
        with self.png.timed():
            save_figure(history_figure(study), self.output_dir / "optimization_history.png")

    def _add(self, t: FrozenTrial) -> None:
        self._done.add(t)
        self._records.append(_json_record(t))
        cells = csv_cells(t)
        self._cells.append(cells)
        if cells.keys() <= set(self._columns):
            self._lines.append(self._csv_line(cells))
        else:                           # a new parameter or attribute: every line gets its column
            self._set_columns(cells.keys())

    def _set_columns(self, new) -> None:
        self._columns = sorted(set(self._columns) | set(new))
        self._lines = [self._csv_line(cells) for cells in self._cells]

    def _csv_line(self, cells: dict) -> str:
        return _csv_line([cells.get(key, "") for key in self._columns])

    def _write_json(self, study: optuna.Study, attrs: dict, summary: dict[str, Any],
                    tail: list[FrozenTrial]) -> None:
        head = json.dumps({
            "timestamp": dt.datetime.now().isoformat(timespec="seconds"),
            "study_name": study.study_name,
            **summary,
            "floor": attrs.get("floor"),
            "markov_baseline": attrs.get("markov_baseline"),
            "data": attrs.get("data"),
            "config": attrs.get("config"),
        }, indent=2, default=str)
        records = ",\n".join(self._records + [_json_record(t) for t in tail])
        # The records are spliced in as "trials", the last key, indented as json.dumps would.
        text = head[:-2] + (f',\n  "trials": [\n{records}\n  ]\n}}\n' if records else
                            ',\n  "trials": []\n}\n')
        atomic_write(self.output_dir / "optimization_results.json", text)

    def _write_csv(self, tail: list[FrozenTrial]) -> None:
        cells = [csv_cells(t) for t in tail]
        new = set().union(*cells) - set(self._columns)
        if new:
            self._set_columns(new)
        lines = self._lines + [self._csv_line(c) for c in cells]
        header = _csv_line(["_".join(filter(None, (CSV_ATTRS[i], name))) for i, name in self._columns])
        atomic_write(self.output_dir / "trials.csv", header + "".join(lines) if lines else "")


def _json_record(t: FrozenTrial) -> str:
    return textwrap.indent(json.dumps(trial_record(t), indent=2, default=str), "    ")


def write_results(study: optuna.Study, output_dir: Path, plot: bool = True) -> dict[str, Any]:
    """(Re)write every result file now, the PNG included; returns the summary."""
    return ResultFiles(output_dir, plot).write(study, final=True)
