"""A listen test of melodies generated with musical context: their rhythm and pitch statistics
against the training melodies; last line: JSON.

    .venv/bin/python benchmarks/context_samples.py [--dataset chorales-other] [--epochs 10] [--n 20]

Trains params/crossval.yaml's model (a 2-layer LSTM with the melody memory) twice as train_best
does (split seed 42, early stopping on validation), reading context duration+metre+phrase+key
and reading none, and generates --n melodies from each (temperature 1, no primer): the context
model's each in the rhythm of a training melody drawn at random, the other's as always (eighth
notes, no key, --length notes). Prints their statistics beside the training melodies'
(``chromasonic_lib.melodystats``) and each model's test bits/note. MIDI and WAV files are in
--out/context/ and --out/plain/ (sample_<i>.mid, .wav).
"""
import argparse
import json
from pathlib import Path

import torch
import yaml

from chromasonic_lib import TrainBestConfig, best, melodystats, setup_logging

p = argparse.ArgumentParser()
p.add_argument("--dataset", default="chorales-other")
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--n", type=int, default=20, help="melodies per model")
p.add_argument("--length", type=int, default=64, help="notes at most per melody")
p.add_argument("--out", default="runs/context_samples")
p.add_argument("--device", default="cpu")
args = p.parse_args()

torch.set_num_threads(1)        # two cores shared with other jobs
setup_logging()
# test_transpose is how crossval scores, not a setting of the model trained here.
params = {k: v for k, v in yaml.safe_load(Path("params/crossval.yaml").read_text()).items()
          if k not in ("epochs", "test_transpose")}
runs = {}
for name, context in (("context", "duration+metre+phrase+key"), ("plain", "none")):
    folder = Path(args.out) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "best_params.json").write_text(json.dumps({**params, "context": context}))
    cfg = TrainBestConfig(best_params=str(folder / "best_params.json"), output_dir=str(folder),
                          dataset=args.dataset, epochs=args.epochs, n_samples=args.n,
                          sample_length=args.length, device=args.device)
    run = best.train_best(cfg, best.best_configuration(cfg))
    runs[name] = (run, best.generate_samples(run, cfg))

run, samples = runs["context"]
training = [run.data.data.notes[k] for k in run.data.splits.index["train"]]
table = melodystats.comparison_table(training, **{"with context": [s.notes for s in samples],
                                                  "without context": [s.notes for s in runs["plain"][1]]})
print(table.to_string(float_format=lambda v: f"{v:.3f}"))
for s in samples[:2]:
    print(s.describe())
result = {"dataset": args.dataset, "epochs": args.epochs, "melodies": args.n,
          "test_bits_per_note": {name: round(r.test.bits_per_note, 4) for name, (r, _) in runs.items()},
          "epochs_trained": {name: r.history.epochs_trained for name, (r, _) in runs.items()},
          "wav": [str(s.wav) for s in samples[:2]], "statistics": json.loads(melodystats.as_json(table))}
print(json.dumps(result))
