"""Does the live view slow a fast search? Trials per minute with it on and off; last line: JSON.

    .venv/bin/python benchmarks/live_view_cost.py [--trials 30] [--repeats 2] [--model any]

The original script's task (params/original_task.yaml) with a fixed number of trials and no timeout, so both
modes train exactly the same trials (seeded sampler, CPU) and differ only in drawing. "on"
runs `run_search` with the live view's display handle replaced by one that keeps the frames,
as a kernel would send them (same figure, PNG and HTML per frame). Runs alternate off/on.
`draw_share` is the part of the search's time spent drawing frames (the view times each): it
is less sensitive than trials per minute to how busy other processes keep the cores.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root))
import chromasonic_lib as cl                    # noqa: E402
from chromasonic_lib import live                # noqa: E402


class KeptFrames:
    """A display handle that keeps each frame, as ``display(..., display_id=True)`` sends it."""

    def __init__(self):
        self.frames = []

    def update(self, obj, raw=False):
        self.frames.append(json.dumps(obj))     # a kernel serializes each frame to send it


p = argparse.ArgumentParser()
p.add_argument("--trials", type=int, default=30)
p.add_argument("--repeats", type=int, default=2)
p.add_argument("--model", default=None, help="the family to search (default: the original task's)")
args = p.parse_args()

task = yaml.safe_load((root / "params/original_task.yaml").read_text())
task.update(n_trials=args.trials, timeout=0, device="cpu")
if args.model:
    task["model"] = args.model
live.open_display = lambda text: KeptFrames()
views = []                                      # each run's LiveView, which times its frames
_finish = live.LiveView.finish


def finish(self, study, interrupted=False):
    _finish(self, study, interrupted)
    views.append(self)


live.LiveView.finish = finish
runs = {"off": [], "on": []}
for i in range(args.repeats):
    for mode in ("off", "on"):
        tmp = tempfile.mkdtemp()
        cfg = cl.SearchConfig(**{**task, "study_name": f"live-cost-{mode}-{i}",
                                 "storage": f"sqlite:///{tmp}/s.db", "output_dir": f"{tmp}/out",
                                 "live": mode == "on"})
        seen = len(views)
        start = time.perf_counter()
        result = cl.run_search(cfg)
        wall = time.perf_counter() - start
        search = result.total_time          # first trial's start to last trial's end
        row = {"trials": result.n_trials, "search_seconds": round(search, 1),
               "trials_per_min": round(60 * result.n_trials / search, 1), "wall_seconds": round(wall, 1),
               "best_value": round(result.best_value, 4)}
        if len(views) > seen:
            view = views[-1]
            row.update(frames=view.draws, ms_per_frame=round(1000 * view.draw_seconds / view.draws),
                       frame_kb=round(len(view.handle.frames[-1]) / 1024),
                       draw_share=round(view.draw_seconds / search, 4))
        runs[mode].append(row)
        print(mode, row, flush=True)


def mean(rows, key, digits=1):
    return round(sum(r[key] for r in rows) / len(rows), digits)


out = {"task": "params/original_task.yaml", "model": task["model"], "trials": args.trials,
       "repeats": args.repeats, "trials_per_min_off": mean(runs["off"], "trials_per_min"),
       "trials_per_min_on": mean(runs["on"], "trials_per_min"),
       "frames_per_run": mean(runs["on"], "frames"), "ms_per_frame": mean(runs["on"], "ms_per_frame"),
       "frame_kb": runs["on"][-1]["frame_kb"], "draw_share": mean(runs["on"], "draw_share", 4),
       "same_trials": len({r["best_value"] for r in runs["off"] + runs["on"]}) == 1,
       "load_average": [round(x, 1) for x in os.getloadavg()], "runs": runs}
print(json.dumps(out))
