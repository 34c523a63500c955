"""k-fold cross-validated bits per note: ``python -m chromasonic_lib.crossval --dataset NAME``.

Pitch-only prediction of every note from the notes before it in its melody (the first
from nothing), the measure of the literature (Pearce 2005 reports 2.444 bits/note for IDyOM's
long-term model on 185 chorales). Each fold's model is trained on the other folds only (a
tenth of them held out for early stopping) and scored on its fold; the mean is weighted by
notes. With ``--ensemble N`` each fold's model is the average of N trained with successive
seeds.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np

from .config import CrossvalConfig, TrainConfig
from .data import MelodyTensor, kfold, load_dataset, split
from .errors import ChromasonicError
from .models import build_model, split_params
from .training import evaluate, pick_device, train_ensemble

log = logging.getLogger(__name__)


def _params(cfg: CrossvalConfig) -> tuple[dict, dict]:
    """(model hyperparameters, training settings) of the params file."""
    return split_params(cfg.model, {k: v for k, v in cfg.settings.items() if k not in ("model", "epochs")})


def fold_models(cfg: CrossvalConfig):
    """Train one model (or ensemble) per fold; yields (fold, model, test melodies, histories).

    Member j of fold i starts from seed ``seed + i + j`` and trains with seed ``seed + j``.
    """
    device = pick_device(cfg.device)
    data = load_dataset(cfg.dataset, cfg.encoding, limit=cfg.limit or None)
    hparams, training = _params(cfg)
    train_cfg = TrainConfig(epochs=cfg.epochs, seed=cfg.seed, **training)
    for i, (train_idx, test_idx) in enumerate(kfold(data.melodies, cfg.folds, cfg.seed)):
        inner = split([data.melodies[j] for j in train_idx], 0.1, 0.0, cfg.seed + i)
        model, histories = train_ensemble(
            lambda j: build_model(cfg.model, hparams, data.vocab_size, seed=cfg.seed + i + j),
            MelodyTensor(inner.train, device), MelodyTensor(inner.val, device), train_cfg, cfg.ensemble)
        test = MelodyTensor([data.melodies[j] for j in test_idx], device)
        yield i, model, test, histories


def run_crossval(cfg: CrossvalConfig) -> dict:
    hparams, training = _params(cfg)
    results = []
    start = time.perf_counter()
    for i, model, test, histories in fold_models(cfg):
        m = evaluate(model, test)
        epochs = [h.epochs_trained for h in histories]      # one per ensemble member
        results.append({"fold": i, "bits_per_note": m.bits_per_note, "n_notes": m.n_notes,
                        "n_melodies": len(test), "epochs": epochs[0] if len(epochs) == 1 else epochs})
        print(f"fold {i + 1:>2}/{cfg.folds}: {m.bits_per_note:.3f} bits/note over {m.n_notes} notes "
              f"({', '.join(map(str, epochs))} epochs)", flush=True)
    n_notes = sum(r["n_notes"] for r in results)
    bits = sum(r["bits_per_note"] * r["n_notes"] for r in results) / n_notes
    return {"dataset": cfg.dataset, "encoding": cfg.encoding, "model": cfg.model,
            "params": {**hparams, **training}, "folds": cfg.folds, "ensemble": cfg.ensemble,
            "bits_per_note": bits,
            "fold_std": float(np.std([r["bits_per_note"] for r in results])),
            "n_notes": n_notes, "n_melodies": sum(r["n_melodies"] for r in results),   # folds cover all
            "seconds": round(time.perf_counter() - start, 1), "per_fold": results}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chromasonic_lib.crossval", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="chorales-185", help="corpus name, essen/<file>, synthetic or a folder")
    p.add_argument("--encoding", default="pitch", help="pitch or grid")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--model", default="", help="markov, rnn, lstm, gru, transformer (default: the params file's)")
    p.add_argument("--params", default="params/crossval.yaml",
                   help="YAML/JSON with model and training parameters (a best_hyperparameters.json works)")
    p.add_argument("--epochs", type=int, default=0, help="maximum epochs per fold (default: params file's, or 30)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto")
    p.add_argument("--limit", type=int, default=0, help="parse only the first N files (quick check)")
    p.add_argument("--ensemble", type=int, default=1,
                   help="average the probabilities of N models per fold, trained with seeds seed, seed+1, …")
    p.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        cfg = CrossvalConfig(args.dataset, args.encoding, args.folds, args.model, args.params,
                             args.epochs, args.seed, args.device, args.limit, args.ensemble)
        result = run_crossval(cfg)
    except ChromasonicError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{result['model']} on {result['dataset']}: {result['bits_per_note']:.3f} bits/note "
          f"(±{result['fold_std']:.3f} across {result['folds']} folds, {result['n_notes']} notes, "
          f"{result['seconds']:.0f} s)")
    if args.json:
        print(json.dumps({k: v for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
