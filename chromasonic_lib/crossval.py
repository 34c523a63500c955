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
import re
import sys
import time
from contextlib import closing
from typing import Any

import numpy as np

from .config import CrossvalConfig
from .data import MelodySet, load_dataset, melody_groups
from .errors import ChromasonicError
from .folds import FoldSet, Recipe, paired_difference, train_fold
from .models import check_model, split_params
from .pretraining import describe_also_train_on
from .surprise import joined_notes, per_melody, write_notes
from .training import pick_device

log = logging.getLogger(__name__)


def recipe(cfg: CrossvalConfig) -> Recipe:
    """The configuration ``cfg`` cross-validates, as the fold loop (and a search trial) runs it."""
    if cfg.members:
        return Recipe("mixture", seed=cfg.seed, device=cfg.device, members=tuple(map(recipe, cfg.members)))
    hparams, training = split_params(cfg.model, {k: v for k, v in cfg.settings.items()
                                                 if k not in ("model", "epochs")})
    return Recipe(cfg.model, hparams, training, cfg.epochs, cfg.seed, cfg.val_fraction,
                  cfg.test_transpose, cfg.ensemble, cfg.device)


def fold_set(cfg: CrossvalConfig, data: MelodySet) -> FoldSet:
    """``cfg``'s folds of ``data`` (with what every fold also trains on), as a search's."""
    folds = FoldSet(data, cfg.folds, cfg.seed, cfg.jobs, cfg.device, cfg.val_fraction, cfg.pretrain,
                    cfg.pretrain_epochs, cfg.also_train_on, cfg.limit, bool(cfg.distributions))
    if folds.also_trained:
        print(f"every fold {describe_also_train_on(folds.also_trained, data)}", flush=True)
    return folds


def fold_models(cfg: CrossvalConfig, data: MelodySet | None = None, report: dict | None = None):
    """Train one model (or ensemble) per fold, one fold after another; yields (fold, model, test
    melodies, histories).

    ``data``: the loaded ``cfg.dataset`` (loaded here when not given); the folds depend only on
    it, ``cfg.folds`` and ``cfg.seed``, so two configurations given one data set share them.
    ``report``, where given, receives what the pretraining did (``pretrained``).
    """
    data = data or load_dataset(cfg.dataset, cfg.encoding, limit=cfg.limit or None)
    folds, r = fold_set(cfg, data), recipe(cfg)
    state, done = folds.start(r)
    if report is not None:
        report.update(done)
    device = pick_device(cfg.device)
    for i, (train_idx, test_idx) in enumerate(folds.folds):
        model, histories = train_fold(r, folds.pool, folds.extra, state, i, train_idx)
        yield i, model, data.tensor(test_idx, device), histories


def _groups(data: MelodySet) -> dict:
    """How the folds keep copies of one tune together, for the report."""
    g = melody_groups(data.melodies)
    return {"melodies": g.n_melodies, "groups": len(g.groups), "identical": g.n_identical,
            "transposed": g.n_transposed, "near_identical": g.n_variants, "text": g.describe()}


