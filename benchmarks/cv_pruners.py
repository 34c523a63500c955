"""Which pruner serves a cross-validated search best? Same search, same budget; last line: JSON.

    .venv/bin/python benchmarks/cv_pruners.py [--budget 1800] [--seeds 3] [--pruners wilcoxon,median,none] [--jobs 1]
    .venv/bin/python benchmarks/cv_pruners.py --finish-pruned 6      # then: would a pruned trial have won?
    .venv/bin/python benchmarks/cv_pruners.py --summarize benchmarks/results/cv_pruners.json

Each run is a cross-validated search as params/search_chorales_other_pitch.yaml runs it: the
pitch-only LSTM space (params/spaces/crossval_pitch.yaml, `--space`), on chorales-other less every
copy of a chorales-185 tune, 5 folds, 30 epochs, TPE, the study's trial 0 the shipped
configuration (the space's start_from). Only the pruner differs. Each run searches for --budget
seconds (the search's own timeout) in a fresh in-memory study, in a process of its own with one
torch thread and one fold at a time, --jobs runs at a time (at most one per core); the order is
interleaved (seed 0 of every pruner, then seed 1, ...) so that what else runs on the machine falls
evenly on every pruner, and runs side by side are of different pruners. The
seed is the study's: the sampler's draws and the models' initial weights (the folds are the same
in every run).

For each pruner, over its runs:
- `median_seconds_to_beat_shipped`: the wall-clock seconds from the search's start until a trial
  beats trial 0, the shipped configuration under the same seed and folds (runs that never do are
  counted in `beat_shipped`, not in the median), and `median_cpu_seconds_to_beat_shipped`, the
  search's CPU seconds until then (what else runs on the machine moves it less);
- `trials_per_hour`: finished trials (complete, or pruned by the pruner: not the one the budget
  cut) per hour of search, and `trials_per_cpu_hour` per hour of the search's CPU time;
- `median_best`: the final best (nats/note, cross-validated).
`--finish-pruned N` then trains a sample of N pruned trials (over every run, drawn with a fixed
seed) to the end, unpruned, on the same folds and seed, and counts those that would have beaten
their run's best at the moment they were pruned (`pruned_would_have_won`). The JSON, with every
run's curve ([wall s, CPU s, best, trial] at each new best), goes to
benchmarks/results/cv_pruners.json (--out), rewritten after each run. Run again with the same
settings, it resumes: the runs already in --out are kept and the others run. At the default
budget, 3 pruners x 3 seeds take about 4 1/2 hours on a 2-core CPU one run at a time (2 1/4 with
--jobs 2), and the sample 5-10 minutes a trial.
"""
import argparse
import concurrent.futures
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

root = Path(__file__).resolve().parent.parent
PRUNERS = ["wilcoxon", "median", "none"]


def search_config(args, seed: int, pruner: str, tmp: str, **kw):
    import chromasonic_lib as cl
    return cl.SearchConfig(**{
        "study_name": "bench", "storage": "memory", "output_dir": f"{tmp}/out",
        "dataset": args.dataset, "exclude_copies_of": args.exclude_copies_of, "model": "lstm",
        "search_space": args.space, "folds": args.folds, "fold_jobs": 1, "epochs": args.epochs,
        "seed": seed, "sampler": "tpe", "pruner": pruner, "n_trials": 100000,
        "timeout": args.budget, "live": False, "plot": False, "threads": 1, "device": "cpu", **kw})


