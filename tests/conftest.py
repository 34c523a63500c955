"""Shared fixtures: tiny data, a scratch folder, the PostgreSQL URL, a PostgreSQL server of the
test's own, the browser."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path
from typing import NoReturn

# Tests share two cores with each other (make test runs two files at a time) and with the
# notebook kernels, workers and commands they start: one thread each, inherited by every process
# started, avoids oversubscription (torch's threads then wait on each other: a 33-second crossval
# run took over 300 s on 2 threads beside two other busy processes).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import sqlalchemy  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# Every RDB storage a test opens in this process keeps a pool of connections to the server until
# it is garbage-collected: over a file of tests they add up, and two files at a time left the
# shared server short of them ("too many clients"). What a test leaves idle is closed after it.
_engines: weakref.WeakSet = weakref.WeakSet()
sqlalchemy.event.listen(sqlalchemy.engine.Engine, "engine_connect", lambda conn: _engines.add(conn.engine))


@pytest.fixture(autouse=True)
def _close_idle_database_connections():
    yield
    for engine in list(_engines):
        engine.dispose()

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
POSTGRES_URL = os.environ.get("CHROMASONIC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def synthetic_prepared():
    from chromasonic_lib.data import load_dataset, prepare
    return prepare(load_dataset("synthetic", n_sequences=40, sequence_length=24, seed=1), 0.2, 0.1, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- a PostgreSQL server of our own
class Postgres:
    """A throwaway PostgreSQL cluster, run as the ``postgres`` user on a free port."""

    def __init__(self, root: Path, options: str = ""):
        self.options = options          # server settings of its own (-c max_connections=200)
        self.bindir = Path(subprocess.check_output(["pg_config", "--bindir"], text=True).strip())
        self.root, self.data, self.port = root, root / "data", _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", str(self.bindir / args[0]), *args[1:]],
                              capture_output=True, text=True, check=check, timeout=300)

    def init(self) -> None:
        self._as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def pg_ctl(self, action: str, *extra: str, check: bool = True) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off {self.options}"
        self._as_postgres("pg_ctl", action, "-D", str(self.data), "-l", str(self.root / "log"),
                          "-o", opts, "-w", "-t", "240", *extra, check=check)


@pytest.fixture
def own_postgres():
    yield from _own_postgres()


def _own_postgres(options: str = ""):
    if os.geteuid() != 0 or not shutil.which("pg_config") or not shutil.which("runuser"):
        pytest.skip("needs root, runuser and an installed PostgreSQL (pg_config) to run a server")
    root = Path(tempfile.mkdtemp(prefix="chromasonic-pg-"))
    root.chmod(0o755)
    shutil.chown(root, "postgres", "postgres")
    pg = Postgres(root, options)
    try:
        pg.init()
        pg.pg_ctl("start")
        yield pg
    finally:
        pg.pg_ctl("stop", "-m", "immediate", check=False)
        shutil.rmtree(root, ignore_errors=True)


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
