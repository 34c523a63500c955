"""k-fold cross-validated bits per note: ``python -m chromasonic_lib.crossval --dataset NAME``.

Pitch-only prediction of every note from the notes before it in its melody (the first
from nothing), the measure of the literature (Pearce 2005 reports 2.444 bits/note for IDyOM's
long-term model on 185 chorales; 1.911 for its System D, which also knows each note's
duration, place in the bar, phrase end and key: ``context`` in the params file). Each
fold's model is trained on the other folds only (a tenth of them held out for early
stopping) and scored on its fold; the mean is weighted by notes. Copies of one tune share a
fold (``data.copies``). With ``--ensemble N`` each fold's model is the average of N trained
with successive seeds; with ``test_transpose: K`` (or ``--test-transpose K``) each test note's
prediction is the average over the melody moved by -K..K semitones (``transposition``); with
``val_fraction: 0`` no training melody is held out for early stopping: each fold's model trains
for exactly ``epochs`` epochs and its last (averaged) weights are scored; with ``pretrain: NAME``
every fold's model starts from weights trained on another collection, less the copies of this
one's tunes (``pretrained``); with ``also_train_on: NAME`` every fold's model trains on that
collection's melodies too (less the copies of this one's tunes). On the CPU the folds train
side by side, one process per core (``--jobs N``).
``--compare A B`` runs two configurations on the same folds and reports their paired difference.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import closing

import numpy as np
import torch
from scipy import stats

from .config import CrossvalConfig, TrainConfig
from .data import MelodySet, hold_out, kfold, load_dataset, melody_groups
from .errors import ChromasonicError
from .models import build_model, split_params
from .pretraining import also_train_on, describe_also_train_on, pretrained, start_from
from .training import evaluate, pick_device, train_ensemble
from .transposition import TranspositionAverage

log = logging.getLogger(__name__)


def _params(cfg: CrossvalConfig) -> tuple[dict, dict]:
    """(model hyperparameters, training settings) of the params file."""
    return split_params(cfg.model, {k: v for k, v in cfg.settings.items() if k not in ("model", "epochs")})


def fold_models(cfg: CrossvalConfig, data: MelodySet | None = None, report: dict | None = None):
    """Train one model (or ensemble) per fold, one fold after another; yields (fold, model, test
    melodies, histories).

    Member j of fold i starts from seed ``seed + i + j`` (or, with ``pretrain``, from the
    pretrained weights) and trains with seed ``seed + j``. ``data``: the loaded ``cfg.dataset``
    (loaded here when not given); the folds depend only on it, ``cfg.folds`` and ``cfg.seed``,
    so two configurations given one data set share them. ``report``, where given, receives
    what the pretraining did (``pretrained``). With ``also_train_on`` each fold trains on that
    collection's melodies too (``_also_train_on``).
    """
    data = data or load_dataset(cfg.dataset, cfg.encoding, limit=cfg.limit or None)
    state = _pretrained(cfg, data, report)
    pool, extra = _also_train_on(cfg, data, {})
    device = pick_device(cfg.device)
    for i, (train_idx, test_idx) in enumerate(kfold(data.melodies, cfg.folds, cfg.seed)):
        model, histories = _train_fold(cfg, pool, extra, state, i, train_idx)
        yield i, model, data.tensor(test_idx, device), histories


def _pretrained(cfg: CrossvalConfig, data: MelodySet, report: dict | None) -> dict | None:
    state, done = pretrained(cfg.pretrain, cfg.pretrain_epochs, cfg.model, _params(cfg), data,
                             pick_device(cfg.device), cfg.seed, cfg.limit)
    if report is not None:
        report.update(done)
    return state


def _also_train_on(cfg: CrossvalConfig, data: MelodySet, report: dict) -> tuple[MelodySet, list[int]]:
    """``data`` followed by ``cfg.also_train_on``'s melodies less every copy of one of its tunes
    (identical, transposed or a variant), and where those are: every fold trains on them too."""
    pool, extra, done = also_train_on(cfg.also_train_on, data, cfg.limit)
    if done:
        report.update(done)
        print(f"every fold {describe_also_train_on(done, data)}", flush=True)
    return pool, extra


def _train_fold(cfg: CrossvalConfig, pool: MelodySet, extra: list[int], state: dict | None, i: int,
                train_idx: list[int]):
    """Fold ``i``'s model (or ensemble), trained on ``train_idx`` less its held-out share (both
    in ``pool``) and on ``extra``, and each member's history."""
    device = pick_device(cfg.device)
    hparams, training = _params(cfg)
    train_cfg = TrainConfig(epochs=cfg.epochs, seed=cfg.seed, **training)
    fit, val = hold_out(pool.melodies, train_idx, cfg.val_fraction, cfg.seed + i)
    model, histories = train_ensemble(
        lambda j: start_from(build_model(cfg.model, hparams, pool.vocab_size, seed=cfg.seed + i + j), state),
        pool.tensor(fit + extra, device), pool.tensor(val, device) if val else None, train_cfg, cfg.ensemble)
    if cfg.test_transpose:
        model = TranspositionAverage(model, cfg.test_transpose)
    return model, histories