def run_one(args, pruner: str, seed: int, out: str) -> None:
    """One search, in this process (the child's side): writes its record to ``out``."""
    import logging

    import optuna

    import chromasonic_lib as cl
    from trial_clock import best_curve, record_trial_ends
    ends = record_trial_ends()
    cl.setup_logging(logging.WARNING)
    result = cl.run_search(search_config(args, seed, pruner, tempfile.mkdtemp(prefix="cv-pruners-")))
    trials = result.study.trials
    curve, best, states = best_curve(trials, ends)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    # Each pruned trial with the run's best at the moment it was pruned.
    pruned = [{"trial": t.number, "config": t.user_attrs.get("config"), "pruned_on": t.user_attrs.get("pruned_on"),
               "timeout": bool(t.user_attrs.get("stopped_by")),     # cut by the budget, not the pruner
               "best_then": min((d.value for d in done if ends[d.number][0] < ends[t.number][0]), default=None)}
              for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    shipped = result.study.trials[0].value if result.study.trials else None
    search_wall, search_cpu = ends[max(ends)] if ends else (0.0, 0.0)
    Path(out).write_text(json.dumps({
        "best": round(best, 4) if best is not None else None, "shipped": shipped,
        "trials": len(result.study.trials), "states": states, "search_seconds": round(search_wall, 1),
        "search_cpu_seconds": round(search_cpu, 1), "curve": curve, "pruned": pruned}))


def finish_one(args, seed: int, config: dict, out: str) -> None:
    """A pruned trial's configuration trained to the end (the child's side): its value."""
    import logging

    import chromasonic_lib as cl
    cl.setup_logging(logging.WARNING)
    tmp = tempfile.mkdtemp(prefix="cv-pruners-finish-")
    params, space = Path(tmp) / "params.yaml", Path(tmp) / "space.yaml"
    params.write_text(yaml.safe_dump(config))
    # The space's ranges, starting from this configuration alone: the one trial runs it.
    spec = yaml.safe_load(Path(args.space).read_text())
    spec["start_from"] = [str(params)]
    space.write_text(yaml.safe_dump(spec))
    result = cl.run_search(search_config(args, seed, "none", tmp, search_space=str(space),
                                         n_trials=1, timeout=0))
    Path(out).write_text(json.dumps({"value": result.study.trials[0].value}))


def child(args, *what: str) -> dict:
    record = Path(tempfile.mkstemp(suffix=".json")[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    passed = ["--budget", str(args.budget), "--dataset", args.dataset, "--exclude-copies-of",
              args.exclude_copies_of, "--space", args.space, "--folds", str(args.folds),
              "--epochs", str(args.epochs)]
    load, start = os.getloadavg(), time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, *passed, *what, str(record)], cwd=root,
                                env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)     # this child's own CPU, whatever runs beside it
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            sys.exit(f"{' '.join(what)} failed (exit {proc.returncode}):\n{err.read()[-3000:]}")
    result = {"wall_seconds": round(time.perf_counter() - start, 1),
              "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
              "loadavg_before": [round(x, 2) for x in load], **json.loads(record.read_text())}
    record.unlink()
    return result


def in_parallel(jobs: int, items: list, fn):
    """(item, fn(item)) for each item, ``jobs`` at a time, started in order, as each ends."""
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = {pool.submit(fn, item): item for item in items}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()


def median(values: list):
    return round(statistics.median(values), 4) if values else None


def by_pruner(run: dict) -> list[dict]:
    """The run's trials that its pruner stopped, not the one the budget cut (with one trial at
    a time, only the last one can be; older records do not say which)."""
    return [q for q in run["pruned"] if not q.get("timeout", q["trial"] == run["trials"] - 1)]


def summarize(runs: list[dict], finished: list[dict]) -> dict:
    table = {}
    for name in dict.fromkeys(r["pruner"] for r in runs):
        mine = [r for r in runs if r["pruner"] == name]
        # [wall s, CPU s] at the first trial that beats the shipped configuration (trial 0, the
        # curve's first point), per run.
        beat = [next((p[:2] for p in r["curve"] if p[3] != 0), None) for r in mine]
        done = [r["states"].get("complete", 0) + len(by_pruner(r)) for r in mine]
        table[name] = {
            "runs": len(mine), "beat_shipped": sum(b is not None for b in beat),
            "median_seconds_to_beat_shipped": median([b[0] for b in beat if b is not None]),
            "median_cpu_seconds_to_beat_shipped": median([b[1] for b in beat if b is not None]),
            "trials_per_hour": median([3600 * d / max(r["search_seconds"], 1) for d, r in zip(done, mine)]),
            # The same per hour of the search's own CPU time: what else ran on the machine
            # (and how many runs ran side by side) moves it less.
            "trials_per_cpu_hour": median([3600 * d / max(r["search_cpu_seconds"], 1) for d, r in zip(done, mine)]),
            "median_best": median([r["best"] for r in mine if r["best"] is not None]),
            "mean_complete": round(statistics.mean(r["states"].get("complete", 0) for r in mine), 1),
            "mean_pruned": round(statistics.mean(len(by_pruner(r)) for r in mine), 1)}
        mine_finished = [f for f in finished if f["pruner"] == name]
        if mine_finished:
            table[name]["pruned_finished"] = len(mine_finished)
            table[name]["pruned_would_have_won"] = sum(
                f["best_then"] is not None and f["value"] < f["best_then"] for f in mine_finished)
    # Most runs that beat the shipped configuration, then the soonest in CPU seconds (what else
    # runs on the machine moves the wall clock more), then the best found.
    ranked = sorted(table, key=lambda n: (-table[n]["beat_shipped"],
                                          table[n]["median_cpu_seconds_to_beat_shipped"] or 1e9,
                                          table[n]["median_best"] or 1e9))
    return {"pruners": table, "better": ranked[0] if table else None,
            "load_1min_median": median([r["loadavg_before"][0] for r in runs])}


def write(out: Path, saved: dict) -> None:
    saved.update(summarize(saved["runs"], saved.get("finished_pruned", [])))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(saved, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=1800, help="seconds of search per run")
    p.add_argument("--seeds", type=int, default=3, help="runs per pruner (seeds 0, 1, ...)")
    p.add_argument("--pruners", default=",".join(PRUNERS), help="comma-separated, from " + ", ".join(PRUNERS))
    p.add_argument("--dataset", default="chorales-other")
    p.add_argument("--exclude-copies-of", default="chorales-185")
    p.add_argument("--space", default="params/spaces/crossval_pitch.yaml")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (one torch thread each)")
    p.add_argument("--out", default=str(root / "benchmarks/results/cv_pruners.json"))
    p.add_argument("--finish-pruned", type=int, metavar="N", help="no searches: train N pruned trials "
                   "of the runs in --out to the end and record whether they would have won")
    p.add_argument("--summarize", metavar="FILE", help="no runs: summarize FILE again into --out")
    p.add_argument("--one", nargs=3, metavar=("PRUNER", "SEED", "FILE"), help=argparse.SUPPRESS)
    p.add_argument("--finish", nargs=3, metavar=("SEED", "CONFIG", "FILE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return run_one(args, args.one[0], int(args.one[1]), args.one[2])
    if args.finish:
        return finish_one(args, int(args.finish[0]), json.loads(args.finish[1]), args.finish[2])
    out = Path(args.out)
    if args.summarize:
        saved = json.loads(Path(args.summarize).read_text())
        write(out, saved)
        return print(json.dumps(summarize(saved["runs"], saved.get("finished_pruned", []))))
    if args.finish_pruned:
        saved = json.loads(out.read_text())
        pool = [(r, q) for r in saved["runs"] for q in by_pruner(r) if q["config"]]
        done = {(f["pruner"], f["seed"], f["trial"]) for f in saved.get("finished_pruned", [])}
        pool = [(r, q) for r, q in pool if (r["pruner"], r["seed"], q["trial"]) not in done]
        sample = random.Random(0).sample(pool, min(args.finish_pruned, len(pool)))
        for (r, q), value in in_parallel(args.jobs, sample, lambda rq: child(
                args, "--finish", str(rq[0]["seed"]), json.dumps(rq[1]["config"]))["value"]):
            saved.setdefault("finished_pruned", []).append(
                {"pruner": r["pruner"], "seed": r["seed"], "trial": q["trial"], "value": value,
                 "best_then": q["best_then"], "run_best": r["best"]})
            print(f"{r['pruner']} seed {r['seed']} trial {q['trial']}: {value:.4f} finished, best "
                  f"then {q['best_then']}", flush=True)
            write(out, saved)
        return print(json.dumps(summarize(saved["runs"], saved.get("finished_pruned", []))))
    pruners = args.pruners.split(",")
    unknown = [x for x in pruners if x not in PRUNERS]
    if unknown:
        p.error(f"unknown pruner {unknown[0]!r}; choose from {', '.join(PRUNERS)}")
    settings = {"budget_seconds": args.budget, "jobs": args.jobs, "dataset": args.dataset,
                "exclude_copies_of": args.exclude_copies_of, "space": args.space, "folds": args.folds,
                "epochs": args.epochs}
    saved = {**settings, "seeds": args.seeds, "runs": []}
    if out.exists():            # resumed: the runs already in --out are kept, not run again
        saved = json.loads(out.read_text())
        differ = [k for k, v in settings.items() if saved.get(k) != v]
        if differ:
            p.error(f"{out} holds runs with other settings ({', '.join(differ)}): give another --out")
        saved["seeds"] = max(saved.get("seeds", 0), args.seeds)
    done = {(r["seed"], r["pruner"]) for r in saved["runs"]}
    order = [(seed, name) for seed in range(args.seeds) for name in pruners if (seed, name) not in done]
    if done:
        print(f"{len(done)} runs already in {out}; {len(order)} to go", flush=True)
    for (seed, name), record in in_parallel(args.jobs, order,
                                            lambda sn: child(args, "--one", sn[1], str(sn[0]))):
        run = {"pruner": name, "seed": seed, "jobs": args.jobs, **record}
        saved["runs"].append(run)
        print(f"seed {seed} {name}: best {run['best']} (shipped {run['shipped']}) after "
              f"{run['trials']} trials {run['states']}; {run['wall_seconds']} s", flush=True)
        write(out, saved)
    print(json.dumps(summarize(saved["runs"], [])))


if __name__ == "__main__":
    main()
