"""Trials per hour and tokens per second of one study on one GPU with 1, 2 and 4 trials at
once, against a minimal hand-written training loop of the same model and batch shapes (the
ceiling); last line: JSON.

    .venv/bin/python benchmarks/gpu_trials.py                 # the default LSTM search on the chorales
    .venv/bin/python benchmarks/gpu_trials.py --quick         # tiny sizes, any device: that it runs

Targets, on an H100/H200-class GPU: one trial trains at ≥ 80 % of the
hand-written loop's tokens/s, and 4 trials at once give ≥ 2× the trials per hour of one.

The ceiling trains the family-defaults trial's model (the LSTM's defaults) on the same
batches as a trial (batch size 32, each batch cut to its longest melody, every note a token),
in a trial's precision (an LSTM: TF32, see ``training.mixed_precision``), with nothing else:
no transposition, no validation, the batches cut before the clock starts; on a GPU it is also
timed with bf16 autocast forced on. "One trial" is ``train()`` of that same model for the same
epochs (no early stopping), validation after each epoch included. Each study is the default
search (TPE, median pruner, params/spaces/default.yaml, 15 epochs) with the same seed and
number of trials; its trials per hour run from the first trial's start to the last one's end,
and its tokens are every trained epoch's notes. Several trials at once run as threads of one
process (``trials_per_device``: a CUDA stream each) and, for comparison, as worker processes
sharing a journal study (what ``batch --workers`` starts; ``--modes``).
"""
import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root))
import chromasonic_lib as cl                                    # noqa: E402
from chromasonic_lib.data import load_dataset, prepare          # noqa: E402
from chromasonic_lib.data.splits import IGNORE, epoch_order, epoch_repeats  # noqa: E402
from chromasonic_lib.models import build_model                  # noqa: E402
from chromasonic_lib.search.results import summarize            # noqa: E402
from chromasonic_lib.training import mixed_precision, train     # noqa: E402

QUICK_SPACE = {"training": {"learning_rate": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True}},
               "models": {"lstm": {"hidden_size": {"type": "int", "low": 8, "high": 24},
                                   "embedding_dim": 8, "num_layers": 1, "dropout": 0.0}}}

p = argparse.ArgumentParser()
p.add_argument("--device", default="auto", help="one device: auto, cuda, cuda:N, cpu")
p.add_argument("--trials", type=int, default=16, help="trials per study")
p.add_argument("--at-once", type=int, nargs="+", default=[2, 4],
               help="trials at once of each study beside the one with a trial at a time")
p.add_argument("--epochs", type=int, default=15, help="epochs per trial (the search's default)")
p.add_argument("--modes", nargs="+", default=["threads", "processes"], choices=["threads", "processes"],
               help="trials at once as threads of one process (trials_per_device), or as worker processes")
p.add_argument("--quick", action="store_true", help="synthetic melodies, a tiny LSTM space, 2 epochs, 4 trials")
args = p.parse_args()
if args.quick:
    args.trials, args.epochs = min(args.trials, 4), min(args.epochs, 2)
optuna.logging.set_verbosity(optuna.logging.WARNING)
device = torch.device(str(cl.pick_device(args.device)))
if device.type == "cpu":
    torch.set_num_threads(1)        # a CPU run only checks that it works: don't fight over the cores
if device.type == "cuda" and device.index is None:
    device = torch.device("cuda", torch.cuda.current_device())
dataset = "synthetic" if args.quick else "chorales"
data = prepare(load_dataset(dataset, n_sequences=40, sequence_length=24), 0.1, 0.1, 42, device)
defaults = cl.TrainConfig(epochs=args.epochs, patience=0)
model_params = QUICK_SPACE["models"]["lstm"] | {"hidden_size": 16} if args.quick else {}
notes_per_epoch = data.train.n_predicted * epoch_repeats(data.train, defaults.min_epoch_tokens)
print(f"{dataset} on {device}: {len(data.train)} training melodies, {notes_per_epoch:,} notes an epoch",
      flush=True)


def sync() -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_written(epochs: int, autocast: bool | None = None) -> float:
    """Tokens/s of the minimal loop: forward, loss, backward, clip, step; one sync at the end.
    In a trial's precision, or with bf16 autocast forced on (``autocast``) or off."""
    torch.manual_seed(0)
    model = build_model("lstm", model_params, data.vocab_size).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=defaults.learning_rate, weight_decay=defaults.weight_decay)
    order = epoch_order(data.train, defaults.min_epoch_tokens, torch.Generator().manual_seed(0))
    batches = [data.train.batch(idx.to(device), bos=data.vocab_size) for idx in order.split(defaults.batch_size)]
    tokens = sum(int((y != IGNORE).sum()) for _, y in batches)
    precision = mixed_precision(device, model) if autocast is None else \
        torch.autocast(device.type, torch.bfloat16, enabled=autocast)

    def epoch() -> None:
        for x, y in batches:
            with precision:
                logits = model(x)
                loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), defaults.grad_clip)
            opt.step()

    epoch()                             # warm-up: cuDNN plans, the allocator's pools
    sync()
    start = time.perf_counter()
    for _ in range(epochs):
        epoch()
    sync()
    return tokens * epochs / (time.perf_counter() - start)


