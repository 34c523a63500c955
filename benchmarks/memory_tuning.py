"""How params/crossval.yaml's melody memory was chosen: on another collection, after training.

    .venv/bin/python benchmarks/memory_tuning.py [--dataset chorales-other] [--params params/crossval_plain.yaml]
    .venv/bin/python benchmarks/memory_tuning.py --model markov --params ''     # the markov baseline

Trains the 10 cross-validation folds of DATASET with PARAMS (a configuration without memory),
keeps each fold's next-note log-probabilities on its test melodies, then applies the melody memory
(chromasonic_lib.models.remember) for every (memory_order, memory_alpha) of a grid and prints the
cross-validated bits per note of each: a table to choose from without touching chorales-185.
About 17 minutes on a 2-core CPU for chorales-other. Last line: JSON of the grid.
"""
import argparse
import json
import math
import time

import torch

from chromasonic_lib.config import CrossvalConfig
from chromasonic_lib.crossval import fold_models
from chromasonic_lib.data.splits import IGNORE
from chromasonic_lib.models import remember

ORDERS = (2, 3, 4, 5, 6, 7, 8)
ALPHAS = (0.5, 1.0, 2.0, 3.0, 4.0)

p = argparse.ArgumentParser()
p.add_argument("--dataset", default="chorales-other")
p.add_argument("--params", default="params/crossval_plain.yaml")
p.add_argument("--model", default="", help="markov with --params '' tunes the baseline's memory")
p.add_argument("--folds", type=int, default=10)
args = p.parse_args()
cfg = CrossvalConfig(dataset=args.dataset, folds=args.folds, model=args.model, params=args.params,
                     device="cpu")
if cfg.settings.get("memory_order"):
    p.error(f"{args.params} already has a memory; give a configuration without one")

start = time.perf_counter()
folds = []                       # (inputs, targets, log-probabilities) per batch of test melodies
for i, model, test, histories in fold_models(cfg):     # trains: no torch.no_grad() here
    for idx in torch.arange(len(test)).split(32):
        x, y = test.batch(idx, bos=model.vocab_size)
        with torch.no_grad():
            folds.append((x, y, torch.log_softmax(model.eval()(x).double(), -1)))
    print(f"fold {i + 1}/{cfg.folds} trained ({histories[0].epochs_trained} epochs, "
          f"{time.perf_counter() - start:.0f} s)", flush=True)


def bits(order: int, alpha: float) -> float:
    """Cross-validated bits per note with the memory (order 0: none) over the stored predictions."""
    total, count = 0.0, 0
    for x, y, log_probs in folds:
        q = remember(log_probs, x, order, alpha)
        keep = y != IGNORE
        total -= q[keep].gather(1, y[keep][:, None]).sum().item() / math.log(2)
        count += keep.sum().item()
    return total / count


plain = bits(0, 1.0)
grid = {f"{order},{alpha:g}": bits(order, alpha) for order in ORDERS for alpha in ALPHAS}
print(f"\n{cfg.model} on {cfg.dataset}, {cfg.folds} folds, no memory: {plain:.4f} bits/note")
print("memory_order \\ memory_alpha " + " ".join(f"{a:>7g}" for a in ALPHAS))
for order in ORDERS:
    print(f"{order:>12}                " + " ".join(f"{grid[f'{order},{a:g}']:7.4f}" for a in ALPHAS))
best = min(grid, key=grid.get)
print(f"best: memory_order,alpha = {best}: {grid[best]:.4f} bits/note "
      f"({grid[best] - plain:+.4f} vs no memory); {time.perf_counter() - start:.0f} s")
print(json.dumps({"dataset": cfg.dataset, "params": args.params, "plain": plain,
                  "grid": {k: round(v, 4) for k, v in grid.items()}}))
