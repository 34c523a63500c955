"""Where things live: one anchor (the project root) for every relative path.

A notebook opened in JupyterLab runs in ``notebooks/``; papermill started from the
repository root runs in the root. Resolving relative paths against the project root
makes both write to the same ``runs/``.
"""
from __future__ import annotations

import os
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


def cache_dir() -> Path:
    """Parsed corpora live here: ``CHROMASONIC_CACHE`` or the user's cache folder."""
    env = os.environ.get("CHROMASONIC_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "chromasonic"
