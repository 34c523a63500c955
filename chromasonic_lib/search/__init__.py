"""The search: ``run_search(cfg)`` runs an Optuna study and keeps its result files current."""
from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from tqdm.auto import tqdm

from ..config import TrainConfig, check_writable_dir
from ..data import Prepared, load_data, prepare
from ..folds import FoldSet, Recipe, pooled
from ..imports import is_own, shown
from ..models import build_model, check_model
from ..training import train
from ..live import LiveView
from ..checkpoints import (CheckpointKeeper, default_artifact_location, open_artifact_store,
                           probe_artifact_store, study_store_location)
from .config import SearchConfig
from .devices import DeviceSlots, OneAtATime, parse_devices, stop_on_interrupt
from .faults import UNTOLD, optimize, tell_untold
from .heartbeat import JournalHeartbeat
from .housekeeping import CHORES
from .objective import Objective, pruned_words
from .results import ResultFiles, curve, trial_config, write_results
from .settings import check_resume, stored_settings, study_settings
from .space import SearchSpace, load_space
from .study import create_study, open_storage
from .objectives import loss

log = logging.getLogger(__name__)

__all__ = ["run_search", "SearchResult", "load_space", "SearchSpace", "open_storage",
           "write_results", "markov_baseline"]


@dataclass
class SearchResult:
    """What a search leaves: the study, its best trial, and where the files are."""

    study: optuna.Study
    best_params: dict[str, Any]
    best_value: float | None
    n_trials: int
    total_time: float
    output_dir: Path
    floor: float | None = None
    markov_baseline: float | None = None
    interrupted: bool = False
    summary: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The original script's return value: best_params, best_value, n_trials, total_time, trial_results."""
        from .results import trial_record
        return {"best_params": self.best_params, "best_value": self.best_value,
                "n_trials": self.n_trials, "total_time": self.total_time,
                "trial_results": [trial_record(t) for t in self.study.trials]}

    def summary_line(self) -> str:
        """The best value beside the markov baseline (and the floor), or that there is none yet."""
        if self.best_value is None:
            states = self.summary.get("states", {})
            ended = [f"{states[k]} {word}" for k, word in (("pruned", "pruned"), ("fail", "failed"))
                     if states.get(k)]
            parts = [f"no trial completed yet ({self.n_trials} trials{': ' if ended else ''}"
                     f"{', '.join(ended)})"]
        else:
            parts = [f"best: {self.best_value:.4f} nats/note"]
        if self.markov_baseline is not None:
            parts.append(f"markov baseline {self.markov_baseline:.4f}")
        if self.floor is not None:
            parts.append(f"floor (the generator's own loss) {self.floor:.4f}")
        return "; ".join(parts)

    def best_trials(self, top: int = 10):
        """The top trials as a DataFrame: number, value (nats/note), params and a few user attributes."""
        import pandas as pd
        done = sorted(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                      key=lambda t: (loss(t), t.number))[:top]
        hidden = ("config", "heartbeat", "val_curve")
        rows = [{"number": t.number, "value": loss(t),
                 **{k: v for k, v in t.user_attrs.items() if k not in hidden}, "params": trial_config(t)}
                for t in done]
        return pd.DataFrame(rows, columns=None if rows else ["number", "value", "params"])


def cross_validated_baseline(folds: FoldSet, transpose: int = 6) -> tuple[float, int]:
    """The markov model of order 1–3 with the best cross-validated loss on ``folds``, as the
    trials of a cross-validated study are measured: (nats/note, order)."""
    losses = {}
    for order in (1, 2, 3):
        recipe = Recipe("markov", {"order": order, "alpha": 1.0}, {"transpose": transpose},
                        seed=folds.seed, val_fraction=0, device=folds.device)
        losses[order] = pooled(list(folds.lines(recipe, None)))
    order = min(losses, key=losses.get)
    return losses[order], order


def markov_baseline(data: Prepared, transpose: int = 6) -> tuple[float, int, torch.nn.Module]:
    """The markov model of order 1–3 with the best validation loss: what any model must beat.

    Returns (validation loss, order, the fitted model).
    """
    best = None
    for order in (1, 2, 3):
        model = build_model("markov", {"order": order, "alpha": 1.0}, data.vocab_size)
        loss = train(model, data.train, data.val, TrainConfig(transpose=transpose)).best_val_loss
        if best is None or loss < best[0]:
            best = (loss, order, model)
    return best