def run_crossval(cfg: CrossvalConfig, data: MelodySet | None = None, label: str = "") -> dict:
    """Cross-validated bits/note of ``cfg`` (on ``data`` when given); ``label`` starts each fold's line."""
    r = recipe(cfg)
    data = data or load_dataset(cfg.dataset, cfg.encoding, limit=cfg.limit or None)
    for member in (r, *r.members):      # a model of one's own: a dry run before any fold trains
        if not member.members:
            check_model(member.model, data.vocab_size, pick_device(cfg.device), [member.hparams])
    results = []
    start = time.perf_counter()
    folds = fold_set(cfg, data)
    state, pretraining = folds.start(r)
    notes = []
    with closing(folds.lines(r, state)) as lines:  # stopped, it stops its workers
        for f in lines:
            notes.append(f.pop("notes"))
            results.append(f)
            epochs = f["epochs"] if isinstance(f["epochs"], list) else [f["epochs"]]
            print(f"{label}fold {f['fold'] + 1:>2}/{cfg.folds}: {f['bits_per_note']:.3f} bits/note over "
                  f"{f['n_notes']} notes ({', '.join(map(str, epochs))} epochs)", flush=True)
    results.sort(key=lambda f: f["fold"])
    table = joined_notes(notes)         # every note of the collection, out of fold
    write_notes(table, notes, cfg.per_note, cfg.distributions, folds.pool)
    per_fold = np.array([f["bits_per_note"] for f in results])
    melodies = per_melody(table)
    # A mixture has no configuration of its own: each member's is recorded, as it ran.
    return {"dataset": cfg.dataset, "encoding": cfg.encoding, "model": cfg.model,
            "params": None if cfg.members else {**r.hparams, **r.training}, "folds": cfg.folds,
            "ensemble": cfg.ensemble, "epochs": None if cfg.members else cfg.epochs,
            "members": [{"params_file": m.params, "model": m.model, "params": {**mr.hparams, **mr.training},
                         "epochs": m.epochs, "ensemble": m.ensemble, "test_transpose": m.test_transpose,
                         "val_fraction": m.val_fraction} for m, mr in zip(cfg.members, r.members)] or None,
            "jobs": folds.jobs, "threads_per_job": folds.threads,
            "test_transpose": cfg.test_transpose, "val_fraction": cfg.val_fraction,
            "pretrain": pretraining or None, "also_train_on": folds.also_trained or None,
            "bits_per_note": float(table["information.content"].mean()),    # pooled: every note once
            "fold_mean_bits_per_note": float(per_fold.mean()),   # Pearce (2005) averages the folds
            "fold_std": float(np.std(per_fold)),        # population std (ddof=0) of the folds' bits/note
            # the standard error of the folds' mean: sample std (ddof=1) / √k
            "fold_sem": float(np.std(per_fold, ddof=1) / np.sqrt(len(per_fold))),
            "n_notes": len(table), "n_melodies": sum(f["n_melodies"] for f in results),   # folds cover all
            # IDyOM's software averages the melodies' means (its :detail 2 output)
            "melody_mean_bits_per_note": float(melodies["mean.information.content"].mean()),
            "groups": _groups(data), "seconds": round(time.perf_counter() - start, 1), "per_fold": results,
            "per_melody": melodies.to_dict("records"), "per_note": cfg.per_note or None}


def run_compare(cfg: CrossvalConfig) -> dict:
    """Both of ``cfg.compare``'s configurations on the same folds, and their paired difference B − A.

    The interval is ``folds.paired_difference``'s: the t interval of the mean of the k per-fold
    differences.
    """
    data = load_dataset(cfg.dataset, cfg.encoding, limit=cfg.limit or None)
    a, b = ({"params_file": side.params, **run_crossval(side, data, f"{name} ")}
            for side, name in zip(cfg.sides, "AB"))
    pairs = list(zip(a["per_fold"], b["per_fold"]))
    d = paired_difference([fa["bits_per_note"] for fa, _ in pairs], [fb["bits_per_note"] for _, fb in pairs])
    mean = d["mean_difference"]
    return {"dataset": cfg.dataset, "encoding": cfg.encoding, "folds": len(pairs), "groups": a["groups"],
            "a": a, "b": b,
            "per_fold": [{"fold": fa["fold"], "n_notes": fa["n_notes"], "a": fa["bits_per_note"],
                          "b": fb["bits_per_note"], "difference": diff}
                         for (fa, fb), diff in zip(pairs, d["differences"])],
            "mean_difference": mean, "sd_difference": d["sd_difference"], "ci95": d["ci95"],
            "better": "B" if mean < 0 else "A" if mean > 0 else None,
            "excludes_zero": d["excludes_zero"]}


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
    if result.get("members"):
        scored += f" (the average of {' and '.join(m['params_file'] for m in result['members'])}, note by note)"
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


