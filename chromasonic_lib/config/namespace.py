"""Parameters handed over from a notebook's namespace, each name checked."""
from __future__ import annotations

import ast
import dataclasses
import difflib
from typing import Any, Iterable, Mapping

from ..errors import ConfigError

# The first line of the cell papermill injects after the ``parameters`` cell (for ``-p`` and
# ``-f`` alike); what it assigns is what the run was given.
INJECTED_HEADER = "# Parameters"


def injected_names(namespace: Mapping[str, Any]) -> list[str]:
    """The names papermill's injected-parameters cell assigned, read from IPython's input history
    (``In``) in ``namespace``; none outside IPython or without papermill."""
    names: list[str] = []
    for source in namespace.get("In", ()) if isinstance(namespace.get("In"), list) else ():
        if isinstance(source, str) and source.lstrip().startswith(INJECTED_HEADER):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                continue
            names += [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                      for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                      if isinstance(t, ast.Name)]
    return names


def check_known(names: Iterable[str], known: Iterable[str], where: str) -> None:
    """Refuse a name that is not one of ``known``, with the nearest known one."""
    known = list(known)
    unknown = [n for n in dict.fromkeys(names) if n not in known]
    if not unknown:
        return
    near = {n: difflib.get_close_matches(n, known, n=1) for n in unknown}
    each = "; ".join(f"{n}: did you mean {near[n][0]}?" if near[n] else f"{n}: no parameter is close"
                     for n in unknown)
    listed = "" if all(near.values()) else f" (the parameters: {', '.join(known)})"
    raise ConfigError(f"{'these are not parameters' if len(unknown) > 1 else 'not a parameter'} of "
                      f"{where}: {each}{listed}")


class FromNamespace:
    """``Config.from_namespace(globals())``: a notebook hands its parameters over unrenamed.

    A parameter papermill injected (``-p name value`` or a ``-f`` file's key) that the config
    does not take is an error naming it and the nearest parameter: papermill itself only warns,
    and the notebook would run with the default instead.
    """

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any], **overrides: Any):
        names = [f.name for f in dataclasses.fields(cls)]
        check_known(injected_names(namespace), names, f"this notebook ({cls.__name__})")
        return cls(**{n: overrides.get(n, namespace[n]) for n in names
                      if n in namespace or n in overrides})
