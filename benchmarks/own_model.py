"""Does a model class of one's own run as fast inside the workbench as in one's own loop? On the CPU.

    .venv/bin/python benchmarks/own_model.py [--melodies 256] [--length 64] [--batch-size 32]
        [--epochs 2] [--repeats 5] [--gen-repeats 3] [--notes 512] [--threads 1] [--profile]

Training: the example's ``examples/my_models.py:SimpleRNN`` (default hyperparameters) trained by
``training.train`` (the adapter ``OwnModel`` around it) against a plain PyTorch loop over the same
user class (built with vocab 89, as the adapter builds it: 88 keys + the start token) on the
same batches: the batches ``train`` cuts (``epoch_batches`` with the same seeded generator, the
start token first, every melody ``--length`` random tokens, so there is no padding), the same
AdamW, learning rate, weight decay, gradient clipping and dropout. The workbench runs with
``transpose=0, weight_average=0, patience=0, schedule="constant", min_epoch_tokens=0`` and no
validation data (``val_data=None``), so its time is the epochs alone; it is timed around the
whole ``train`` call (optimizer set-up included: negligible). The plain loop is timed over batches
cut beforehand (the batch cutting is the workbench's own cost). What differs is the adapter (its
slice off the start token's logit and the tuple unpacking) and ``train``'s bookkeeping.
One warm-up run of each, then ``--repeats`` runs interleaved; the median counts (runs
of the two measured on this 2-core machine differed by up to ~15% from run to run).

Generation: ``generate.sample`` of ``--notes`` notes from untrained weights with SimpleRNN (its
forward returns its state: stepped by it) and TinyTransformer (no state: forward re-run over
the melody so far for every note), plus, for reference, a plain stepping loop over SimpleRNN.

``--profile`` also prints cProfile's costliest calls of one workbench training run.
Prints a table; the last line is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chromasonic_lib.config import TrainConfig  # noqa: E402
from chromasonic_lib.data import from_token_lists  # noqa: E402
from chromasonic_lib.data.splits import IGNORE, epoch_batches  # noqa: E402
from chromasonic_lib.generate import sample  # noqa: E402
from chromasonic_lib.models import build_model  # noqa: E402
from chromasonic_lib.training import train  # noqa: E402

RNN = str(ROOT / "examples/my_models.py:SimpleRNN")
TRANSFORMER = str(ROOT / "examples/my_models.py:TinyTransformer")
VOCAB = 88


def workbench_run(data, cfg: TrainConfig) -> tuple[float, float]:
    """(seconds, last epoch's training loss) of ``train`` over SimpleRNN's adapter."""
    model = build_model(RNN, {}, vocab_size=VOCAB, seed=0)
    start = time.perf_counter()
    history = train(model, data, None, cfg)
    return time.perf_counter() - start, history.train_loss[-1]


def plain_batches(data, cfg: TrainConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches ``train`` cuts, epoch after epoch: the same generator, seeded alike."""
    gen = torch.Generator().manual_seed(cfg.seed)
    out = []
    for _ in range(cfg.epochs):
        for idx in epoch_batches(data, cfg.min_epoch_tokens, cfg.batch_size, gen):
            out.append(data.batch(idx, bos=VOCAB, length=int(data.host_lengths[idx].max())))
    return out


def plain_run(batches, cfg: TrainConfig) -> tuple[float, float]:
    """(seconds, mean loss of the last epoch's batches) of a user's own loop over SimpleRNN."""
    cls = build_model(RNN, {}, vocab_size=VOCAB).model.__class__      # the user's class itself
    torch.manual_seed(0)
    net = cls(vocab_size=VOCAB + 1)
    start = time.perf_counter()
    # ---- the plain loop
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    net.train()
    losses = []
    for x, y in batches:
        logits, _ = net(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(loss.detach())
    # ----
    seconds = time.perf_counter() - start
    per_epoch = len(batches) // cfg.epochs
    return seconds, float(torch.stack(losses[-per_epoch:]).mean())


def time_sample(name: str, notes: int, repeats: int) -> tuple[list[float], bool | None]:
    model = build_model(name, {}, vocab_size=VOCAB, seed=0)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        tokens = sample(model, [], notes, generator=torch.Generator().manual_seed(i))
        times.append(time.perf_counter() - start)
        assert len(tokens) == notes, len(tokens)
    return times, model._stateful


@torch.no_grad()
def plain_sample_rnn(notes: int, repeats: int) -> list[float]:
    """A user's own stepping loop over SimpleRNN: one token in, its hidden state carried."""
    net = build_model(RNN, {}, vocab_size=VOCAB, seed=0).model.eval()
    times = []
    for i in range(repeats):
        gen = torch.Generator().manual_seed(i)
        start = time.perf_counter()
        token, hidden, tokens = torch.tensor([[VOCAB]]), None, []
        while len(tokens) < notes:
            logits, hidden = net(token, hidden)
            probs = torch.softmax(logits[0, -1, :VOCAB].float(), -1)
            tokens.append(int(torch.multinomial(probs, 1, generator=gen)))
            token = torch.tensor([[tokens[-1]]])
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--melodies", type=int, default=256)
    p.add_argument("--length", type=int, default=64, help="tokens per melody")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2, help="epochs per timed run")
    p.add_argument("--repeats", type=int, default=5, help="timed training runs of each")
    p.add_argument("--gen-repeats", type=int, default=3, help="timed samples of each model")
    p.add_argument("--notes", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    melodies = [rng.integers(0, VOCAB, args.length) for _ in range(args.melodies)]
    data = from_token_lists(melodies, melodies[:8], vocab_size=VOCAB, device="cpu").train
    cfg = TrainConfig(batch_size=args.batch_size, epochs=args.epochs, transpose=0, weight_average=0,
                      patience=0, schedule="constant", grad_clip=1.0, min_epoch_tokens=0, seed=42)
    batches = plain_batches(data, cfg)
    notes_trained = sum(int((y != IGNORE).sum()) for _, y in batches)

    # Warm up both (allocator, kernels), then interleave.
    workbench_run(data, cfg.replace(epochs=1))
    plain_run(batches[: len(batches) // cfg.epochs], cfg.replace(epochs=1))
    wb, pl, wb_loss, pl_loss = [], [], 0.0, 0.0
    for r in range(args.repeats):
        s, wb_loss = workbench_run(data, cfg)
        wb.append(s)
        s, pl_loss = plain_run(batches, cfg)
        pl.append(s)
        print(f"train run {r + 1}: workbench {s_fmt(wb[-1])}, plain {s_fmt(pl[-1])}", flush=True)
    tps_wb = notes_trained / statistics.median(wb)
    tps_pl = notes_trained / statistics.median(pl)

    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        workbench_run(data, cfg)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)

    gen_rnn, stateful_rnn = time_sample(RNN, args.notes, args.gen_repeats)
    gen_tf, stateful_tf = time_sample(TRANSFORMER, args.notes, args.gen_repeats)
    gen_plain = plain_sample_rnn(args.notes, args.gen_repeats)

    ratio = tps_wb / tps_pl
    g_rnn, g_tf, g_plain = (statistics.median(t) for t in (gen_rnn, gen_tf, gen_plain))
    print()
    print(f"{args.melodies} melodies x {args.length} random tokens, batch {args.batch_size}, "
          f"{len(batches) // cfg.epochs} batches x {cfg.epochs} epochs = {notes_trained:,} notes a run; "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print(f"{'':<44}{'median':>10}{'goal':>10}")
    print(f"{'train SimpleRNN, workbench (notes/s)':<44}{tps_wb:>10,.0f}")
    print(f"{'train SimpleRNN, plain loop (notes/s)':<44}{tps_pl:>10,.0f}")
    print(f"{'  ratio workbench / plain':<44}{ratio:>10.3f}{'>= 0.9':>10}  {ok(ratio >= 0.9)}")
    print(f"{'  last-epoch loss workbench / plain':<44}{wb_loss:>5.3f} / {pl_loss:.3f} (88 vs 89 logits)")
    print(f"{f'sample {args.notes}, SimpleRNN (s)':<44}{g_rnn:>10.3f}{'<= 1':>10}  {ok(g_rnn <= 1)}"
          f"   stepped by its state: {stateful_rnn}")
    print(f"{f'sample {args.notes}, TinyTransformer (s)':<44}{g_tf:>10.3f}{'<= 5':>10}  {ok(g_tf <= 5)}"
          f"   stepped by its state: {stateful_tf}")
    print(f"{f'  plain stepping loop, SimpleRNN (s)':<44}{g_plain:>10.3f}")
    print(json.dumps({"train_tokens_per_s_workbench": round(tps_wb), "train_tokens_per_s_plain": round(tps_pl),
                      "ratio": round(ratio, 3), "generate_512_s_stateful": round(g_rnn, 3),
                      "generate_512_s_stateless": round(g_tf, 3), "generate_512_s_plain_rnn": round(g_plain, 3),
                      "notes": args.notes, "threads": torch.get_num_threads()}))


def s_fmt(seconds: float) -> str:
    return f"{seconds:.2f} s"


def ok(flag: bool) -> str:
    return "ok" if flag else "MISSED"


if __name__ == "__main__":
    main()