class _Progress:
    """A progress bar plus one plain-text line per trial (readable in an HTML report too)."""

    def __init__(self, total: int, files: ResultFiles, bar: bool = True):
        # No bar beside a live view: it says the same, and a notebook's saved copy of the bar
        # widget shows its first state (0/N) in an HTML report.
        self.bar = tqdm(total=total, desc="trials", unit="trial", disable=not bar)
        self.files, self.count = files, 0
        self.numbers: set[int] = set()     # the trials this worker ran

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.count += 1
        self.numbers.add(trial.number)
        summary = self.files.write(study)
        self.bar.update()
        best = summary["best_value"]
        self.bar.set_postfix_str(f"best {best:.4f}" if best is not None else "no result yet")
        value = f"{loss(trial):.4f}" if loss(trial) is not None else "-"
        if trial.values and len(trial.values) > 1:
            value += f" ({trial.user_attrs['n_params']:,} parameters, {trial.user_attrs['ms_per_note']:.3f} ms/note)"
        if trial.state.name == "PRUNED":
            steps = len(curve(trial))
            value = f"after fold {steps}" if "folds" in trial.user_attrs else f"at epoch {steps - 1}"
        reason = f" ({trial.user_attrs['fail_reason']})" if "fail_reason" in trial.user_attrs else \
            f" ({pruned_words(trial.user_attrs['pruned_on'])})" if "pruned_on" in trial.user_attrs else ""
        best_txt = f"{best:.4f} (trial {summary['best_trial']})" if best is not None else "-"
        duration = trial.duration.total_seconds() if trial.duration else 0.0
        log.info("[%d/%d] trial %d %s %s%s in %.1f s; best %s", self.count, self.bar.total,
                 trial.number, trial.state.name.lower(), value, reason, duration, best_txt)


