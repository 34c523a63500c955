"""A database password never lands in what people share: reports, result files, messages."""
from __future__ import annotations

import json
import logging
import subprocess
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from sqlalchemy.engine import make_url

import chromasonic_lib as cl
from chromasonic_lib import batch
from chromasonic_lib.config import checks as config
from chromasonic_lib.paths import mask_url
from chromasonic_lib.search.study import load_existing_study, open_storage
from conftest import PYTHON, postgres_or_skip, run_notebook

SECRET = "s3cretPW"


@pytest.mark.parametrize("url, masked", [
    ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
    ("postgresql+psycopg://user:secret@host:5432/db", "postgresql+psycopg://user:***@host:5432/db"),
    ("mysql://user:secret@host/db", "mysql://user:***@host/db"),
    ("mysql+pymysql://user:secret@host/db", "mysql+pymysql://user:***@host/db"),
    ("postgresql://user:p%40ss:w/rd@host/db", "postgresql://user:***@host/db"),   # ':' '/' in it
    ("postgresql://user:a@b'c@host/db", "postgresql://user:***@host/db"),         # raw '@', quote
    ("postgresql://user@host/db?sslmode=require&password=secret",
     "postgresql://user@host/db?sslmode=require&password=***"),
    ("storage 'postgresql://u:secret@h/db' cannot be opened: no route to user@h",
     "storage 'postgresql://u:***@h/db' cannot be opened: no route to user@h"),
])
def test_mask_url_hides_the_password(url, masked):
    assert mask_url(url) == masked


