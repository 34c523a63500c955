"""Parameters handed over from a notebook's namespace, each name checked."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping


class FromNamespace:
    """``Config.from_namespace(globals())``: a notebook hands its parameters over unrenamed."""

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any], **overrides: Any):
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: overrides.get(n, namespace[n]) for n in names
                      if n in namespace or n in overrides})
