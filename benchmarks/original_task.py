"""The original script's task with one documented configuration; last line: JSON with val_loss, floor, seconds.

    .venv/bin/python benchmarks/original_task.py [--data-seed 0]

Synthetic random walks, 100 melodies x 64 notes, 80/20 split. `floor` is the loss of the
generator's own transition probabilities on the same validation notes. Target on a 2-core
CPU: val_loss - floor <= 0.03 nats in <= 10 s (the original script's 20-trial search: 1.665 in 626 s).
"""
import argparse
import json
import time

import torch

from chromasonic_lib import TrainConfig, build_model, load_dataset, prepare, train

# A one-layer LSTM: small enough to train in seconds, and transposition by up to two octaves
# lets it learn the steps rather than 88 separate pitches.
CONFIG = {"model": "lstm", "embedding_dim": 32, "hidden_size": 64, "num_layers": 1, "dropout": 0.0,
          "learning_rate": 1e-2, "batch_size": 32, "weight_decay": 0.0, "epochs": 25, "transpose": 24,
          "min_epoch_tokens": 65536}

p = argparse.ArgumentParser()
p.add_argument("--data-seed", type=int, default=0)
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()
torch.set_num_threads(args.threads)
data = prepare(load_dataset("synthetic", n_sequences=100, sequence_length=64, seed=args.data_seed),
               val_fraction=0.2, test_fraction=0.0, seed=args.data_seed)
hp = {k: CONFIG[k] for k in ("embedding_dim", "hidden_size", "num_layers", "dropout")}
cfg = TrainConfig(**{k: CONFIG[k] for k in ("learning_rate", "batch_size", "weight_decay", "epochs",
                                             "transpose", "min_epoch_tokens")}, patience=0)
start = time.perf_counter()
history = train(build_model("lstm", hp), data.train, data.val, cfg)
seconds = time.perf_counter() - start
floor = data.floor()
print(f"val_loss {history.best_val_loss:.4f}, floor {floor:.4f}, gap {history.best_val_loss - floor:.4f} "
      f"nats/note in {seconds:.1f} s")
print(json.dumps({"val_loss": round(history.best_val_loss, 4), "floor": round(floor, 4),
                  "gap": round(history.best_val_loss - floor, 4), "seconds": round(seconds, 2),
                  "config": CONFIG, "data_seed": args.data_seed}))
