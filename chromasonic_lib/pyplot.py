"""``plt``: matplotlib.pyplot, imported on first use.

Importing pyplot takes about a second, which every search worker, crossval fold process and
command would pay at start without ever drawing (a worker of a batch writes no figure). The
modules that draw take ``plt`` from here instead.
"""
from __future__ import annotations

from typing import Any


class _Pyplot:
    def __getattr__(self, name: str) -> Any:
        import matplotlib.pyplot
        return getattr(matplotlib.pyplot, name)


plt: Any = _Pyplot()
