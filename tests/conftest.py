"""Shared fixtures: tiny data, a scratch folder, the PostgreSQL URL."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# Tests share two cores with the notebook kernels and workers they start: one thread each
# avoids oversubscription (a 1-second training run took 38 s with every process on 2 threads).
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
POSTGRES_URL = os.environ.get("CHROMASONIC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def synthetic_prepared():
    from chromasonic_lib.data import load_dataset, prepare
    return prepare(load_dataset("synthetic", n_sequences=40, sequence_length=24, seed=1), 0.2, 0.1, 1)


def postgres_or_skip() -> str:
    """The test database URL; skip (or fail, in CI) when it can't be reached."""
    try:
        import sqlalchemy
        engine = sqlalchemy.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 5})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as e:
        unavailable(f"PostgreSQL at {POSTGRES_URL} is unreachable: {str(e).splitlines()[0]}")
    return POSTGRES_URL


def fluidsynth_or_skip() -> str:
    """FluidSynth's version; skip (or fail, in CI) when the library isn't installed."""
    from chromasonic_lib.generate import fluidsynth_version
    version = fluidsynth_version()
    if version is None:
        unavailable("FluidSynth isn't installed (apt-get install fluidsynth / brew install fluid-synth)")
    return version


def unavailable(reason: str):
    """Skip a test whose system service or library is missing; fail instead in CI, which has them."""
    if os.environ.get("CHROMASONIC_REQUIRE_SERVICES"):
        pytest.fail(reason + " (CHROMASONIC_REQUIRE_SERVICES is set)")
    pytest.skip(reason)


def run_notebook(name: str, out: Path, **params):
    """Execute notebooks/<name>.ipynb with papermill from the project root; returns the notebook."""
    import papermill as pm
    return pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(out), parameters=params,
                               cwd=str(ROOT), kernel_name="python3", progress_bar=False)


def outputs_of(nb) -> list[dict]:
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
