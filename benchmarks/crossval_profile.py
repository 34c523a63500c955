"""Where a cross-validation fold's time goes: one fold of ``params/crossval.yaml`` on chorales-185.

    .venv/bin/python benchmarks/crossval_profile.py [--epochs 4] [--params params/crossval.yaml]

Trains the first fold's model for a few epochs under cProfile, prints the costliest calls and,
last, one JSON line: seconds, epochs, and the share of the time in the recurrent layer
(forward and backward) and in the melody memory.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chromasonic_lib import crossval  # noqa: E402
from chromasonic_lib.config import CrossvalConfig  # noqa: E402
from chromasonic_lib.data import load_dataset  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--params", default="params/crossval.yaml")
    p.add_argument("--dataset", default="chorales-185")
    args = p.parse_args()
    cfg = CrossvalConfig(dataset=args.dataset, params=args.params, epochs=args.epochs, device="cpu")
    data = load_dataset(args.dataset)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    _, _, _, histories = next(crossval.fold_models(cfg, data))
    profile.disable()
    seconds = time.perf_counter() - start
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(12)

    def own(pattern: str) -> float:
        return sum(v[2] for k, v in stats.stats.items() if pattern in k[2])

    def total(pattern: str) -> float:
        return sum(v[3] for k, v in stats.stats.items() if k[2] == pattern)

    recurrent = own("torch.lstm") + own("torch.gru") + own("torch.rnn") + own("run_backward")
    print(json.dumps({"params": args.params, "epochs": histories[0].epochs_trained,
                      "seconds": round(seconds, 1),
                      "forward_backward_share": round(recurrent / seconds, 2),
                      "memory_forward_share": round(total("remember") / seconds, 3)}))


if __name__ == "__main__":
    main()
