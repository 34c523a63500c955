"""Many worker processes on one PostgreSQL study: throughput and what each trial costs the
storage; last line: JSON.

    .venv/bin/python benchmarks/many_workers.py [--workers 1 8 32] [--trials 8]
        [--storage postgresql://postgres@127.0.0.1:5432/test] [--proxy] [--set KEY=VALUE ...]

``--set`` gives every worker a search parameter of its own choosing (``--set epochs=2``),
over the benchmark's; the value is read as YAML.

``--proxy`` runs the same through Optuna's gRPC storage proxy: one ``python -m
chromasonic_lib.proxy`` in front of the database, started once, and workers with
``storage: grpc://127.0.0.1:<port>`` (the study is still read and deleted in the database).

For each worker count, a new study on the PostgreSQL server; every worker is a process of its
own running ``run_search`` for ``--trials`` tiny markov trials (synthetic melodies, one epoch,
random sampler, one thread, its own output folder, one shared artifact store, logging set up
as the search notebook sets it), so the storage, not training, is what is measured. Per worker count:

- ``trials_finished``: trials that ended COMPLETE or PRUNED (``complete``, ``pruned``);
  ``failed``: trials that ended FAIL, counted apart (not finished);
- ``trials_per_minute``: finished trials over the span from the first trial's start to the last
  one's end (process start-up, importing torch, is left out; ``wall_seconds`` has it);
- ``median_storage_seconds_per_trial``: every storage call a worker makes goes through the
  one door (``RetryingStorage.call``), timed here; a trial's share runs from the end of the
  previous trial's tell to the end of its own (its ask, reports, attributes, tell, and the
  callbacks after the previous trial: result files, best_model.pt). A worker's set-up (study
  creation or loading, before its first trial) and its end are left out. It is wall-clock
  time: with more processes than cores it includes waiting for a core, which
  ``median_storage_cpu_seconds_per_trial`` (the calling thread's own CPU time) does not;
  ``storage_seconds_per_trial_by_method`` names where the time goes (the five largest);
- ``storage_cpu_seconds_per_trial``: what a trial costs the machine in storage work, however
  many processes share its cores: the workers' CPU time inside storage calls (mean per trial)
  plus the database server's (every ``postgres`` process, those that ended included) and, with
  ``--proxy``, the proxy's, over the run, divided by the trials finished. On a machine with
  fewer cores than workers this, not the wall-clock figure, says whether the storage scales:
  wall-clock time there is mostly waiting for a core (``load_average``);
- ``duplicates``: finished trials whose parameters another finished trial already had (a trial
  run twice), retries of stale trials excepted; ``lost``: trials asked for that never finished
  (COMPLETE or PRUNED); ``running_left``, ``waiting_left``: trials still RUNNING or WAITING
  after every worker exited; ``workers_failed``: worker processes that exited non-zero (their
  log's tail goes to stderr).

Studies are deleted afterwards. The exit code is 1, with a one-line reason on stderr, when any
worker process failed, any trial ended FAIL or was left RUNNING or WAITING, or trials were lost
or repeated; the summary (the JSON line printed last) is printed first either way.
"""
import argparse
import pwd
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

root = Path(__file__).resolve().parent.parent

# A worker: times every call through the storage door and files each under the trial it
# serves (a trial's bucket closes with its tell), then writes the buckets to argv[2].
WORKER = """
import json, sys, time
from optuna.trial import TrialState
import chromasonic_lib as cl
from chromasonic_lib.search import storage as door

buckets, current, methods = [], [0.0, 0.0], {}
real_call = door.RetryingStorage.call

def call(self, method, *args, **kwargs):
    start, cpu = time.perf_counter(), time.thread_time()
    try:
        return real_call(self, method, *args, **kwargs)
    finally:
        took = time.perf_counter() - start
        current[0] += took
        current[1] += time.thread_time() - cpu
        if buckets:             # after the first trial: what a trial costs, by method
            methods[method] = methods.get(method, 0.0) + took
        state = kwargs.get("state", args[1] if len(args) > 1 else None)
        if method == "set_trial_state_values" and isinstance(state, TrialState) and state.is_finished():
            buckets.append(list(current))
            current[:] = [0.0, 0.0]

door.RetryingStorage.call = call
cl.setup_logging()          # as the search notebook does: our line per trial, not Optuna's too
result = cl.run_search(cl.SearchConfig(**json.loads(sys.argv[1])))
# The first bucket holds the worker's set-up too: leave it out unless it is the only one.
kept = buckets[1:] or buckets
open(sys.argv[2], "w").write(json.dumps({"per_trial": [b[0] for b in kept], "cpu_per_trial": [b[1] for b in kept],
                                         "methods": methods, "trials": len(kept)}))
"""


