"""The per-note surprise figures (plots.py): drawn from a per-note table, headless."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from chromasonic_lib import plots
from chromasonic_lib.errors import ConfigError
from chromasonic_lib.surprise import per_melody


def _table(n_melodies: int = 3, n_notes: int = 12, seed: int = 0) -> pd.DataFrame:
    """A per-note table as surprise writes it: quarter notes in 4/4, a phrase every 4 notes."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_melodies):
        for k in range(n_notes):
            p = rng.uniform(0.01, 0.9)
            rows.append({"dataset.id": "t", "melody.id": f"m{m}.mid", "melody.name": f"m{m}", "note.id": k + 1,
                         "onset": float(k), "dur": 1.0, "cpitch": 60 + int(rng.integers(0, 12)), "note": "C4",
                         "probability": p, "information.content": -np.log2(p),
                         "entropy": rng.uniform(1, 4), "phrase": -1 if k % 4 == 3 else 1 if k % 4 == 0 else 0,
                         "bar.offset": float(k % 4)})
    return pd.DataFrame(rows)


def test_the_profile_marks_the_most_surprising_notes_bars_and_phrase_ends():
    table = _table()
    fig = plots.surprise_figure(table, "m1", top=3)
    roll, line = fig.axes
    assert len(roll.patches) == 12 + 3                   # every note, the 3 most surprising again in red
    assert len(line.texts) == 3                          # their names on the IC line
    dashed = [l for l in line.lines if l.get_linestyle() == "--"]
    assert len(dashed) == 3                              # the ends of the three phrases
    assert "m1" in roll.get_title()
    plt.close(fig)


def test_the_comparison_and_the_per_melody_chart_draw_and_a_missing_melody_is_named():
    a, b = _table(seed=0), _table(seed=1)
    fig = plots.surprise_comparison_figure(a, b, "m0", ("pitch", "context"))
    assert len(fig.axes) == 3 and len(fig.axes[2].patches) == 12      # one bar of B − A per note
    plt.close(fig)
    fig = plots.melody_means_figure(per_melody(_table(n_melodies=12)), label=2)
    assert len(fig.axes[0].patches) == 12
    easiest, hardest = (t.get_text().splitlines() for t in fig.axes[0].texts)
    assert easiest[0] == "easiest" and hardest[0] == "hardest" and len(easiest) == len(hardest) == 3
    plt.close(fig)
    fig = plots.ic_profile_figure({"real": a, "generated": b})
    plt.close(fig)
    with pytest.raises(ConfigError, match="melody 'nope' is not in the table"):
        plots.surprise_figure(a, "nope")
