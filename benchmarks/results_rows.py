"""The shipped rows of docs/results.md, each against the markov baseline on the same folds; last
line: JSON.

    .venv/bin/python benchmarks/results_rows.py [--rows default context ...] [--jobs 2]
    .venv/bin/python benchmarks/results_rows.py --summarize benchmarks/results/results_rows.json

Runs ``python -m chromasonic_lib.crossval --dataset chorales-185 --folds 10 --json`` once for the
markov baseline and once for each row (its added arguments below), one after another, and keeps
each run's JSON (bits/note, the fold spread, every fold's figure, the seconds it took) in
benchmarks/results/results_rows.json (``--out``), written after each run: run it again and the
rows already there are kept. Each row's paired difference from the markov baseline is
``folds.paired_difference`` of the two runs' per-fold bits/note, as ``crossval --compare``
prints it: the folds are the same (they depend only on the collection, K and the seed). The
summary prints the results page's table with that interval. About an hour on a 2-core CPU for
every row (the markov baseline takes seconds); the wall times vary with what else runs.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

root = Path(__file__).resolve().parent.parent
BASE = ["--dataset", "chorales-185", "--folds", "10"]
# name -> (what the results page calls it, the arguments the command adds)
ROWS = {
    "markov": ("markov baseline", ["--model", "markov"]),
    "markov_memory": ("markov + melody memory", ["--params", "params/crossval_markov_memory.yaml"]),
    "default": ("LSTM + melody memory, pitch only (the default)", []),
    "context": ("LSTM + memories + musical context", ["--params", "params/crossval_context.yaml"]),
    "pretrained": ("pitch only, pretrained", ["--params", "params/crossval_pretrained.yaml"]),
    "more_data": ("pitch only, pretrained, more chorales", ["--params", "params/crossval_more_data.yaml"]),
    "context_pretrained": ("context, pretrained", ["--params", "params/crossval_context_pretrained.yaml"]),
    "context_more_data": ("context, pretrained, more chorales",
                          ["--params", "params/crossval_context_more_data.yaml"]),
}


def run(name: str, jobs: int) -> dict:
    cmd = [sys.executable, "-m", "chromasonic_lib.crossval", *BASE, *ROWS[name][1], "--json"]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    start = time.monotonic()
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"results_rows: {name} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"row": name, "label": ROWS[name][0], "arguments": ROWS[name][1],
            "wall_seconds": round(time.monotonic() - start, 1), "result": result}


def summarize(records: dict) -> dict:
    from chromasonic_lib.folds import paired_difference
    markov = records.get("markov")
    table = []
    for name in ROWS:
        if name not in records:
            continue
        r = records[name]["result"]
        row = {"row": name, "label": ROWS[name][0], "bits_per_note": round(r["bits_per_note"], 3),
               "fold_std": round(r["fold_std"], 3), "fold_sem": round(r["fold_sem"], 3),
               "seconds": r["seconds"]}
        if markov and name != "markov":
            d = paired_difference([f["bits_per_note"] for f in markov["result"]["per_fold"]],
                                  [f["bits_per_note"] for f in r["per_fold"]])
            row["against_markov"] = round(d["mean_difference"], 3)
            row["against_markov_ci95"] = [round(x, 3) for x in d["ci95"]]
        table.append(row)
    for row in table:
        vs = (f"{row['against_markov']:+.3f} [{row['against_markov_ci95'][0]:+.3f}, "
              f"{row['against_markov_ci95'][1]:+.3f}]" if "against_markov" in row else "")
        print(f"| {row['label']} | {row['bits_per_note']:.3f} (±{row['fold_std']:.3f}, SEM "
              f"{row['fold_sem']:.3f}) | {vs} | {row['seconds']:.0f} s |", file=sys.stderr)
    return {"rows": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--jobs", type=int, default=0, help="crossval's --jobs (0: its default)")
    ap.add_argument("--out", default=str(root / "benchmarks" / "results" / "results_rows.json"))
    ap.add_argument("--summarize", metavar="JSON", help="print the table of a finished run")
    args = ap.parse_args()
    if args.summarize:
        print(json.dumps(summarize(json.loads(Path(args.summarize).read_text())["records"])))
        return
    out = Path(args.out)
    records = json.loads(out.read_text())["records"] if out.exists() else {}
    for name in ["markov", *[r for r in args.rows if r != "markov"]]:
        if name in records:
            continue
        print(f"results_rows: {name} ...", file=sys.stderr, flush=True)
        records[name] = run(name, args.jobs)
        out.write_text(json.dumps({"machine": _machine(), "records": records}, indent=1) + "\n")
        print(f"results_rows: {name}: {records[name]['result']['bits_per_note']:.3f} bits/note in "
              f"{records[name]['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
    print(json.dumps(summarize(records)))


def _machine() -> str:
    """The CPU's model name and core count, as the results page names the machine."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{names[0] if names else platform.processor()}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