def one_trial(epochs: int) -> float:
    """Tokens/s of ``train()`` on the same model: what a trial trains at."""
    train(build_model("lstm", model_params, data.vocab_size), data.train, data.val, defaults.replace(epochs=1))
    history = train(build_model("lstm", model_params, data.vocab_size, seed=0), data.train, data.val, defaults)
    return notes_per_epoch * history.epochs_trained / history.seconds


def search_params(name: str, storage: str, n_trials: int, at_once: int) -> dict:
    return dict(study_name=name, storage=storage, output_dir=f"{tempfile.mkdtemp()}/out",
                dataset=dataset, n_sequences=40, sequence_length=24, model="lstm",
                search_space=QUICK_SPACE if args.quick else "params/spaces/default.yaml",
                n_trials=n_trials, epochs=args.epochs, devices=str(device),
                trials_per_device=at_once, live=False, plot=False)


def measure(study: optuna.Study) -> dict:
    """Trials per hour from the first trial's start to the last one's end, and tokens/s."""
    summary = summarize(study)
    seconds, epochs = summary["total_time"], summary["epochs_trained"]
    row = {"trials": summary["n_trials"], "seconds": round(seconds, 1),
           "trials_per_hour": round(3600 * summary["n_trials"] / seconds), "epochs": epochs,
           "tokens_per_s": round(notes_per_epoch * epochs / seconds),
           "states": {k: v for k, v in summary["states"].items() if v},
           "best_value": None if summary["best_value"] is None else round(summary["best_value"], 4)}
    if device.type == "cuda":
        row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def in_threads(at_once: int) -> dict:
    """One process, ``trials_per_device=at_once``: Optuna's threads, a CUDA stream each."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = cl.SearchConfig(**search_params(f"threads-{at_once}", "memory", args.trials, at_once))
    return measure(cl.run_search(cfg, data).study)


WORKER = """
import sys, json
import chromasonic_lib as cl
cl.run_search(cl.SearchConfig(**json.loads(sys.argv[1])))
"""


def in_processes(n: int) -> dict:
    """``n`` worker processes on the device, one trial each at a time, sharing a journal
    study (what ``batch --workers n`` starts); the peak memory is not measured."""
    log = f"{tempfile.mkdtemp()}/study.log"
    params = search_params("processes", f"journal:{log}", math.ceil(args.trials / n), 1)
    params["threads"] = 1 if device.type == "cpu" else max(1, (os.cpu_count() or 1) // n)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(params)], cwd=root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for _ in range(n)]
    for w in workers:
        _, err = w.communicate()
        if w.returncode:
            raise RuntimeError(f"a worker failed: {err[-2000:]}")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(log))
    row = measure(optuna.load_study(study_name="processes", storage=storage))
    row.pop("peak_memory_gb", None)
    return row


ceiling = hand_written(args.epochs)
print(f"hand-written loop: {ceiling:,.0f} tokens/s", flush=True)
# What autocast would give the LSTM, which trials leave in TF32 (cuDNN RNNs under autocast run
# in float16, unscaled): the loop with bf16 autocast forced on.
forced = hand_written(args.epochs, autocast=True) if device.type == "cuda" else None
if forced:
    print(f"hand-written loop, autocast forced on: {forced:,.0f} tokens/s", flush=True)
ours = one_trial(args.epochs)
print(f"one trial (train()): {ours:,.0f} tokens/s ({ours / ceiling:.0%} of the loop)", flush=True)
studies = {"threads_1": in_threads(1)}          # one trial at a time: what the others compare with
print("1 trial at a time:", studies["threads_1"], flush=True)
for mode in args.modes:
    for k in args.at_once:
        if k > 1:
            name = f"{mode}_{k}"
            studies[name] = in_threads(k) if mode == "threads" else in_processes(k)
            print(f"{k} trials at once in {mode}:", studies[name], flush=True)
one, most = studies["threads_1"], max(args.at_once)
out = {"device": str(device),
       "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
       "bf16_gpu": device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False),
       "bf16_lstm_trials": False,      # see mixed_precision: cuDNN RNNs train in TF32
       "torch": torch.__version__, "optuna": optuna.__version__, "quick": args.quick,
       "dataset": dataset, "train_melodies": len(data.train), "notes_per_epoch": notes_per_epoch,
       "epochs": args.epochs, "trials": args.trials,
       "ceiling_tokens_per_s": round(ceiling), "one_trial_tokens_per_s": round(ours),
       "ceiling_autocast_forced_tokens_per_s": forced and round(forced),
       "one_trial_share_of_ceiling": round(ours / ceiling, 3), "target_share": 0.8,
       "studies": studies,
       **{f"{name}_vs_1_trials_per_hour": round(row["trials_per_hour"] / one["trials_per_hour"], 2)
          for name, row in studies.items() if name.endswith(f"_{most}")},
       "target_speedup": 2.0}
print(json.dumps(out))
