"""Run the search notebook once per parameter file, in parallel, and summarise:
``python -m chromasonic_lib.batch params/a.yaml params/b.yaml --parallel 2``.

Each run is a papermill execution of ``notebooks/search.ipynb`` (its executed copy lands in
``--out``); one failure does not stop the others, and the exit code is non-zero if any
failed. ``--workers N`` starts N workers on one parameter file: one study, shared through
its storage (use PostgreSQL or ``journal:<file>``; SQLite is not safe for several processes).
With ``device: auto``, the workers are spread over the file's ``devices`` (auto: every GPU):
worker i runs on device i mod n.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .config import check_int, check_param_file
from .search.config import SearchConfig
from .errors import ChromasonicError, ConfigError
from .paths import mask_url, project_root, resolve

log = logging.getLogger(__name__)


@dataclass
class Job:
    name: str
    param_file: str
    params: dict = field(default_factory=dict)
    output: Path | None = None
    status: str = "pending"
    error: str = ""
    seconds: float = 0.0
    best_value: float | None = None
    n_trials: int | None = None
    study: str = ""


def plan(param_files: list[str], parallel: int, workers: int, out: Path) -> list[Job]:
    """Check every file before anything runs; a bad one becomes a failed job, not a crash."""
    check_int("parallel", parallel)
    check_int("workers", workers)
    if workers > 1 and len(param_files) != 1:
        raise ConfigError(f"workers > 1 takes exactly one parameter file, got {len(param_files)}")
    jobs = []
    for f in param_files:
        stem = Path(f).stem
        names = [f"{stem}-worker{i + 1}" for i in range(workers)] if workers > 1 else [stem]
        assigned: list[str] = []
        for i, name in enumerate(names):
            job = Job(name, f, output=out / f"{name}.ipynb")
            try:
                job.params = check_param_file("parameter file", f)
                cfg = SearchConfig(**job.params)
                job.study = cfg.study_name
                if workers > 1 and cfg.device == "auto":
                    assigned = assigned or worker_devices(cfg, workers)
                    job.params["devices"] = assigned[i]
                if workers > 1 and cfg.storage.startswith("sqlite"):
                    log.warning("%s: %d workers on SQLite storage: SQLite is not safe for several "
                                "processes; use journal:<file> or postgresql://", f, workers)
                cores = os.cpu_count() or 1
                job.params.setdefault("threads", max(1, cores // (parallel if workers == 1 else workers)))
            except (ChromasonicError, TypeError) as e:   # a YAML error quotes the file's line
                job.status, job.error = "failed", mask_url(str(e))
            jobs.append(job)
    return jobs


def worker_devices(cfg: SearchConfig, workers: int) -> list[str]:
    """Each worker's ``devices``: the search's devices on this machine, spread over them."""
    from .search.devices import parse_devices, spread
    return spread([str(d) for d in parse_devices(cfg.devices, cfg.device)], workers)


def run_job(job: Job, notebook: Path) -> Job:
    import papermill as pm
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(notebook), str(job.output), parameters=job.params,
                            cwd=str(project_root()), kernel_name="python3", progress_bar=False)
        job.status = "ok"
    except Exception as e:  # PapermillExecutionError carries the notebook's own error
        job.status = "failed"
        # A driver's own message may quote the storage URL; the summary may be shared.
        job.error = mask_url(f"{getattr(e, 'ename', type(e).__name__)}: {getattr(e, 'evalue', e)}")
    job.seconds = time.perf_counter() - start
    try:
        cfg_out = job.params.get("output_dir") or f"runs/{job.study}"
        res = json.loads((resolve(cfg_out) / "optimization_results.json").read_text())
        job.best_value, job.n_trials = res.get("best_value"), res.get("n_trials")
    except (OSError, ValueError):
        pass
    return job


def summary_table(jobs: list[Job]) -> str:
    rows = [("run", "study", "best value", "trials", "time (s)", "status")]
    for j in jobs:
        rows.append((j.name, j.study or "-", f"{j.best_value:.4f}" if j.best_value is not None else "-",
                     str(j.n_trials if j.n_trials is not None else "-"), f"{j.seconds:.0f}",
                     j.status if j.status == "ok" else f"FAILED: {j.error[:150]}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chromasonic_lib.batch", description=__doc__.split("\n\n")[0])
    p.add_argument("param_files", nargs="+", help="YAML parameter files for the search notebook")
    p.add_argument("--parallel", type=int, default=1, help="how many runs at once")
    p.add_argument("--workers", type=int, default=1, help="N workers on one parameter file (one shared study)")
    p.add_argument("--notebook", default="notebooks/search.ipynb")
    p.add_argument("--out", default="runs/batch", help="folder for the executed notebooks")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = resolve(args.out)
        out.mkdir(parents=True, exist_ok=True)
        notebook = resolve(args.notebook)
        if not notebook.is_file():
            raise ConfigError(f"notebook: file not found: {args.notebook!r}")
        jobs = plan(args.param_files, args.parallel, args.workers, out)
    except ChromasonicError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    todo = [j for j in jobs if j.status == "pending"]
    for j in jobs:
        if j.status == "failed":
            print(f"{j.name}: not started: {j.error}", flush=True)
    n_at_once = args.workers if args.workers > 1 else args.parallel
    with ThreadPoolExecutor(max(1, n_at_once)) as pool, tqdm(total=len(todo), desc="runs", unit="run") as bar:
        futures = [pool.submit(run_job, j, notebook) for j in todo]
        for fut in as_completed(futures):
            job = fut.result()
            bar.update()
            tqdm.write(f"{job.name}: {job.status} in {job.seconds:.0f} s"
                       + (f" ({job.error[:200]})" if job.error else ""))
    print()
    print(summary_table(jobs))
    return 0 if all(j.status == "ok" for j in jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