def _score_fold(cfg: CrossvalConfig, pool: MelodySet, extra: list[int], state: dict | None, i: int,
                train_idx: list[int], test_idx: list[int]) -> dict:
    """Fold ``i`` trained and scored: its line of the report."""
    model, histories = _train_fold(cfg, pool, extra, state, i, train_idx)
    m = evaluate(model, pool.tensor(test_idx, pick_device(cfg.device)))
    epochs = [h.epochs_trained for h in histories]      # one per ensemble member
    return {"fold": i, "bits_per_note": m.bits_per_note, "n_notes": m.n_notes,
            "n_melodies": len(test_idx), "epochs": epochs[0] if len(epochs) == 1 else epochs}


def jobs_and_threads(cfg: CrossvalConfig) -> tuple[int, int]:
    """How many folds train at once, and each one's torch threads: ``cfg.jobs`` (0: as many as
    this process has threads, at most one per fold, on the CPU; 1 on a GPU), sharing those
    threads (torch's own count: the physical cores, or ``OMP_NUM_THREADS``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    budget = max(1, min(cores, torch.get_num_threads()))
    on_cpu = pick_device(cfg.device).type == "cpu"
    jobs = min(cfg.jobs or (budget if on_cpu else 1), cfg.folds)
    return jobs, max(1, budget // jobs)


_worker: tuple = ()     # in a worker process: the arguments every fold shares


def _start_worker(threads: int, *shared) -> None:
    global _worker
    torch.set_num_threads(threads)
    _worker = shared


def _worker_fold(i: int, train_idx: list[int], test_idx: list[int]) -> dict:
    return _score_fold(*_worker, i, train_idx, test_idx)


def _scored_folds(cfg: CrossvalConfig, data: MelodySet, pool: MelodySet, extra: list[int],
                  state: dict | None, jobs: int, threads: int):
    """Every fold of ``data`` trained and scored (``jobs`` at once, each in a process of its own
    with ``threads`` torch threads); yields each fold's line of the report as it finishes."""
    folds = list(enumerate(kfold(data.melodies, cfg.folds, cfg.seed)))
    shared = (cfg, pool, extra, state)
    if jobs == 1:
        for i, (train_idx, test_idx) in folds:
            yield _score_fold(*shared, i, train_idx, test_idx)
        return
    # spawn: a forked copy of a process whose torch threads already ran can hang.
    workers = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_start_worker, initargs=(threads, *shared))
    running: set = set()
    try:
        while folds or running:
            while folds and len(running) < jobs:    # one fold a worker: none waits in a queue
                i, (train_idx, test_idx) = folds.pop(0)
                running.add(workers.submit(_worker_fold, i, train_idx, test_idx))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    except BaseException:   # a fold failed, Ctrl-C, a notebook's stop: no fold goes on training
        _stop(workers)
        raise
    workers.shutdown()


def _stop(workers: ProcessPoolExecutor) -> None:
    """End ``workers`` now, folds they are still training included."""
    if hasattr(workers, "terminate_workers"):        # Python 3.14
        workers.terminate_workers()
        return
    for process in list((getattr(workers, "_processes", None) or {}).values()):
        process.terminate()
    workers.shutdown(wait=False, cancel_futures=True)


def _groups(data: MelodySet) -> dict:
    """How the folds keep copies of one tune together, for the report."""
    g = melody_groups(data.melodies)
    return {"melodies": g.n_melodies, "groups": len(g.groups), "identical": g.n_identical,
            "transposed": g.n_transposed, "near_identical": g.n_variants, "text": g.describe()}


