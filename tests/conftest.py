"""Shared fixtures: tiny data, a scratch folder, the PostgreSQL URL, the browser."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

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


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here (no Playwright, no Chromium), or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        return "Chromium is not installed (apt-get install chromium)"
    return None


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_or_skip() -> str:
    """The system Chromium's path; skip (or fail, in CI) without it or Playwright."""
    reason = chromium_missing()
    if reason:
        unavailable(reason)
    return chromium_path()


def pytest_collection_modifyitems(config, items):
    # Without Chromium the browser tests skip as one line of the summary, not one per test.
    # In CI they are left to fail (chromium_or_skip).
    browser_tests = [item for item in items if item.get_closest_marker("browser")]
    if browser_tests and not os.environ.get("CHROMASONIC_REQUIRE_SERVICES"):
        reason = chromium_missing()
        if reason:
            for item in browser_tests:
                item.add_marker(pytest.mark.skip(reason=reason))


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose service or tool is missing; in CI (CHROMASONIC_REQUIRE_SERVICES) fail it."""
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
