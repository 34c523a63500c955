"""Finish the gallery's executed notebooks for the site: a note at the top of each (what study it
ran, and how to run the real thing), and the build machine's paths in their outputs made relative
(the checkout's) or home-relative (``~``, the corpus cache).

    .venv/bin/python docs/gallery_note.py docs/gallery params/gallery.yaml 0.9    # make gallery runs it

The figures come from the params file the gallery ran, so the note can't drift from it.
"""
import json
import sys
from pathlib import Path

import nbformat
import yaml

folder, params, temperature = Path(sys.argv[1]), yaml.safe_load(Path(sys.argv[2]).read_text()), sys.argv[3]
note = (
    f"**The gallery's study is small.** `make docs` ran this notebook with papermill on "
    f"`{sys.argv[2]}`: {params['n_trials']} trials of at most {params['epochs']} epochs of a GRU "
    f"of one's own (`{params['model']}`, see [Your own model](../own-model.md)) on "
    f"`{params['dataset']}`, 213 German children's songs of the Essen collection that music21 "
    f"installs, on 2 CPU cores; train_best samples its melodies at temperature {temperature}. "
    "The figures are real but the study is minutes long. The real thing: `make search` (the "
    "chorales, 20 trials, about 5 minutes), or a cross-validated search of 75 minutes "
    "(`params/search_chorales_other.yaml`, see [The search](../search.md)).")
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