def run_crossval(cfg: CrossvalConfig, data: MelodySet | None = None, label: str = "") -> dict:
    """Cross-validated bits/note of ``cfg`` (on ``data`` when given); ``label`` starts each fold's line."""
    hparams, training = _params(cfg)
    data = data or load_dataset(cfg.dataset, cfg.encoding, limit=cfg.limit or None)
    results, pretraining, also = [], {}, {}
    start = time.perf_counter()
    state = _pretrained(cfg, data, pretraining)
    pool, extra = _also_train_on(cfg, data, also)
    jobs, threads = jobs_and_threads(cfg)
    with closing(_scored_folds(cfg, data, pool, extra, state, jobs, threads)) as folds:  # stopped, it stops its workers
        for r in folds:
            results.append(r)
            epochs = r["epochs"] if isinstance(r["epochs"], list) else [r["epochs"]]
            print(f"{label}fold {r['fold'] + 1:>2}/{cfg.folds}: {r['bits_per_note']:.3f} bits/note over "
                  f"{r['n_notes']} notes ({', '.join(map(str, epochs))} epochs)", flush=True)
    results.sort(key=lambda r: r["fold"])
    n_notes = sum(r["n_notes"] for r in results)
    bits = sum(r["bits_per_note"] * r["n_notes"] for r in results) / n_notes
    per_fold = np.array([r["bits_per_note"] for r in results])
    return {"dataset": cfg.dataset, "encoding": cfg.encoding, "model": cfg.model,
            "params": {**hparams, **training}, "folds": cfg.folds, "ensemble": cfg.ensemble,
            "jobs": jobs, "threads_per_job": threads,
            "test_transpose": cfg.test_transpose, "val_fraction": cfg.val_fraction,
            "pretrain": pretraining or None, "also_train_on": also or None,
            "bits_per_note": bits,
            "fold_std": float(np.std(per_fold)),        # population std (ddof=0) of the folds' bits/note
            # the standard error of the folds' mean: sample std (ddof=1) / √k
            "fold_sem": float(np.std(per_fold, ddof=1) / np.sqrt(len(per_fold))),
            "n_notes": n_notes, "n_melodies": sum(r["n_melodies"] for r in results),   # folds cover all
            "groups": _groups(data), "seconds": round(time.perf_counter() - start, 1), "per_fold": results}


def run_compare(cfg: CrossvalConfig) -> dict:
    """Both of ``cfg.compare``'s configurations on the same folds, and their paired difference B − A.

    The interval is the t interval of the mean of the k per-fold differences (k − 1 degrees of
    freedom). Folds share most of their training data, so it is somewhat too narrow (Nadeau &
    Bengio 2003): read an interval that barely excludes 0 with care.
    """
    data = load_dataset(cfg.dataset, cfg.encoding, limit=cfg.limit or None)
    a, b = ({"params_file": side.params, **run_crossval(side, data, f"{name} ")}
            for side, name in zip(cfg.sides, "AB"))
    pairs = list(zip(a["per_fold"], b["per_fold"]))
    diffs = np.array([fb["bits_per_note"] - fa["bits_per_note"] for fa, fb in pairs])
    k = len(diffs)
    mean, sd = float(diffs.mean()), float(diffs.std(ddof=1))
    half = float(stats.t.ppf(0.975, k - 1) * sd / np.sqrt(k))
    return {"dataset": cfg.dataset, "encoding": cfg.encoding, "folds": k, "groups": a["groups"],
            "a": a, "b": b,
            "per_fold": [{"fold": fa["fold"], "n_notes": fa["n_notes"], "a": fa["bits_per_note"],
                          "b": fb["bits_per_note"], "difference": float(d)}
                         for (fa, fb), d in zip(pairs, diffs)],
            "mean_difference": mean, "sd_difference": sd, "ci95": [mean - half, mean + half],
            "better": "B" if mean < 0 else "A" if mean > 0 else None,
            "excludes_zero": bool(mean - half > 0 or mean + half < 0)}


