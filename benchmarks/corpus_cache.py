"""Cold and warm loading of a corpus, and its size in memory; last line: JSON.

    .venv/bin/python benchmarks/corpus_cache.py [--dataset essen] [--cold]

--cold parses into an empty cache folder (all cores, a progress bar); without it the
user's cache is used (the first run parses, later runs are warm).
"""
import argparse
import json
import os
import tempfile
import time

p = argparse.ArgumentParser()
p.add_argument("--dataset", default="essen")
p.add_argument("--cold", action="store_true")
args = p.parse_args()
if args.cold:
    os.environ["CHROMASONIC_CACHE"] = tempfile.mkdtemp()
from chromasonic_lib.data import load_dataset  # noqa: E402  (after the cache folder is chosen)

t = time.perf_counter()
data = load_dataset(args.dataset)
first = time.perf_counter() - t
t = time.perf_counter()
data = load_dataset(args.dataset)
warm = time.perf_counter() - t
token_bytes = sum(m.nbytes for m in data.melodies)
print(data.describe())
print(json.dumps({"dataset": args.dataset, "melodies": len(data.melodies), "tokens": data.n_notes,
                  "first_load_seconds": round(first, 2), "warm_load_seconds": round(warm, 3),
                  "tokens_megabytes": round(token_bytes / 2**20, 2),
                  "skipped_files": len(data.skipped_files)}))
