"""Sampling a melody on the CPU with the default cross-validation model; last line: JSON.

    .venv/bin/python benchmarks/generate_speed.py [--notes 512] [--repeats 3] [--full-prefix]

The model is params/crossval.yaml's (a 2-layer LSTM with melody memory of order 6) with untrained
weights: what sampling costs does not depend on what the weights are. --full-prefix times the
sampler that re-runs the whole melody for every note (``sample(..., incremental=False)``).
Prints each run; the JSON holds the median.
"""
import argparse
import json
import statistics
import time

import torch

from chromasonic_lib.config import CrossvalConfig
from chromasonic_lib.crossval import recipe
from chromasonic_lib.data.encodings import get_encoding
from chromasonic_lib.generate import sample
from chromasonic_lib.models import build_model

p = argparse.ArgumentParser()
p.add_argument("--notes", type=int, default=512)
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--full-prefix", action="store_true")
args = p.parse_args()

cfg = CrossvalConfig(device="cpu")
hparams = recipe(cfg).hparams
model = build_model(cfg.model, hparams, get_encoding(cfg.encoding).vocab_size, seed=cfg.seed)
extra = {"incremental": False} if args.full_prefix else {}
times = []
for i in range(args.repeats):
    start = time.perf_counter()
    tokens = sample(model, [], args.notes, generator=torch.Generator().manual_seed(i), **extra)
    times.append(time.perf_counter() - start)
    print(f"run {i + 1}: {len(tokens)} notes in {times[-1]:.3f} s", flush=True)
print(json.dumps({"notes": args.notes, "seconds": round(statistics.median(times), 3),
                  "model": f"{cfg.model} + memory order {hparams.get('memory_order', 0)}",
                  "sampler": "full prefix" if args.full_prefix else "incremental"}))