def summary(result: dict) -> str:
    """The printed summary of one cross-validation."""
    scored = (f", each note scored as the average over the melody moved by ±{result['test_transpose']} "
              "semitones" if result.get("test_transpose") else "")
    if result.get("also_train_on"):
        scored += (f", every fold also trained on {result['also_train_on']['melodies']} melodies of "
                   f"{result['also_train_on']['dataset']}")
    if result.get("pretrain"):
        scored += f", pretrained on {result['pretrain']['melodies']} melodies of {result['pretrain']['dataset']}"
    if result.get("val_fraction") == 0 and result["model"] != "markov":
        epochs = result["per_fold"][0]["epochs"]
        scored += (f", trained on every training melody for {epochs if isinstance(epochs, int) else epochs[0]} "
                   "epochs (none held out)")
    text = (f"{result['model']} on {result['dataset']}{scored}: {result['bits_per_note']:.3f} bits/note "
            f"(SEM {result['fold_sem']:.3f}, ±{result['fold_std']:.3f} across {result['folds']} folds, "
            f"{result['n_notes']} notes, {result['seconds']:.0f} s)")
    return f"{text}\nfolds: {result['groups']['text']}"


def compare_summary(result: dict) -> str:
    """The per-fold table of a comparison, its mean difference B − A and 95 % interval, in words."""
    a, b = result["a"], result["b"]
    lines = [f"{name}: {r['model']} ({r['params_file']}): {r['bits_per_note']:.3f} bits/note "
             f"(SEM {r['fold_sem']:.3f})" for name, r in (("A", a), ("B", b))]
    lines.append("fold       A       B   B − A")
    lines += [f"{f['fold'] + 1:>4}  {f['a']:.3f}   {f['b']:.3f}  {f['difference']:+.3f}"
              for f in result["per_fold"]]
    lo, hi = result["ci95"]
    k = result["folds"]
    better = result["better"]
    verdict = ("no difference" if better is None else f"{better} is better: the interval excludes 0"
               if result["excludes_zero"] else f"{better} is better on average, but the interval includes 0: "
               "no clear difference")
    lines.append(f"mean of the per-fold differences B − A: {result['mean_difference']:+.3f} bits/note, "
                 f"95 % interval [{lo:+.3f}, {hi:+.3f}] (t, {k - 1} dof): {verdict}")
    return "\n".join(lines + [f"folds: {result['groups']['text']}"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chromasonic_lib.crossval", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="chorales-185", help="corpus name, essen/<file>, synthetic or a folder")
    p.add_argument("--encoding", default="pitch", help="pitch or grid")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--model", default="", help="markov, rnn, lstm, gru, transformer (default: the params file's)")
    p.add_argument("--params", default=None,
                   help="YAML/JSON with model and training parameters (a best_hyperparameters.json works; "
                        "default: params/crossval.yaml, unless --model names another family)")
    p.add_argument("--epochs", type=int, default=0, help="maximum epochs per fold (default: params file's, or 30)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto")
    p.add_argument("--limit", type=int, default=0, help="parse only the first N files (quick check)")
    p.add_argument("--ensemble", type=int, default=1,
                   help="average the probabilities of N models per fold, trained with seeds seed, seed+1, …")
    p.add_argument("--test-transpose", type=int, default=-1, metavar="K",
                   help="score each test note as the average prediction over the melody moved by "
                        "-K..K semitones (default: the params file's test_transpose, or 0)")
    p.add_argument("--val-fraction", type=float, default=-1, metavar="F",
                   help="share of each fold's training melodies held out for early stopping; 0: "
                        "train on them all for exactly the params file's epochs (default: the "
                        "params file's val_fraction, or 0.1)")
    p.add_argument("--pretrain", default="", metavar="NAME",
                   help="first train every fold's model on this collection's melodies, less any copy "
                        "of a tune of --dataset (default: the params file's pretrain, or none)")
    p.add_argument("--also-train-on", default="", metavar="NAME",
                   help="train every fold's model on this collection's melodies too, less any copy "
                        "of a tune of --dataset (default: the params file's also_train_on, or none; "
                        "--limit applies to it too)")
    p.add_argument("--jobs", type=int, default=0, metavar="N",
                   help="folds trained at once, each in a process of its own with its share of the "
                        "threads (default: one per core on the CPU, 1 on a GPU)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), default=(),
                   help="run two params files (each with its own model) on the same folds, instead of "
                        "--params, and print their paired per-fold difference B − A with its 95%% interval")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        cfg = CrossvalConfig(args.dataset, args.encoding, args.folds, args.model, args.params,
                             args.epochs, args.seed, args.device, args.limit, args.ensemble,
                             args.test_transpose, args.val_fraction, args.pretrain,
                             args.also_train_on, compare=tuple(args.compare),
                             jobs=args.jobs)
        result = run_compare(cfg) if cfg.compare else run_crossval(cfg)
    except ChromasonicError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(compare_summary(result) if cfg.compare else summary(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
