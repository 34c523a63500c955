"""IDyOM's PPM systems (``chromasonic_lib.ppm``: its long-term model, short-term model, both, and
both with the long-term model learning the test melodies as it goes, ``+``) on the results
table's own folds of chorales-185, each paired fold by fold with the markov baseline; last
line: JSON.

    .venv/bin/python benchmarks/idyom_ppm.py [--alphabet collection|keys] [--out JSON]

The folds are crossval's (``kfold`` of the collection, 10 folds, seed 42: copies of a tune share
a fold), so each fold's figure pairs with the same fold of any ``crossval --dataset chorales-185
--folds 10`` run. The markov baseline is run here (``crossval --model markov --json``, seconds).
The alphabet is IDyOM's by default: the pitches that occur anywhere in the collection (22 for
chorales-185); ``keys`` spreads the prediction over the 88 piano keys, as our models do. About
30 seconds of PPM for the five systems on a 2-core CPU, after the collection loads.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root))

from chromasonic_lib.data import load_dataset            # noqa: E402
from chromasonic_lib.data.splits import kfold             # noqa: E402
from chromasonic_lib.folds import paired_difference       # noqa: E402
from chromasonic_lib.ppm import MODELS, information_content  # noqa: E402

DATASET, FOLDS, SEED = "chorales-185", 10, 42


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alphabet", choices=["collection", "keys"], default="collection")
    ap.add_argument("--out", default=str(root / "benchmarks" / "results" / "idyom_ppm.json"))
    args = ap.parse_args()
    data = load_dataset(DATASET)
    melodies = data.melodies
    alphabet = (sorted({int(s) for m in melodies for s in m}) if args.alphabet == "collection"
                else list(range(88)))
    markov = json.loads(subprocess.run(
        [sys.executable, "-m", "chromasonic_lib.crossval", "--dataset", DATASET, "--folds", str(FOLDS),
         "--seed", str(SEED), "--model", "markov", "--json"],
        cwd=root, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    folds = kfold(melodies, FOLDS, SEED)
    result = {"dataset": DATASET, "folds": FOLDS, "seed": SEED, "alphabet": args.alphabet,
              "alphabet_size": len(alphabet), "markov_bits_per_note": round(markov["bits_per_note"], 4),
              "systems": {}}
    for models in MODELS:
        start, per_fold, notes = time.perf_counter(), [], []
        for train, test in folds:
            ic = np.concatenate(information_content([melodies[j] for j in train],
                                                    [melodies[j] for j in test], alphabet, models))
            per_fold.append(float(ic.mean()))
            notes.append(ic)
        pooled = np.concatenate(notes)
        d = paired_difference([f["bits_per_note"] for f in markov["per_fold"]], per_fold)
        result["systems"][models] = {
            "bits_per_note": round(float(pooled.mean()), 4), "n_notes": int(len(pooled)),
            "fold_std": round(float(np.std(per_fold)), 4),
            "fold_sem": round(float(np.std(per_fold, ddof=1) / np.sqrt(FOLDS)), 4),
            "per_fold": [round(x, 4) for x in per_fold], "seconds": round(time.perf_counter() - start, 1),
            "against_markov": round(d["mean_difference"], 4),
            "against_markov_ci95": [round(x, 4) for x in d["ci95"]]}
        r = result["systems"][models]
        print(f"{models:>5}: {r['bits_per_note']:.3f} bits/note (±{r['fold_std']:.3f}, SEM "
              f"{r['fold_sem']:.3f}); against markov {d['mean_difference']:+.3f} [{d['ci95'][0]:+.3f}, "
              f"{d['ci95'][1]:+.3f}]; {r['seconds']:.1f} s", file=sys.stderr, flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
