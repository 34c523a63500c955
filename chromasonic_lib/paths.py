"""Where things live: one anchor (the project root) for every relative path.

A notebook opened in JupyterLab runs in ``notebooks/``; papermill started from the
repository root runs in the root. Resolving relative paths against the project root
makes both write to the same ``runs/``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path


def project_root() -> Path:
    """The folder relative paths are resolved against.

    ``CHROMASONIC_ROOT`` wins; else the checkout this package lives in (the folder
    holding ``pyproject.toml``); else the current directory (an installed copy).
    """
    env = os.environ.get("CHROMASONIC_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file():
        return here
    return Path.cwd().resolve()


def resolve(path: str | os.PathLike) -> Path:
    """An absolute path: ``~`` expanded, relative paths anchored at the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def resolve_storage_url(url: str) -> str:
    """Anchor the file part of ``sqlite:///rel`` and ``journal:rel`` URLs at the project root."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = url[len("sqlite:///"):]
        if not path.startswith("/"):
            return "sqlite:///" + str(resolve(path))
    if url.startswith("journal:"):
        return "journal:" + str(resolve(url[len("journal:"):]))
    return url


# scheme://user:password@ — the password runs to the last "@" before a blank, so one holding
# a raw "@", "/" or quote is masked whole; ?password=... is libpq's other place for it.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*):\S*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^\s&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` → ``postgresql://user:***@host/db``.

    Works on any text (an error message quoting a URL too). URLs without a password, and
    ``sqlite:///``/``journal:`` paths, come back unchanged.
    """
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", url))


def has_password(url: str) -> bool:
    """Whether ``url`` carries a password that :func:`mask_url` would hide."""
    return mask_url(url) != url


def cache_dir() -> Path:
    """Parsed corpora live here: ``CHROMASONIC_CACHE`` or the user's cache folder."""
    env = os.environ.get("CHROMASONIC_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "chromasonic"