def run(n: int, args, tmp: Path) -> dict:
    name = f"many-workers-{n}-{int(time.time())}"
    space = tmp / "space.yaml"
    space.write_text(json.dumps({"models": {"markov": {
        "order": {"type": "int", "low": 1, "high": 3},
        "alpha": {"type": "float", "low": 0.05, "high": 2.0, "log": True}}}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    procs = []
    server_cpu = _server_cpu(args)
    start = time.perf_counter()
    for i in range(n):
        params = dict(study_name=name, storage=args.worker_storage, dataset="synthetic", n_sequences=30,
                      sequence_length=20, model="markov", search_space=str(space), epochs=1,
                      n_trials=args.trials, sampler="random", pruner="none", device="cpu", threads=1,
                      plot=False, live=False, output_dir=str(tmp / f"out{i}"),
                      artifact_store=str(tmp / "artifacts"))
        params.update(args.set)
        log = (tmp / f"w{i}.log").open("w")
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(params), str(tmp / f"w{i}.json")],
                                      cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT))
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    load = os.getloadavg()[0]
    server_cpu = _server_cpu(args) - server_cpu
    try:
        study = optuna.load_study(study_name=name, storage=args.storage)
    except KeyError:                # no worker got as far as creating the study
        study = None
    trials = study.get_trials(deepcopy=False) if study is not None else []
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    seen, duplicates = set(), 0
    for t in finished:
        if "failed_trial" in t.system_attrs:        # a stale trial's retry repeats it on purpose
            continue
        key = json.dumps(t.params, sort_keys=True)
        duplicates += key in seen
        seen.add(key)
    reports = [json.loads((tmp / f"w{i}.json").read_text()) for i in range(n) if (tmp / f"w{i}.json").exists()]
    per_trial = [s for r in reports for s in r["per_trial"]]
    cpu = [s for r in reports for s in r["cpu_per_trial"]]
    counted = sum(r["trials"] for r in reports) or 1
    client_cpu = sum(cpu) / len(cpu) if cpu else 0.0
    methods = {}
    for r in reports:
        for m, seconds in r["methods"].items():
            methods[m] = methods.get(m, 0.0) + seconds / counted
    top = dict(sorted(((m, round(v, 4)) for m, v in methods.items()), key=lambda kv: -kv[1])[:5])
    starts = [t.datetime_start for t in finished if t.datetime_start]
    ends = [t.datetime_complete for t in finished if t.datetime_complete]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")
    if study is not None:
        optuna.delete_study(study_name=name, storage=args.storage)
    failed_workers = [i for i, c in enumerate(codes) if c != 0]
    for i in failed_workers:
        print(f"worker {i} exited {codes[i]}:", (tmp / f"w{i}.log").read_text()[-2000:], file=sys.stderr)
    return {"workers": n, "trials_asked": n * args.trials, "trials_finished": len(finished),
            "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "failed": sum(t.state == TrialState.FAIL for t in trials),
            "trials_per_minute": round(60 * len(finished) / span, 1) if span > 0 else None,
            "median_storage_seconds_per_trial": round(statistics.median(per_trial), 4) if per_trial else None,
            "median_storage_cpu_seconds_per_trial": round(statistics.median(cpu), 4) if cpu else None,
            "storage_seconds_per_trial_by_method": top,
            "storage_cpu_seconds_per_trial": {
                "workers": round(client_cpu, 4), "server": round(server_cpu / max(1, len(finished)), 4),
                "total": round(client_cpu + server_cpu / max(1, len(finished)), 4)},
            "load_average": round(load, 1),
            "duplicates": duplicates, "lost": max(0, n * args.trials - len(finished)),
            "running_left": sum(t.state == TrialState.RUNNING for t in trials),
            "waiting_left": sum(t.state == TrialState.WAITING for t in trials),
            "workers_failed": len(failed_workers),
            "trial_span_seconds": round(span, 1) if span == span else None,
            "wall_seconds": round(wall, 1)}