def run_search(cfg: SearchConfig, data: Prepared | None = None) -> SearchResult:
    """Run (or continue) the study ``cfg.study_name`` and keep its result files current.

    Order matters for the user: the storage is opened and the output folder checked before
    any data is loaded, so a typo costs seconds; a resume whose settings differ from the
    study's stops before any training. Ctrl-C ends the current trial as FAIL, writes the
    result files and returns (``interrupted=True``).
    """
    began = time.time()     # trials other workers finish after this are signs of them alive
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    storage = open_storage(cfg.storage, cfg.heartbeat_interval, cfg.grace_period, cfg.storage_patience)
    output_dir = check_writable_dir("output_dir", cfg.output_path)
    artifacts = study_store_location(cfg.study_name, cfg.artifact_store, _recorded_store(storage, cfg.study_name),
                                     "") or default_artifact_location(cfg.storage, output_dir)
    store = open_artifact_store(artifacts)
    probe_artifact_store(store, artifacts)      # a store that can't take a checkpoint stops us now
    CHORES.failing.clear()
    devices = parse_devices(cfg.devices, cfg.device)
    if data is None:
        d = cfg.data
        melodies = load_data(d)
        data = prepare(melodies, d.val_fraction, d.test_fraction, d.seed, devices[0])
    log.info(data.describe())
    for family in cfg.space.families:   # a model of one's own: a dry run, before any trial exists
        check_model(family, data.vocab_size, devices[0], cfg.space.variants(family))
        if is_own(family) and not cfg.space.models.get(family):
            log.info("search_space has no entry for %s: its hyperparameters keep their defaults, and "
                     "the training settings alone are searched", shown(family))
    settings = study_settings(cfg, data)
    study, created = create_study(cfg, storage)
    folds = None
    if cfg.folds:
        # The test melodies stay out of every fold: train_best's test is on melodies no trial saw.
        test = tuple(data.splits.index["test"]) if data.splits.index else ()
        folds = FoldSet(data.data, cfg.folds, cfg.seed, cfg.fold_jobs, str(devices[0]), cfg.val_fraction,
                        cfg.pretrain, cfg.pretrain_epochs, cfg.also_train_on, exclude=test)
        log.info("each trial is cross-validated on %d folds of %d melodies (%d at once; the %d test "
                 "melodies stay out)", cfg.folds, len(data.data.melodies) - len(test), folds.jobs, len(test))
    if created:
        _set_up(study, cfg, data, settings, artifacts, folds)
    else:
        _wait_for_set_up(study)
        check_resume(study, settings)
        if study.user_attrs.get("artifact_store", artifacts) != artifacts:    # its creator was quicker
            artifacts = study_store_location(cfg.study_name, cfg.artifact_store,
                                             study.user_attrs["artifact_store"], "")
            store = open_artifact_store(artifacts)
            probe_artifact_store(store, artifacts)
        if not stored_settings(study):      # its creator died before recording them
            study.set_user_attr("settings", settings)
    tell_untold(study, output_dir / UNTOLD)        # an earlier run's, if its storage went away
    floor = data.floor()
    baseline = study.user_attrs.get("markov_baseline")
    if baseline is None:                # the creator died before setting up: measure it here
        baseline = cross_validated_baseline(folds)[0] if folds else markov_baseline(data)[0]
        study.set_user_attr("markov_baseline", baseline)
    log.info("markov baseline %.4f nats/note%s", baseline,
             f"; floor (the generator's own loss) {floor:.4f}" if floor is not None else "")
    base = TrainConfig(epochs=cfg.epochs, seed=cfg.seed, train_step=cfg.train_step)
    # A trial still running when the timeout comes stops at its next epoch (keeping its best
    # epoch so far), so `timeout` bounds the whole search, not just when the last trial starts.
    deadline = time.monotonic() + cfg.timeout if cfg.timeout else None
    # Optuna's journal storage and its gRPC proxy have no heartbeats (RDB storages do: see
    # open_storage); ours keep a dead worker's trial from staying RUNNING there too.
    heartbeat = JournalHeartbeat(cfg.heartbeat_interval, cfg.grace_period) \
        if isinstance(storage.inner, (optuna.storages.JournalStorage, optuna.storages.GrpcStorageProxy)) \
        else None
    if heartbeat:
        heartbeat.fail_stale_trials(study)      # and after each trial, as a callback
    slots = DeviceSlots(data, devices, cfg.trials_per_device)
    # Several trials at once: Optuna's threads, one per slot. Ctrl-C then stops each running
    # trial at its next epoch (alone, a trial is interrupted where it is).
    stop = threading.Event() if len(slots) > 1 else None
    objective = Objective(slots, cfg.space, base, store, deadline, heartbeat, stop, folds,
                          paired=cfg.pruner == "wilcoxon", objectives=cfg.objectives)
    keeper = CheckpointKeeper(store, output_dir, cfg.keep_checkpoints)
    n_trials, callbacks = cfg.n_trials, [CHORES.callback("checkpoint pruning and best_model.pt", keeper)] \
        + ([heartbeat] if heartbeat else [])
    if cfg.total_trials:
        n_trials = min(n_trials, max(0, cfg.total_trials - _n_finished(study)))
        callbacks.append(MaxTrialsCallback(cfg.total_trials, states=FINISHED))
        if n_trials == 0:
            log.info("study %r already holds %d finished trials (total_trials %d): nothing to run",
                     cfg.study_name, _n_finished(study), cfg.total_trials)
    live = LiveView.open(study, n_trials, cfg.plot, cfg.timeout) if cfg.live else None
    files = ResultFiles(output_dir, cfg.plot, chores=CHORES)
    progress = _Progress(n_trials, files, bar=live is None)
    callbacks += [progress] + ([CHORES.callback("the live view", live)] if live else [])
    if stop is not None:
        log.info("%d trials at once: %d on each of %s", len(slots), cfg.trials_per_device,
                 ", ".join(map(str, devices)))
    start = time.perf_counter()
    interrupted = False
    try:
        with stop_on_interrupt(stop):
            if n_trials:
                optimize(study, objective, n_trials, cfg.timeout or None, len(slots),
                         [OneAtATime(callbacks)], output_dir / UNTOLD)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: the running trials are marked FAIL; result files are up to date")
    except BaseException:
        _write_before_raising(files, study)
        raise
    finally:
        progress.bar.close()
    if not interrupted:
        _wait_for_other_workers(study, 120, progress.numbers, began, heartbeat)
    CHORES.run("checkpoint pruning and best_model.pt", keeper, study)     # other workers' better trials
    summary = files.write(study, final=True)        # the PNG too, however recent the last one
    if live:
        CHORES.run("the live view", live.finish, study, interrupted)
    s = summary["states"]
    best = summary["best_value"]
    log.info("search %s: %d trials this run (%d in the study: %d complete, %d pruned, %d failed) in "
             "%.0f s; best %s", "interrupted" if interrupted else "finished", progress.count,
             summary["n_trials"], s["complete"], s["pruned"], s["fail"],
             time.perf_counter() - start,
             f"{best:.4f} nats/note (trial {summary['best_trial']})" if best is not None else "none")
    return SearchResult(study, summary["best_params"], best, summary["n_trials"],
                        summary["total_time"], output_dir, floor, baseline, interrupted, summary)


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)     # what total_trials counts


