"""What a multi-objective study costs: no pruning, and each trial's latency measured. Last line: JSON.

    .venv/bin/python benchmarks/pareto_cost.py [--trials 20] [--seeds 2] [--dataset chorales] [--epochs 15]

The same search twice for each seed (`make search`'s: the LSTM over params/spaces/default.yaml
on one validation split of the chorales), --trials trials, the family's defaults first; once
minimizing bits/note alone with the median pruner (the default), once minimizing
[bits_per_note, n_params], where Optuna cannot prune and every trial trains until early
stopping or --epochs. Each run is a fresh in-memory study in its own process with one torch
thread, one run at a time, interleaved (seed 0 of both, then seed 1, ...). Each run records its
wall time, the epochs its trials trained, the seconds spent measuring latency (ms_per_note: 256
notes generated per trial) and its best loss. The summary gives, over the seeds, the
multi-objective run's wall time and epochs as a multiple of the single-objective run's. The
JSON goes to benchmarks/results/pareto_cost.json (--out). About 25 minutes on a 2-core CPU.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

root = Path(__file__).resolve().parent.parent
MODES = {"one objective, median pruner": ["bits_per_note"],
         "bits/note and parameters, no pruning": ["bits_per_note", "n_params"]}


def run_one(objectives: list[str], seed: int, args, out: str) -> None:
    """One search, in this process (the child's side): writes its record to ``out``."""
    import logging

    import chromasonic_lib as cl
    import chromasonic_lib.search.objective as objective_mod

    measuring = [0.0]
    measure = objective_mod.measure_costs

    def timed(model):
        start = time.perf_counter()
        try:
            return measure(model)
        finally:
            measuring[0] += time.perf_counter() - start

    objective_mod.measure_costs = timed
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = cl.SearchConfig(study_name="cost", storage="memory", output_dir=tmp, dataset=args.dataset,
                              model="lstm", n_trials=args.trials, epochs=args.epochs, seed=seed,
                              threads=1, device="cpu", plot=False, live=False, objectives=objectives)
        start = time.perf_counter()
        result = cl.run_search(cfg)
        wall = time.perf_counter() - start
    summary = result.summary
    Path(out).write_text(json.dumps({
        "objectives": objectives, "seed": seed, "wall_seconds": round(wall, 1),
        "epochs_trained": summary["epochs_trained"], "states": summary["states"],
        "latency_seconds": round(measuring[0], 2), "best_nats_per_note": summary["best_value"]}))


def summarize(runs: list[dict]) -> dict:
    by_seed: dict[int, dict] = {}
    for r in runs:
        by_seed.setdefault(r["seed"], {})[len(r["objectives"])] = r
    pairs = [(s[1], s[2]) for s in by_seed.values() if 1 in s and 2 in s]
    if not pairs:
        return {}
    return {"seeds": len(pairs),
            "wall_ratio": [round(m["wall_seconds"] / o["wall_seconds"], 2) for o, m in pairs],
            "epochs_ratio": [round(m["epochs_trained"] / o["epochs_trained"], 2) for o, m in pairs],
            "median_wall_ratio": round(statistics.median(m["wall_seconds"] / o["wall_seconds"] for o, m in pairs), 2),
            "latency_share": [round(m["latency_seconds"] / m["wall_seconds"], 4) for _, m in pairs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--dataset", default="chorales")
    ap.add_argument("--out", default=str(root / "benchmarks/results/pareto_cost.json"))
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)     # objectives seed out
    args = ap.parse_args()
    if args.child:
        run_one(args.child[0].split(","), int(args.child[1]), args, args.child[2])
        return
    runs = []
    for seed in range(args.seeds):
        for name, objectives in MODES.items():
            with tempfile.NamedTemporaryFile(suffix=".json") as f:
                subprocess.run([sys.executable, __file__, "--trials", str(args.trials), "--epochs",
                                str(args.epochs), "--dataset", args.dataset, "--child",
                                ",".join(objectives), str(seed), f.name], check=True, cwd=root)
                run = json.loads(Path(f.name).read_text())
            runs.append({"mode": name, **run})
            print(f"seed {seed}, {name}: {run['wall_seconds']:.0f} s, {run['epochs_trained']} epochs, "
                  f"{run['states']['pruned']} pruned, latency measured in {run['latency_seconds']:.1f} s, "
                  f"best {run['best_nats_per_note']:.4f} nats/note", flush=True)
            result = {"command": " ".join(["benchmarks/pareto_cost.py"] + sys.argv[1:]),
                      "dataset": args.dataset, "trials": args.trials, "epochs": args.epochs,
                      "runs": runs, "summary": summarize(runs)}
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"]))


if __name__ == "__main__":
    main()
