"""The value checks every config uses, and the names a user may give: each check raises
:class:`ConfigError` naming the parameter, the value given and what is allowed."""
from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

from ..data.context import context_names
from ..data.corpora import CORPUS_FOLDERS, essen_files
from ..data.encodings import ENCODINGS as ENCODING_TYPES
from ..data.files import folder_files
from ..errors import ConfigError
from ..imports import canonical, import_object, is_own
from ..models import MODELS, family_name
from ..paths import has_password, mask_url, resolve

log = logging.getLogger("chromasonic_lib.config")      # the configs' one logger

__all__ = ["MODELS", "ENCODINGS", "CORPORA", "SAMPLERS", "PRUNERS", "OPTIMIZERS", "SCHEDULES",
           "STORAGE_SCHEMES", "STORAGE_ENV", "DEVICE_PATTERN", "check_int", "check_test_transpose",
           "check_float", "check_choice", "check_model", "check_str", "check_bool", "check_study_name",
           "check_device", "check_devices", "check_dataset", "check_storage", "grpc_address", "check_context",
           "check_existing_file", "check_writable_dir", "check_other_collection",
           "check_pretrain_model", "check_table_file", "check_npz_file", "OBJECTIVES",
           "check_objectives", "check_pick"]

# The names a user may give, each read from the registry that defines them.
ENCODINGS = tuple(ENCODING_TYPES)
CORPORA = tuple(CORPUS_FOLDERS)
SAMPLERS = ("tpe", "random", "gp", "cmaes")
PRUNERS = ("auto", "median", "hyperband", "wilcoxon", "none")
OBJECTIVES = ("bits_per_note", "n_params", "ms_per_note")     # what a study may minimize, the loss first
# train_best's pick: best, smallest_within:<bits/note>, or a trial number.
PICK = re.compile(r"^(best|smallest_within:(\d+(\.\d*)?|\.\d+)|\d+)$")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "constant")
STORAGE_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+", "mysql://", "mysql+", "journal:", "grpc://")
# grpc://host:port: Optuna's storage proxy (python -m chromasonic_lib.proxy) in front of a database.
GRPC_URL = re.compile(r"grpc://(?P<host>[A-Za-z0-9._\-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})/?")
STORAGE_ENV = "CHROMASONIC_STORAGE"     # the storage URL when the storage parameter is env or empty


# ---------------------------------------------------------------- value checks
def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """An integer ≥ ``minimum``; a float with an integral value is accepted, a string is not."""
    ok = not isinstance(value, bool) and (
        isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    )
    if not ok or value < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(
            minimum, f"an integer ≥ {minimum}")
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_test_transpose(value: Any) -> int:
    """How far (semitones) a melody is moved both ways when scored as an average: 0 to 12."""
    value = check_int("test_transpose", value, 0)
    if value > 12:
        raise ConfigError(f"test_transpose must be an integer from 0 to 12 semitones, got {value}")
    return value