def _as_option(message: str, options: dict[str, str]) -> str:
    """An error that names a setting (``per_note must be ...``) as the option the user typed
    (``--per-note must be ...``)."""
    for dest, option in options.items():
        if re.match(rf"{dest}\b(?![-.])", message):
            return option + message[len(dest):]
    return message


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m chromasonic_lib.crossval`` (the docs' parameter
    reference reads it too)."""
    p = argparse.ArgumentParser(prog="python -m chromasonic_lib.crossval", description=__doc__.split("\n\n")[0])
    p.options = []          # each option's argparse action, in order

    def add(*names: str, **kw: Any) -> None:
        p.options.append(p.add_argument(*names, **kw))
    add("--dataset", default="chorales-185", help="corpus name, essen/<file>, synthetic or a folder")
    add("--encoding", default="pitch", help="pitch or grid")
    add("--folds", type=int, default=10,
        help="how many folds; each melody is scored by the model of the fold that holds it out "
             "(copies of a tune share a fold)")
    add("--model", default=None, help="markov, rnn, lstm, gru, transformer, or a class of one's own: package.module:Class "
                        "or path/to/file.py:Class (default: the params file's)")
    add("--params", default=None,
                   help="YAML/JSON with model and training parameters (a best_hyperparameters.json works; "
                        "default: params/crossval.yaml, unless --model names another family)")
    add("--epochs", type=int, default=None,
                   help="maximum epochs per fold (default: the params file's epochs, or 30)")
    add("--seed", type=int, default=42,
        help="cuts the folds and seeds the training: the same seed gives the same folds to every "
             "configuration, so two runs pair fold by fold")
    add("--device", default="auto", help="where the models train: auto (cuda, then mps, then cpu), "
                                         "cpu, cuda, cuda:N or mps")
    add("--limit", type=int, default=0, help="parse only the first N files (quick check)")
    add("--ensemble", type=int, default=None,
                   help="average the probabilities of N models per fold, trained with seeds seed, seed+1, … "
                        "(default: the params file's ensemble, or 1)")
    add("--test-transpose", type=int, default=None, metavar="K",
                   help="score each test note as the average prediction over the melody moved by "
                        "-K..K semitones (default: the params file's test_transpose, or 0)")
    add("--val-fraction", type=float, default=None, metavar="F",
                   help="share of each fold's training melodies held out for early stopping; 0: "
                        "train on them all for exactly --epochs epochs (default: the "
                        "params file's val_fraction, or 0.1)")
    add("--pretrain", default=None, metavar="NAME",
                   help="first train every fold's model on this collection's melodies, less any copy "
                        "of a tune of --dataset (default: the params file's pretrain, or none; 'none': none, "
                        "whatever the file says)")
    add("--also-train-on", default=None, metavar="NAME",
                   help="train every fold's model on this collection's melodies too, less any copy "
                        "of a tune of --dataset (default: the params file's also_train_on, or none; "
                        "'none': none, whatever the file says; --limit applies to it too)")
    add("--jobs", type=int, default=0, metavar="N",
                   help="folds trained at once, each in a process of its own with its share of the "
                        "threads (default: one per core on the CPU, 1 on a GPU)")
    add("--per-note", default="", metavar="FILE",
                   help="write every note's probability, information content and entropy, each scored "
                        "by the fold model that did not train on its melody (IDyOM's column names): "
                        "FILE.csv or FILE.parquet; with --compare, FILE-A and FILE-B")
    add("--distributions", default="", metavar="FILE.npz",
                   help="also write every note's whole predicted distribution (row for row with --per-note)")
    add("--json", action="store_true", help="print the result as JSON on the last line")
    add("--compare", nargs=2, metavar=("A", "B"), default=(),
                   help="run two params files (each with its own model) on the same folds, instead of "
                        "--params, and print their paired per-fold difference B − A with its 95%% interval")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    options = {a.dest: a.option_strings[0] for a in p.options}
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        cfg = CrossvalConfig(args.dataset, args.encoding, args.folds, args.model, args.params,
                             args.epochs, args.seed, args.device, args.limit, args.ensemble,
                             args.test_transpose, args.val_fraction, args.pretrain,
                             args.also_train_on, compare=tuple(args.compare),
                             jobs=args.jobs, per_note=args.per_note, distributions=args.distributions)
        result = run_compare(cfg) if cfg.compare else run_crossval(cfg)
    except ChromasonicError as e:
        print(f"error: {_as_option(str(e), options)}", file=sys.stderr)
        return 2
    print(compare_summary(result) if cfg.compare else summary(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
