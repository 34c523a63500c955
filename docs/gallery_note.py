"""Finish the gallery's executed notebooks for the site: a note at the top of each (what study it
ran, and how to run the real thing), and the build machine's paths in their outputs made relative
(the checkout's) or home-relative (``~``, the corpus cache).

    .venv/bin/python docs/gallery_note.py docs/gallery params/gallery.yaml 0.9    # make gallery runs it

The figures come from the params file the gallery ran and from its study, so the note can't drift
from them.
"""
import json
import sys
from pathlib import Path

import nbformat
import optuna
import yaml

folder, params, temperature = Path(sys.argv[1]), yaml.safe_load(Path(sys.argv[2]).read_text()), sys.argv[3]
study = optuna.load_study(study_name=params["study_name"], storage=params["storage"])
best, baseline = study.best_trial, study.user_attrs.get("markov_baseline")
against = f" against the markov baseline's {baseline:.3f}" if baseline is not None else ""
note = (
    f"**The gallery's study is small.** `make docs` ran this notebook with papermill on "
    f"`{sys.argv[2]}`: {len(study.trials)} trials of at most {params['epochs']} epochs of the "
    f"original Chromasonic script's SimpleRNN, a GRU, given as a model of one's own "
    f"(`{params['model']}`, see [Your own model](../own-model.html)) on "
    f"`{params['dataset']}`, German children's songs of the Essen collection that music21 "
    f"installs. Trial 0 is the class's own defaults, within the gallery's space (which fixes its "
    f"embedding at 32); the best, trial {best.number}, scored "
    f"{best.value:.3f} nats/note on the validation melodies{against} (a single split's "
    f"figure on these songs, not comparable with the [Results](../results.html); bits = "
    f"nats / ln 2, and the results are in bits). train_best "
    f"samples its melodies at temperature {temperature}. The real thing: `make search` (the "
    "chorales, 20 trials, stopping after 210 s of search), or a cross-validated search of 75 minutes "
    "(`params/search_chorales_other.yaml`, see [The search](../search.html)).")
root, home = str(Path(__file__).resolve().parent.parent), str(Path.home())


def relative(text: str) -> str:
    return text.replace(root + "/", "").replace(root, ".").replace(home + "/", "~/")


for path in sorted(folder.glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = nbformat.from_dict(json.loads(relative(json.dumps(cell.outputs))))
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(note))
    nbformat.write(nb, path)
