"""Finding a user's own code again by an import path: ``package.module:Name`` or
``path/to/file.py:Name`` (a file made absolute), from any process, now or next week. Models,
training steps and data functions of one's own are all found so."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .paths import resolve

# Classes given as objects (the original API's ``model_class=SimpleRNN``), by their name: a class
# defined in a notebook or script (``__main__``) is found again in this process only.
_GIVEN: dict[str, type] = {}


def is_own(name: Any) -> bool:
    """Whether ``name`` is an import path of code of one's own (``module:Name``, ``file.py:Name``)."""
    return isinstance(name, str) and ":" in name


def name_of(cls: Any) -> str:
    """The import path a class (or function) is found by again: ``module:Class``, or
    ``/abs/file.py:Class`` for one imported from a file (its module is ours, named after it)."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__chromasonic_file__", None)
    name = f"{path or cls.__module__}:{cls.__qualname__}"
    _GIVEN[name] = cls
    return name


def shown(name: Any) -> Any:
    """``name`` as a page, a table or a figure shows it: a ``file.py`` under the project root or
    the working directory relative to it, any other by its file name alone (no folders of the
    machine); anything else unchanged. For display only, never to import."""
    if not is_own(name):
        return name
    path, _, attr = name.rpartition(":")
    if not path.endswith(".py"):
        return name
    for base in (resolve("."), Path.cwd()):
        try:
            return f"{Path(path).relative_to(base.resolve())}:{attr}"
        except ValueError:
            continue
    return f"{Path(path).name}:{attr}"


def shown_config(config: dict) -> dict:
    """A trial's parameters as a table shows them: code of one's own by ``shown``."""
    return {k: shown(v) for k, v in config.items()}


def canonical(name: str) -> str:
    """``name`` with a ``file.py`` made absolute (the working directory first, then the project
    root), so other processes, other workers and a later load find the same file."""
    path, _, attr = name.rpartition(":")
    if not path.endswith(".py"):
        return name
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = (Path.cwd() / p) if (Path.cwd() / p).is_file() else resolve(p)
    return f"{p.resolve()}:{attr}"


def import_object(name: str, what: str = "model") -> Any:
    """What ``name`` (``module:attr`` or ``file.py:attr``) names, imported; a
    :class:`ConfigError` names ``what``, the path and the error."""
    name = canonical(name)
    if name in _GIVEN:
        return _GIVEN[name]
    path, _, attr = name.rpartition(":")
    if not path or not attr:
        raise ConfigError(f"{what} {name!r} must be 'package.module:Name' or 'path/to/file.py:Name'")
    if path == "__main__":
        raise ConfigError(
            f"{what} {name!r} is defined in a notebook or script (__main__), which this process "
            f"can't import: put it in a file and give {what} as 'path/to/file.py:{attr}' (or "
            f"'package.module:{attr}')")
    try:
        obj: Any = _import_file(Path(path)) if path.endswith(".py") else importlib.import_module(path)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ConfigError:
        raise
    except Exception as e:     # the user's module may raise anything while it is imported
        raise ConfigError(f"{what} {name!r}: cannot import {attr} from {path}: "
                          f"{type(e).__name__}: {e}") from None
    return obj


def function_name(fn: Any, what: str = "train_step") -> str:
    """The import path of a function given as an object or a path (checked: it imports, and is
    callable)."""
    name = name_of(fn) if callable(fn) and not isinstance(fn, str) else canonical(fn)
    if not callable(import_object(name, what)):
        raise ConfigError(f"{what} {name!r} is not a function")
    return name


def _import_file(path: Path):
    if not path.is_file():
        raise ConfigError(f"model file not found: {str(path)!r}")
    # One module per file, named after its path, so that two files of one name never clash.
    module_name = "chromasonic_own_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    module.__chromasonic_file__ = str(path)
    sys.modules[module_name] = module          # before exec: dataclasses and pickle look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def label(name: Any) -> Any:
    """The shortest name of code of one's own for a title or a legend: its class or function."""
    return name.rpartition(":")[2] if is_own(name) else name
