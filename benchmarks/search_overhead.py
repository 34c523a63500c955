"""Does the search's own cost per trial grow with the study? Last line: JSON.

    .venv/bin/python benchmarks/search_overhead.py [--trials 1000] [--sampler random] [--profile]

`run_search` on many fast trials (markov on small synthetic data, a SQLite study, the history
PNG on), as a user's long search runs. The overhead of a trial is the time from the end of one
objective call to the start of the next: Optuna's bookkeeping, the sampler, our callbacks
(result files, PNG, checkpoints, progress). Its median over the first and the last 100 trials
are compared. Target: last 100 <= 0.1 s and <= 1.3 x the first 100. Other processes on the
cores stretch every wall-clock figure; the `overhead_cpu_*` figures (this process's CPU time
between the calls, without waits for the disk) are less sensitive to them.

The last two figures are Optuna's own: 100 bare ask/tell trials (random sampler, no objective,
none of the workbench's callbacks) on a fresh SQLite study and on the searched one, through the
storage as the search opens it: how much of any growth is the storage's (SQLite's commits and
queries over a larger database), not the workbench's.

The sampler defaults to random, whose cost per trial is flat, so the figure is ours; TPE
rebuilds its model from every trial of the study, so its own cost grows with the study
(`--sampler tpe` measures that). `--profile FILE` shows where the last 100 trials' time goes.
"""
import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root))
import chromasonic_lib as cl                        # noqa: E402
from chromasonic_lib.search.objective import Objective     # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--trials", type=int, default=1000)
p.add_argument("--sampler", default="random")
p.add_argument("--window", type=int, default=100, help="trials at each end to compare")
p.add_argument("--profile", metavar="FILE", help="profile the last --window trials: the top to stderr, "
               "all of it to FILE (pstats)")
args = p.parse_args()

calls: list[tuple[float, float, float, float]] = []     # each objective call's start and end,
                                                        # in wall-clock and CPU seconds
profiler = cProfile.Profile()
_call = Objective.__call__


def timed_call(self, trial):
    if args.profile and len(calls) == args.trials - args.window:
        profiler.enable()
    start, cpu = time.perf_counter(), time.process_time()
    try:
        return _call(self, trial)
    finally:
        calls.append((start, time.perf_counter(), cpu, time.process_time()))


Objective.__call__ = timed_call
cl.setup_logging(logging.WARNING)
tmp = tempfile.mkdtemp()
cfg = cl.SearchConfig(study_name="overhead", storage=f"sqlite:///{tmp}/s.db", output_dir=f"{tmp}/out",
                      dataset="synthetic", n_sequences=60, sequence_length=32, val_fraction=0.2,
                      test_fraction=0.0, model="markov", sampler=args.sampler, n_trials=args.trials,
                      device="cpu", threads=1, plot=True, live=False)
start = time.perf_counter()
result = cl.run_search(cfg)
wall = time.perf_counter() - start
profiler.disable()
gaps = [nxt[0] - prev[1] for prev, nxt in zip(calls, calls[1:])]
cpu_gaps = [nxt[2] - prev[3] for prev, nxt in zip(calls, calls[1:])]
own = [c[1] - c[0] for c in calls]
w = args.window
if args.profile:
    text = io.StringIO()
    profiler.dump_stats(args.profile)
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
    print(text.getvalue(), file=sys.stderr)


def median(xs):
    return round(statistics.median(xs), 4)


def bare_ask_tell(storage: str, name: str, n: int = 100) -> float:
    """Optuna's own cost per trial, none of ours: ``n`` bare ask/suggest/tell on the study (its
    storage opened as a search opens it), median seconds. On a fresh study and on the searched
    one it shows what the storage itself adds as the study grows (SQLite's commits and
    queries over a larger database)."""
    import optuna
    from chromasonic_lib.search.study import open_storage
    study = optuna.load_study(study_name=name, storage=open_storage(storage),
                              sampler=optuna.samplers.RandomSampler(0))
    study.get_trials(deepcopy=False)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, 1.0)
        times.append(time.perf_counter() - start)
    return median(times)


import optuna                                       # noqa: E402
optuna.create_study(study_name="bare", storage=f"sqlite:///{tmp}/bare.db")


out = {"n_trials": len(calls), "sampler": args.sampler,
       "trial_first_100_s": median(own[:w]), "trial_last_100_s": median(own[-w:]),
       "wall_seconds": round(wall, 1), "load_average": [round(x, 1) for x in os.getloadavg()],
       "overhead_cpu_first_100_s": median(cpu_gaps[:w]), "overhead_cpu_last_100_s": median(cpu_gaps[-w:]),
       "overhead_first_100_s": median(gaps[:w]), "overhead_last_100_s": median(gaps[-w:]),
       # Optuna's bare ask/tell (no objective, no callbacks of ours): a fresh study, then this one
       "optuna_ask_tell_fresh_s": bare_ask_tell(f"sqlite:///{tmp}/bare.db", "bare"),
       "optuna_ask_tell_after_s": bare_ask_tell(cfg.storage, "overhead")}
print(json.dumps(out))
