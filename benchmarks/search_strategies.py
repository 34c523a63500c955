"""Which sampler and pruner find a good model soonest? Same search, same budget; last line: JSON.

    .venv/bin/python benchmarks/search_strategies.py [--budget 90] [--seeds 5] [--strategies tpe+median,random+median] [--target 1.53]
    .venv/bin/python benchmarks/search_strategies.py --summarize benchmarks/results/search_strategies.json --target 1.55

The search is `make search`'s: the LSTM on the chorales, params/spaces/default.yaml, one
validation split (the default one, seed 42, for every run), 15 epochs, the family's defaults
as trial 0. Each run searches for --budget seconds (the search's own timeout) in a fresh
in-memory study, in its own process with one torch thread, one run at a time; the order is
interleaved (seed 0 of every strategy, then seed 1, ...) so that what else runs on the
machine falls evenly on every strategy. The seed is the study's: the sampler's draws and the
models' initial weights. Each run records its best-so-far validation loss (nats/note) after
every trial, against the search's wall-clock and CPU seconds, and its load average.

The target T is a loss some but not all runs reach: by default just below the best loss of
the family's defaults (trial 0) under any seed, so that reaching it means finding a better
model than the search starts from (see default_target). A strategy's `median_seconds` is the
median wall-clock time to T over the runs that reach it (`median_cpu_seconds` the same in CPU
seconds, less sensitive to other work on the cores); `beat_defaults` counts its runs that beat
their own trial 0. `default` is the strategy that reaches T in the most runs, soonest. The
JSON, with every run's curve ([wall s, CPU s, best, trial] at each new best), goes to
benchmarks/results/search_strategies.json (--out), rewritten after each run;
`--summarize FILE [--target T]` summarizes a saved file again without running anything.
About an hour for 7 strategies x 5 seeds x 90 s on a 2-core CPU.
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

root = Path(__file__).resolve().parent.parent
EPOCHS = 15
DATA_SEED = 42          # the split every run searches on: `make search`'s

# name: (sampler, pruner). A pruner is the library's name for it (make_pruner), or
# ("median", n_startup_trials, n_warmup_steps): a median pruner make_pruner can't express,
# named -s<startup trials>w<warm-up epochs>.
STRATEGIES = {
    "tpe+median": ("tpe", "median"),            # today's default: judged after 1 trial, 1 epoch
    "tpe+median-s5w5": ("tpe", ("median", 5, EPOCHS // 3)),
    "tpe+median-s3w3": ("tpe", ("median", 3, EPOCHS // 5)),
    "tpe+hyperband": ("tpe", "hyperband"),
    "tpe+none": ("tpe", "none"),
    "random+median": ("random", "median"),
    "gp+median": ("gp", "median"),
}


def run_one(strategy: str, seed: int, budget: float, out: str) -> None:
    """One search, in this process (the child's side): writes its record to ``out``."""
    import logging

    import optuna

    import chromasonic_lib as cl
    from chromasonic_lib.data import load_dataset, prepare
    from chromasonic_lib.search import study as study_module
    from trial_clock import best_curve, record_trial_ends

    sampler, pruner = STRATEGIES[strategy]
    if isinstance(pruner, tuple):
        _, startup, warmup = pruner
        # Only this process's searches: create_study looks make_pruner up at call time.
        study_module.make_pruner = lambda name, epochs: optuna.pruners.MedianPruner(
            n_startup_trials=startup, n_warmup_steps=warmup)
        pruner = "median"
    ends = record_trial_ends()
    cl.setup_logging(logging.WARNING)
    tmp = tempfile.mkdtemp(prefix="search-strategies-")
    cfg = cl.SearchConfig(study_name="bench", storage="memory", output_dir=f"{tmp}/out",
                          dataset="chorales", model="lstm", epochs=EPOCHS, seed=seed,
                          sampler=sampler, pruner=pruner, n_trials=100000, timeout=budget,
                          live=False, plot=False, threads=1, device="cpu")
    data = prepare(load_dataset("chorales", seed=DATA_SEED), cfg.val_fraction, cfg.test_fraction,
                   DATA_SEED, "cpu")
    result = cl.run_search(cfg, data)
    curve, best, states = best_curve(result.study.trials, ends)
    epochs = sum(len(t.intermediate_values) for t in result.study.trials)
    search_wall, search_cpu = ends[max(ends)] if ends else (0.0, 0.0)
    Path(out).write_text(json.dumps({
        "best": round(best, 4) if best is not None else None, "trials": len(result.study.trials),
        "states": states, "epochs_trained": epochs, "search_seconds": round(search_wall, 1),
        "search_cpu_seconds": round(search_cpu, 1), "curve": curve}))


def seconds_to(curve: list, target: float, column: int) -> float | None:
    """When a run's best-so-far first reached ``target`` (column 0: wall, 1: CPU seconds)."""
    return next((point[column] for point in curve if point[2] <= target), None)


def median(values: list) -> float | None:
    return round(statistics.median(values), 1) if values else None


def defaults_loss(run: dict) -> float | None:
    """The loss of a run's trial 0, the family's defaults (the first point of its curve)."""
    return run["curve"][0][2] if run["curve"] and run["curve"][0][3] == 0 else None


def default_target(runs: list[dict]) -> float:
    """Just below the best loss the family's defaults reach under any seed: a run reaches it
    only by finding a better model than where every search starts. The defaults' loss varies
    by seed (the initial weights) by more than a short search gains, so a target above some of
    those losses would count seeds, not strategies. When no run gets below it: the median final
    best, which about half of the runs reach."""
    starts = [v for v in map(defaults_loss, runs) if v is not None]
    finals = [r["best"] for r in runs if r["best"] is not None]
    if not finals:
        return 0.0
    below = math.floor(min(starts) * 1000 - 1e-6) / 1000 if starts else None
    if below is not None and min(finals) <= below:
        return below
    return round(statistics.median(finals), 4)


def summarize(runs: list[dict], strategies: list[str], target: float | None) -> dict:
    if target is None:
        target = default_target(runs)
    table = {}
    for name in strategies:
        mine = [r for r in runs if r["strategy"] == name]
        wall = [s for s in (seconds_to(r["curve"], target, 0) for r in mine) if s is not None]
        cpu = [s for s in (seconds_to(r["curve"], target, 1) for r in mine) if s is not None]
        table[name] = {
            "reached": len(wall), "runs": len(mine), "median_seconds": median(wall),
            "median_cpu_seconds": median(cpu),
            # runs whose best beats their own trial 0: not confounded by the families' defaults it starts from
            "beat_defaults": sum(r["best"] < defaults_loss(r) for r in mine
                                 if r["best"] is not None and defaults_loss(r) is not None),
            "median_best": round(statistics.median(r["best"] for r in mine if r["best"] is not None), 4)
            if any(r["best"] is not None for r in mine) else None,
            "mean_complete": round(statistics.mean(r["states"].get("complete", 0) for r in mine), 1) if mine else None,
            "mean_pruned": round(statistics.mean(r["states"].get("pruned", 0) for r in mine), 1) if mine else None,
        }
    ranked = sorted(table, key=lambda n: (-table[n]["reached"], table[n]["median_seconds"] or 1e9))
    loads = [r["loadavg_before"][0] for r in runs]
    return {"target": target, "strategies": table, "default": ranked[0] if runs else None,
            "load_1min": {"median": median(loads), "max": max(loads, default=None)},
            "cpu_per_wall": median([r["cpu_seconds"] / r["wall_seconds"] for r in runs])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=90, help="seconds of search per run")
    p.add_argument("--seeds", type=int, default=5, help="runs per strategy (seeds 0, 1, ...)")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help=f"comma-separated, from {', '.join(STRATEGIES)}")
    p.add_argument("--target", type=float, help="the loss to reach (default: just below the family defaults' best; see default_target)")
    p.add_argument("--out", default=str(root / "benchmarks/results/search_strategies.json"))
    p.add_argument("--summarize", metavar="FILE", help="no runs: summarize the runs a results file "
                   "holds again (e.g. with another --target) and write it to --out")
    p.add_argument("--one", nargs=3, metavar=("STRATEGY", "SEED", "FILE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return run_one(args.one[0], int(args.one[1]), args.budget, args.one[2])
    out = Path(args.out)
    if args.summarize:
        saved = json.loads(Path(args.summarize).read_text())
        runs = saved["runs"]
        strategies = list(dict.fromkeys(r["strategy"] for r in runs))
        return report(out, summarize(runs, strategies, args.target),
                      {k: saved[k] for k in ("budget_seconds", "seeds", "epochs")}, runs)
    strategies = args.strategies.split(",")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        p.error(f"unknown strategy {unknown[0]!r}; choose from {', '.join(STRATEGIES)}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    setup = {"budget_seconds": args.budget, "seeds": args.seeds, "epochs": EPOCHS}
    runs = []
    for seed in range(args.seeds):
        for name in strategies:
            record = Path(tempfile.mkstemp(suffix=".json")[1])
            load = os.getloadavg()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            child = subprocess.run([sys.executable, __file__, "--budget", str(args.budget), "--one",
                                    name, str(seed), str(record)], cwd=root, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if child.returncode:
                sys.exit(f"seed {seed} {name} failed (exit {child.returncode}):\n{child.stderr[-3000:]}")
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            run = {"strategy": name, "seed": seed, "wall_seconds": round(time.perf_counter() - start, 1),
                   "cpu_seconds": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
                   "loadavg_before": [round(x, 2) for x in load],
                   "loadavg_after": [round(x, 2) for x in os.getloadavg()], **json.loads(record.read_text())}
            record.unlink()
            runs.append(run)
            print(f"seed {seed} {name}: best {run['best']} after {run['trials']} trials {run['states']}; "
                  f"{run['wall_seconds']} s wall, {run['cpu_seconds']} s CPU, load {load[0]:.2f}", flush=True)
            report(out, summarize(runs, strategies, args.target), setup, runs, final=False)
    report(out, summarize(runs, strategies, args.target), setup, runs)


def report(out: Path, summary: dict, setup: dict, runs: list[dict], final: bool = True) -> None:
    """Write the summary, the setup and every run to ``out``; when final, print the summary."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**summary, **setup, "runs": runs}, indent=1) + "\n")
    if final:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