def _n_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _write_before_raising(files: ResultFiles, study: optuna.Study) -> None:
    """The search stops on an error: leave the files as the study is (the PNG is redrawn only
    every few seconds), unless that fails too, which must not hide the error."""
    try:
        files.write(study, final=True)
    except Exception as e:
        log.warning("result files not rewritten after the error: %s: %s", type(e).__name__, e)


# Another worker that has just told a trial may be about to ask for its next one: between the
# two it runs no trial, so the study looks finished while it isn't. A worker that ends waits
# until no other worker's trial has finished for this long (by the trials' own clocks), of
# those finished since it started (an earlier run's trials are no sign of a worker alive).
SETTLE = 5.0


def _wait_for_other_workers(study: optuna.Study, limit: float, ours: set[int], since: float,
                            heartbeat: JournalHeartbeat | None = None) -> None:
    """Wait (up to ``limit`` seconds) for trials other workers are running, or may be about to
    start (``SETTLE``), so the result files and best_model.pt this worker leaves include them.
    ``ours``: the numbers of the trials this worker ran; ``since``: when it started (Unix time)."""
    deadline = time.monotonic() + limit
    said = False
    while time.monotonic() < deadline:
        trials = study.get_trials(deepcopy=False)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        just_told = [t for t in trials if t.number not in ours and t.datetime_complete is not None
                     and t.datetime_complete.timestamp() >= since and 0 <= _age(t) < SETTLE]
        if not running and not just_told:
            return
        if running and not said:
            log.info("waiting up to %.0f s for %d trials still running on other workers, so that "
                     "best_model.pt is the study's best", limit, len(running))
            said = True
        time.sleep(0.5)
        # A dead worker's trial is not waited for: RDB storages fail it by Optuna's heartbeats,
        # journal files and the gRPC proxy by ours.
        if heartbeat is not None:
            heartbeat.fail_stale_trials(study)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)


def _age(trial: optuna.trial.FrozenTrial) -> float:
    """Seconds since the trial finished, on this machine's clock (infinite if it hasn't); RDB
    storages stamp local time, journal files UTC: both as Unix time."""
    done = trial.datetime_complete
    return time.time() - done.timestamp() if done else float("inf")


def _set_up(study: optuna.Study, cfg: SearchConfig, data: Prepared, settings: dict,
            artifacts: str, folds: FoldSet | None) -> None:
    """What only the worker that created the study does: record what its numbers mean, measure
    the baseline, and queue each family's defaults (once per study, however many workers)."""
    study.set_user_attr("settings", settings)
    study.set_user_attr("artifact_store", artifacts)
    study.set_user_attr("data", data.describe())
    study.set_user_attr("floor", data.floor())
    study.set_user_attr("config", {k: getattr(cfg, k) for k in (
        "dataset", "encoding", "model", "epochs", "sampler", "pruner", "seed",
        "n_sequences", "sequence_length", "val_fraction", "test_fraction", "search_space", "folds")})
    baseline, order = cross_validated_baseline(folds) if folds else markov_baseline(data)[:2]
    study.set_user_attr("markov_baseline_order", order)
    # Start where we know the ground is good: each family's defaults, markov at the baseline's
    # best order, so the study's best is never worse than the baseline.
    for path, params in zip(cfg.space.start_from, cfg.starts):
        study.enqueue_trial(params, user_attrs={"enqueued": path})
    for params in [] if cfg.starts else cfg.space.default_trials({"markov": {"order": order}}):
        study.enqueue_trial(params, user_attrs={"enqueued": "family defaults"})
    study.set_user_attr("markov_baseline", baseline)    # last: other workers wait for it


def _recorded_store(storage: optuna.storages.BaseStorage, study_name: str) -> str | None:
    """The artifact store an existing study recorded when it was created; None for a new one."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    return storage.get_study_user_attrs(study_id).get("artifact_store")


def _wait_for_set_up(study: optuna.Study, timeout: float = 120) -> None:
    """A worker that joins a study another worker is creating waits until the creator has
    recorded its settings and queued the defaults (seconds), so it checks against them."""
    deadline = time.monotonic() + timeout
    while "markov_baseline" not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)