def check_float(name: str, value: Any, low: float = 0.0, high: float = math.inf,
                low_open: bool = False) -> float:
    """A finite number in [low, high] (or (low, high] with ``low_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        lo = "(" if low_open else "["
        hi = "∞)" if high == math.inf else f"{high:g}]"
        raise ConfigError(f"{name} must be a number in {lo}{low:g}, {hi}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_objectives(name: str, value: Any) -> list[str]:
    """A list of ``OBJECTIVES``, bits_per_note first, each once (a comma-separated string works too)."""
    names = [s for s in re.split(r"[,\s]+", value) if s] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names:
        raise ConfigError(f"{name} must be a list of names from {', '.join(OBJECTIVES)}, the first "
                          f"bits_per_note; got {value!r}")
    names = [check_choice(name, n, OBJECTIVES) for n in names]
    if names[0] != "bits_per_note" or len(set(names)) != len(names):
        raise ConfigError(f"{name} must start with bits_per_note and name each objective once "
                          f"(for instance [bits_per_note, n_params]); got {names}")
    return names


def check_pick(name: str, value: Any) -> str:
    text = str(value).strip()
    if not PICK.match(text):
        raise ConfigError(f"{name} must be 'best', 'smallest_within:<bits/note>' (such as "
                          f"'smallest_within:0.02') or a trial number such as '12'; got {value!r}")
    return text


def check_model(name: str, value: Any, extra: Iterable[str] = ()) -> str:
    """One of our families (or of ``extra``, e.g. ``any``), or a model class of one's own
    (``package.module:Class``, ``path/to/file.py:Class``, or the class itself), imported now: a
    path that doesn't import is named with its error before anything runs. Returns the name a
    study records (a file made absolute)."""
    if isinstance(value, str) and value in (*MODELS, *extra):
        return value
    if not (isinstance(value, type) or is_own(value)):
        raise ConfigError(f"{name} must be one of {', '.join((*MODELS, *extra))}, or a model class of "
                          f"one's own as 'package.module:Class' or 'path/to/file.py:Class'; got {value!r}")
    try:
        return family_name(value)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}" if not str(e).startswith(name) else str(e)) from None


def check_str(name: str, value: Any, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def check_study_name(name: str, value: Any) -> str:
    value = check_str(name, value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", value):
        raise ConfigError(f"{name} may hold letters, digits, '-', '_' and '.', got {value!r}")
    return value


DEVICE_PATTERN = r"cpu|mps|cuda(:\d+)?"


def check_device(name: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(rf"auto|{DEVICE_PATTERN}", value):
        raise ConfigError(f"{name} must be one of auto, cpu, cuda, cuda:N, mps; got {value!r}")
    return value


def check_devices(name: str, value: Any) -> str:
    """``auto`` or a comma-separated list of devices, each named once (``cuda:0,cuda:1``)."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else []
    if value != "auto" and (not items or not all(re.fullmatch(DEVICE_PATTERN, v) for v in items)):
        raise ConfigError(f"{name} must be auto or a comma-separated list of cpu, cuda, cuda:N, "
                          f"mps (e.g. cuda:0,cuda:1); got {value!r}")
    twice = sorted({v for v in items if items.count(v) > 1})
    if twice:
        raise ConfigError(f"{name} names {', '.join(twice)} twice in {value!r}: list each device "
                          f"once; trials_per_device says how many trials share one")
    return value


def check_dataset(name: str, value: Any) -> str:
    """A corpus name, ``essen/<file>``, ``synthetic`` or an existing folder of score files."""
    check_str(name, value)
    if value == "synthetic" or value in CORPORA:
        return value
    if is_own(value) and not resolve(value).exists():      # a function of one's own
        import_object(value, name)
        return canonical(value)
    if value.startswith("essen/"):
        files = essen_files()
        if value[len("essen/"):] in files:
            return value
        raise ConfigError(f"{name}: no Essen file {value[6:]!r}; the files are "
                          f"{', '.join(sorted(files))}")
    path = resolve(value)
    if path.is_dir():
        if not folder_files(path):
            raise ConfigError(f"{name}: the folder {value!r} holds no score files "
                              f"(.mid, .midi, .abc, .xml, .mxl, .musicxml)")
        return value
    if path.exists():
        raise ConfigError(f"{name} must be a corpus name or a folder, got the file {value!r}")
    raise ConfigError(f"{name} must be synthetic, one of {', '.join(CORPORA)}, essen/<file>, an "
                      f"existing folder of score files or a function of one's own "
                      f"('package.module:function', 'file.py:function'); got {value!r} (not found)")


def check_storage(name: str, value: Any) -> str:
    """A storage URL; empty or ``env`` means the ``CHROMASONIC_STORAGE`` environment variable.

    The variable keeps a password out of the notebook: a parameter ends up in the executed
    copy (papermill's injected-parameters cell), the environment does not.
    """
    check_str(name, value, allow_empty=True)
    given = value.strip()
    if given in ("", "env"):
        value = os.environ.get(STORAGE_ENV, "").strip()
        if not value:
            raise ConfigError(f"{name} is {given!r}, which means the {STORAGE_ENV} environment "
                              f"variable, and it is not set: set {STORAGE_ENV} "
                              f"(e.g. postgresql://user:pw@host/db) or pass {name}")
    elif has_password(value):
        _warn_password_parameter(name, value)
    origin = f" (from {STORAGE_ENV})" if given in ("", "env") else ""
    if value.startswith("grpc://"):
        grpc_address(value, f"{name}{origin}")
        return value
    if value in ("memory", ":memory:") or value.startswith(STORAGE_SCHEMES):
        return value
    raise ConfigError(f"{name} must be a URL starting with sqlite:///, postgresql://, mysql:// "
                      f"or journal:<file>, grpc://host:port (a storage proxy), 'memory', or env "
                      f"(the {STORAGE_ENV} variable); got {mask_url(value)!r}{origin}")


