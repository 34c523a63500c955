"""The search on the original script's task, as a user runs it; last line: JSON with the outcome.

    .venv/bin/python benchmarks/original_search.py

Runs `papermill notebooks/search.ipynb runs/original.ipynb -f params/original_task.yaml` on a fresh
study and reports the best value against the floor, trials run and pruned, and the epochs
that pruning saved. Target: best - floor <= 0.015 nats within 60 s of search on 2 cores.
"""
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

root = Path(__file__).resolve().parent.parent
name = f"seed-bench-{uuid.uuid4().hex[:6]}"
start = time.perf_counter()
subprocess.run([str(root / ".venv/bin/papermill"), "notebooks/search.ipynb", f"runs/{name}.ipynb",
                "-f", "params/original_task.yaml", "-p", "study_name", name, "--cwd", ".", "-k", "python3",
                "--no-progress-bar"], cwd=root, check=True, stderr=subprocess.DEVNULL)
wall = time.perf_counter() - start
res = json.loads((root / "runs" / name / "optimization_results.json").read_text())
out = {"best_value": round(res["best_value"], 4), "floor": round(res["floor"], 4),
       "gap": round(res["best_value"] - res["floor"], 4), "markov_baseline": round(res["markov_baseline"], 4),
       "trials": res["n_trials"], "states": res["states"], "epochs_trained": res["epochs_trained"],
       "epochs_saved_by_pruning": res["epochs_saved_by_pruning"], "search_seconds": round(res["total_time"], 1),
       "notebook_seconds": round(wall, 1), "best_params": res["best_params"], "study": name}
print(json.dumps(out))
sys.exit(0)