def problems(r: dict) -> list[str]:
    """What went wrong in one worker count's run, in words; empty when nothing did."""
    said = [(r["workers_failed"], "worker process(es) exited non-zero"), (r["failed"], "trial(s) ended FAIL"),
            (r["running_left"], "trial(s) left RUNNING"), (r["waiting_left"], "trial(s) left WAITING"),
            (r["lost"], "trial(s) lost"), (r["duplicates"], "trial(s) repeated")]
    return [f"{count} {what}" for count, what in said if count]


def _set(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"KEY=VALUE expected, got {item!r}")
    return key, yaml.safe_load(value)


def _ticks(pid: str, children: bool = False) -> int:
    """A process's CPU clock ticks (user and system), with its reaped children's if asked."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:13] + (fields[13:15] if children else []))


def _user_cpu(user: str) -> float:
    """CPU seconds so far of every process of ``user``, a server's ended connections included
    (they are its main process's reaped children)."""
    uid, ticks = pwd.getpwnam(user).pw_uid, 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                ticks += _ticks(entry.name, children=True)
        except (OSError, ValueError, IndexError):
            continue                # ended meanwhile
    return ticks / os.sysconf("SC_CLK_TCK")


def _server_cpu(args) -> float:
    """CPU seconds so far of the storage's servers on this machine: PostgreSQL, and the proxy."""
    try:
        total = _user_cpu("postgres")
    except KeyError:                # no postgres user: the server is elsewhere, not counted
        total = 0.0
    return total + (_ticks(str(args.proxy_pid)) / os.sysconf("SC_CLK_TCK") if args.proxy_pid else 0.0)


def start_proxy(storage: str) -> tuple[subprocess.Popen, str]:
    """``python -m chromasonic_lib.proxy`` on a free loopback port; it and the workers' URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "chromasonic_lib.proxy", "--storage", storage,
                             "--host", "127.0.0.1", "--port", str(port)], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    print(proc.stdout.readline().strip(), file=sys.stderr, flush=True)
    return proc, f"grpc://127.0.0.1:{port}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--trials", type=int, default=8, help="trials each worker runs")
    p.add_argument("--storage", default=os.environ.get("CHROMASONIC_TEST_POSTGRES",
                                                      "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--proxy", action="store_true",
                   help="workers go through python -m chromasonic_lib.proxy in front of --storage")
    p.add_argument("--set", type=_set, action="append", default=[], metavar="KEY=VALUE",
                   help="a search parameter for every worker, over the benchmark's (the value read as YAML)")
    args = p.parse_args()
    args.set = dict(args.set)
    args.worker_storage, proxy, args.proxy_pid = args.storage, None, None
    if args.proxy:
        proxy, args.worker_storage = start_proxy(args.storage)
        args.proxy_pid = proxy.pid
    results = []
    try:
        for n in args.workers:
            with tempfile.TemporaryDirectory(prefix=f"many-workers-{n}-") as tmp:
                results.append(run(n, args, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=30)
    one = next((r for r in results if r["workers"] == 1), None)
    summary = {"cores": os.cpu_count(), "trials_per_worker": args.trials, "proxy": args.proxy,
               "results": results}
    if one and one["median_storage_seconds_per_trial"]:
        summary["storage_time_vs_one_worker"] = {
            r["workers"]: round(r["median_storage_seconds_per_trial"] / one["median_storage_seconds_per_trial"], 2)
            for r in results if r["median_storage_seconds_per_trial"]}
        summary["storage_cpu_vs_one_worker"] = {
            r["workers"]: round(r["storage_cpu_seconds_per_trial"]["total"]
                                / one["storage_cpu_seconds_per_trial"]["total"], 2)
            for r in results if one["storage_cpu_seconds_per_trial"]["total"]}
    wrong = [f"{r['workers']} workers: {', '.join(problems(r))}" for r in results if problems(r)]
    summary["workers_failed"] = sum(r["workers_failed"] for r in results)
    summary["trials_failed"] = sum(r["failed"] for r in results)
    summary["problems"] = wrong
    print(json.dumps(summary), flush=True)
    if wrong:
        print("many_workers: FAILED: " + "; ".join(wrong), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