def grpc_address(url: str, name: str = "storage") -> tuple[str, int]:
    """``grpc://host:port`` → ``(host, port)``; anything else is an error naming ``name``."""
    m = GRPC_URL.fullmatch(url.strip())
    port = int(m["port"]) if m else 0
    if not m or not 0 < port < 65536:
        raise ConfigError(f"{name} {mask_url(url)!r} is not a gRPC storage proxy address: expected "
                          f"grpc://host:port (e.g. grpc://10.0.0.5:13000, the host and port that "
                          f"python -m chromasonic_lib.proxy listens on)")
    return m["host"].strip("[]"), port


_warned: set[str] = set()   # masked URLs already warned about: a batch builds one config per worker


def _warn_password_parameter(name: str, url: str) -> None:
    """Say once per URL that a password given as a parameter is now in the executed notebook."""
    masked = mask_url(url)
    if masked in _warned:
        return
    _warned.add(masked)
    log.warning("%s %s holds a password: a notebook run with it as a parameter keeps it in plain "
                "text in papermill's injected-parameters cell and notebook metadata (the HTML report shows neither). "
                "To keep it out, drop it from the URL "
                "and use PGPASSWORD or ~/.pgpass, or export %s=<url> and pass %s=env.",
                name, masked, STORAGE_ENV, name)


def check_context(name: str, value: Any, model: str, encoding: str) -> list[str]:
    """The context features a model is to read: known names the encoding gives, a neural model."""
    names = context_names(value, name)
    if names and model == "markov":
        raise ConfigError(f"{name}: markov counts pitches only and reads no context, got {value!r}; "
                          f"rnn, lstm, gru and transformer read it")
    available = ENCODING_TYPES[encoding].context_features
    missing = [n for n in names if n not in available]
    if missing:
        raise ConfigError(f"{name}: the {encoding} encoding gives no {missing[0]!r} context, got "
                          f"{value!r}; it gives {', '.join(available)}")
    return list(names)


def check_existing_file(name: str, value: Any) -> Path:
    check_str(name, value)
    path = resolve(value)
    if not path.is_file():
        raise ConfigError(f"{name}: file not found: {value!r} (looked at {path})")
    if path.stat().st_size == 0:
        raise ConfigError(f"{name}: file is empty: {value!r}")
    return path


def check_writable_dir(name: str, path: Path) -> Path:
    """Create the folder if needed and prove it can be written, before any training."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{name}: cannot write to {str(path)!r}: {e.strerror or e}") from None
    return path



def check_other_collection(name: str, value: str, dataset: str, role: str) -> str:
    """``pretrain`` or ``also_train_on``: empty or ``none`` (none: "") or a collection other
    than ``dataset``, the one ``role`` (cross-validated, trained and tested on)."""
    if value == "none":
        return ""
    if value and check_dataset(name, value) == dataset:
        raise ConfigError(f"{name} must be another collection than the one {role}, got {value!r} for both")
    return value



def check_pretrain_model(pretrain: str, model: str) -> None:
    if pretrain and model == "markov":
        raise ConfigError("pretrain needs a neural model: the markov model counts its training "
                          "melodies afresh, so pretrained counts would be lost")


def check_table_file(name: str, path: str) -> Path:
    """``path`` (resolved) for a per-note table: a ``.csv`` file, or ``.parquet`` where pyarrow is
    installed."""
    p = resolve(str(path))
    if p.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"{name} must be a .csv or .parquet file, got {path!r}")
    if p.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(f"{name}: writing {path!r} needs pyarrow (pip install pyarrow), "
                              "or name a .csv file") from None
    return p


def check_npz_file(name: str, path: str) -> Path:
    """``path`` (resolved) for every note's distribution: a ``.npz`` file."""
    p = resolve(str(path))
    if p.suffix.lower() != ".npz":
        raise ConfigError(f"{name} must be a .npz file, got {path!r}")
    return p