@pytest.mark.parametrize("url", [
    "postgresql://user@host/db", "postgresql://host:5432/db", "mysql+pymysql://root@localhost/x",
    "sqlite:///runs/studies.db", "sqlite:////abs/path:with@odd.db", "journal:runs/big.log",
    "journal:/tmp/a:b@c.log", "memory",
])
def test_mask_url_leaves_urls_without_password_alone(url):
    assert mask_url(url) == url


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Each test sees the once-per-URL warning afresh."""
    monkeypatch.setattr(config, "_warned", set())


@pytest.mark.parametrize("given", ["env", "", "  env "])
@pytest.mark.parametrize("make", [
    lambda s: cl.SearchConfig(storage=s, dataset="synthetic"),
    lambda s: cl.TrainBestConfig(storage=s, dataset="synthetic"),
    lambda s: cl.AnalysisConfig(storage=s),
], ids=["search", "train_best", "analysis"])
def test_env_or_empty_storage_reads_chromasonic_storage(monkeypatch, caplog, fresh_warnings, given, make):
    url = f"postgresql://user:{SECRET}@host/db"
    monkeypatch.setenv("CHROMASONIC_STORAGE", url)
    with caplog.at_level(logging.WARNING, logger="chromasonic_lib"):
        cfg = make(given)
    assert cfg.storage == url
    assert not caplog.records            # from the environment: nothing to warn about
    assert SECRET not in repr(cfg)


def test_empty_storage_without_the_variable_says_what_to_set(monkeypatch):
    monkeypatch.delenv("CHROMASONIC_STORAGE", raising=False)
    with pytest.raises(cl.ConfigError, match="set CHROMASONIC_STORAGE .* or pass storage"):
        cl.AnalysisConfig(storage="env")
    with pytest.raises(cl.ConfigError, match="CHROMASONIC_STORAGE"):
        cl.AnalysisConfig(storage="")


def test_the_default_storage_is_unchanged(monkeypatch):
    monkeypatch.setenv("CHROMASONIC_STORAGE", "journal:elsewhere.log")
    assert cl.AnalysisConfig().storage == "sqlite:///runs/studies.db"


def test_a_bad_url_is_reported_masked(monkeypatch):
    with pytest.raises(cl.ConfigError) as err:
        cl.AnalysisConfig(storage=f"redis://user:{SECRET}@host")
    assert "redis://user:***@host" in str(err.value) and SECRET not in str(err.value)
    monkeypatch.setenv("CHROMASONIC_STORAGE", f"redis://user:{SECRET}@host")
    with pytest.raises(cl.ConfigError, match=r"from CHROMASONIC_STORAGE") as err:
        cl.AnalysisConfig(storage="env")
    assert SECRET not in str(err.value)


def test_a_password_parameter_is_warned_about_once(caplog, fresh_warnings):
    url = f"postgresql://user:{SECRET}@host/db"
    with caplog.at_level(logging.WARNING, logger="chromasonic_lib"):
        cl.AnalysisConfig(storage=url)
        cl.AnalysisConfig(storage=url)
        cl.AnalysisConfig(storage="postgresql://user@host/db")
    [record] = caplog.records
    text = record.getMessage()
    assert record.name == "chromasonic_lib.config" and SECRET not in text
    for hint in ("postgresql://user:***@host/db", "injected-parameters", "PGPASSWORD", "~/.pgpass",
                 "CHROMASONIC_STORAGE", "storage=env"):
        assert hint in text


def test_open_storage_errors_are_masked():
    with pytest.raises(cl.ConfigError, match=r"mysql\+pymysql://user:\*\*\*@host/db") as err:
        open_storage(f"mysql+pymysql://user:{SECRET}@host/db")      # no driver installed
    assert SECRET not in str(err.value)


def test_a_batch_parameter_file_error_is_masked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"storage: postgresql://user:{SECRET}@host/db: x\n")   # YAML quotes the line
    [job] = batch.plan([str(bad)], 1, 1, tmp_path)
    assert job.status == "failed" and "user:***@host/db" in job.error
    assert SECRET not in job.error


@pytest.fixture
def pg_secret_study():
    """(URL with a password, URL without, a fresh study name); the study is deleted after."""
    plain = postgres_or_skip()
    parsed = make_url(plain)
    secret = parsed.password or SECRET
    url = parsed.set(password=secret).render_as_string(hide_password=False)
    open_storage(url)                    # trust auth takes any password: prove it connects
    name = f"test-cred-{uuid.uuid4().hex[:8]}"
    yield url, plain, secret, name
    try:
        optuna.delete_study(study_name=name, storage=plain)
    except KeyError:
        pass


@pytest.mark.postgres
def test_load_existing_study_error_is_masked(pg_secret_study):
    url, _, secret, name = pg_secret_study
    with pytest.raises(cl.ConfigError, match=f"{name!r} is not in storage") as err:
        load_existing_study(url, name)
    assert secret not in str(err.value) and ":***@" in str(err.value)


@pytest.mark.postgres
@pytest.mark.parametrize("via", ["PGPASSWORD", "PGPASSFILE"])
def test_libpq_takes_the_password_from_the_environment(pg_secret_study, monkeypatch, tmp_path, via):
    """A URL without password: psycopg 3 (libpq) reads PGPASSWORD or ~/.pgpass (PGPASSFILE)."""
    _, plain, _, _ = pg_secret_study
    parsed = make_url(plain)
    if parsed.password:
        pytest.skip("CHROMASONIC_TEST_POSTGRES holds a password already")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    if via == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", "fromTheEnvironment")
    else:
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"{parsed.host or '*'}:{parsed.port or '*'}:{parsed.database}:"
                            f"{parsed.username}:fromTheEnvironment\n")
        passfile.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(passfile))
    storage = open_storage(plain)
    with storage.engine.connect() as conn:
        assert conn.connection.driver_connection.info.password == "fromTheEnvironment"
    storage.engine.dispose()


GRU_SPACE = {"training": {"learning_rate": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True}},
             "models": {"gru": {"hidden_size": {"type": "int", "low": 8, "high": 16}, "embedding_dim": 8}}}


@pytest.mark.postgres
@pytest.mark.slow
def test_a_password_in_the_storage_parameter_stays_out_of_the_shared_report(tmp_path, pg_secret_study):
    url, plain, secret, name = pg_secret_study
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(GRU_SPACE))
    out = tmp_path / "out"
    nb_path = tmp_path / "search.ipynb"
    nb = run_notebook("search", nb_path, study_name=name, storage=url, dataset="synthetic",
                      n_sequences=30, sequence_length=20, n_trials=2, epochs=2, model="gru",
                      search_space=str(space), device="cpu", threads=1, plot=True,
                      output_dir=str(out))
    assert len(optuna.load_study(study_name=name, storage=plain).trials) == 2   # it ran on PostgreSQL

    # Only papermill's own cell holds the password (that one we cannot avoid).
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and secret in "".join(injected[0]["source"])
    others = [c for c in nb["cells"] if c not in injected]
    outputs = json.dumps([c.get("outputs", []) for c in others])
    assert secret not in outputs and secret not in json.dumps([c["source"] for c in others])
    assert "holds a password" in outputs and "CHROMASONIC_STORAGE" in outputs   # the warning

    for f in out.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f.name
    assert {"optimization_results.json", "optimization_report.txt", "optimization_history.png"} <= \
        {f.name for f in out.iterdir()}

    # What `make report NB=... HIDE_CODE=1` runs.
    jupyter = Path(PYTHON).parent / "jupyter"
    subprocess.run([str(jupyter), "nbconvert", "--to", "html", "--embed-images", "--no-input",
                    str(nb_path)], check=True, capture_output=True, timeout=120)
    html = nb_path.with_suffix(".html").read_text()
    assert "<img" in html                 # the history figure: the report is complete
    assert secret not in html
