"""How many of a shared study's trials are distinct configurations; last line: JSON.

    .venv/bin/python benchmarks/distinct_trials.py [--storage postgresql://postgres@127.0.0.1:5432/test]

Three worker processes started together on one new study, 4 trials each (TPE, then random
sampler), and a random-sampler study run twice (4 + 4 trials): the counts of distinct parameter
sets among the finished trials, and of family-default trials queued. Tiny GRUs on synthetic data.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import optuna

root = Path(__file__).resolve().parent.parent
WORKER = """
import sys, json
import chromasonic_lib as cl
cl.run_search(cl.SearchConfig(**json.loads(sys.argv[1])))
"""
SPACE = {"training": {"learning_rate": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True}},
         "models": {"gru": {"hidden_size": {"type": "int", "low": 8, "high": 24}, "embedding_dim": 8}}}


def run(workers: int, params: dict) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(params)], cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]
    assert all(p.wait() == 0 for p in procs), "a worker failed"


def counts(name: str, storage: str) -> dict:
    study = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]
    distinct = {json.dumps(t.params, sort_keys=True) for t in done}
    defaults = sum(t.user_attrs.get("enqueued") == "family defaults" for t in study.trials)
    optuna.delete_study(study_name=name, storage=storage)
    return {"finished": len(done), "distinct": len(distinct), "defaults_queued": defaults}


p = argparse.ArgumentParser()
p.add_argument("--storage", default="postgresql://postgres@127.0.0.1:5432/test")
args = p.parse_args()
out = {}
with tempfile.TemporaryDirectory() as tmp:
    base = dict(storage=args.storage, dataset="synthetic", n_sequences=30, sequence_length=20, model="gru",
                search_space=SPACE, epochs=2, device="cpu", threads=1, plot=False, pruner="none", n_trials=4)
    for sampler in ("tpe", "random"):
        name = f"distinct-{uuid.uuid4().hex[:8]}"
        run(3, dict(base, study_name=name, sampler=sampler, output_dir=f"{tmp}/{name}"))
        out[f"3_workers_{sampler}"] = counts(name, args.storage)
        print(sampler, "3 workers x 4 trials:", out[f"3_workers_{sampler}"], flush=True)
    name = f"distinct-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        run(1, dict(base, study_name=name, sampler="random", output_dir=f"{tmp}/{name}"))
    out["resumed_random_4_plus_4"] = counts(name, args.storage)
    print("random, 4 + 4 trials:", out["resumed_random_4_plus_4"], flush=True)
print(json.dumps(out))
