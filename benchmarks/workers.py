"""Trials per minute with 1 and 2 worker processes on one study (journal storage); last line: JSON.

    .venv/bin/python benchmarks/workers.py [--seconds 60]

Same settings for both: the original script's task with the LSTM family, pruning on. Each worker gets
an equal share of the cores (threads = cores / workers), as the batch runner gives them.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

root = Path(__file__).resolve().parent.parent
WORKER = """
import sys, json
import chromasonic_lib as cl
cl.run_search(cl.SearchConfig(**json.loads(sys.argv[1])))
"""
p = argparse.ArgumentParser()
p.add_argument("--seconds", type=float, default=60)
args = p.parse_args()
cores = os.cpu_count() or 1
out = {}
for n in (1, 2):
    tmp = tempfile.mkdtemp()
    params = dict(study_name="bench", storage=f"journal:{tmp}/s.log", output_dir=f"{tmp}/out",
                  dataset="synthetic", val_fraction=0.2, test_fraction=0.0, model="lstm",
                  n_trials=10000, timeout=args.seconds, epochs=10, device="cpu", threads=max(1, cores // n),
                  plot=False)
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(params)], cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]
    for proc in procs:
        proc.wait()
    wall = time.perf_counter() - start
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(f"{tmp}/s.log"))
    trials = optuna.load_study(study_name="bench", storage=storage).trials
    finished = [t for t in trials if t.state.is_finished()]
    epochs = sum(len(t.intermediate_values) for t in finished)
    out[f"workers_{n}"] = {"trials": len(finished), "epochs": epochs,
                           "trials_per_minute": round(60 * len(finished) / args.seconds, 1),
                           "epochs_per_minute": round(60 * epochs / args.seconds, 1), "wall_seconds": round(wall, 1)}
    print(n, "worker(s):", out[f"workers_{n}"], flush=True)
out["speedup_epochs"] = round(out["workers_2"]["epochs_per_minute"] / max(out["workers_1"]["epochs_per_minute"], 1e-9), 2)
print(json.dumps(out))
