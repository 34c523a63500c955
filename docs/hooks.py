"""MkDocs hook: the library's docstrings use Sphinx roles (:class:`X`, :meth:`~a.b.c`), which
mkdocstrings leaves as text before the code span; drop the role and, as Sphinx does for ``~``,
keep only the last part of a dotted name."""
from __future__ import annotations

import re

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|exc|data|obj):(<code>)(~?)([^<]*)(</code>)")


def _short(m: re.Match) -> str:
    name = m.group(3).rsplit(".", 1)[-1] if m.group(2) else m.group(3)
    return f"{m.group(1)}{name}{m.group(4)}"


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub(_short, html)
