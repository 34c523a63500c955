"""MkDocs hooks: Sphinx roles in the docstrings, the generated parameter reference, and the
gallery's widgets drawn by a copy of Jupyter's html-manager shipped with the site (no CDN).

The library's docstrings use Sphinx roles (:class:`X`, :meth:`~a.b.c`), which mkdocstrings
leaves as text before the code span; drop the role and, as Sphinx does for ``~``, keep only the
last part of a dotted name."""
from __future__ import annotations

import re

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|exc|data|obj):(<code>)(~?)([^<]*)(</code>)")


def _short(m: re.Match) -> str:
    name = m.group(3).rsplit(".", 1)[-1] if m.group(2) else m.group(3)
    return f"{m.group(1)}{name}{m.group(4)}"


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub(_short, html)


# ---------------------------------------------------------------- the parameter reference
# parameters.md is generated at every build from what the code declares, so it can't drift:
# each notebook's parameters cell (papermill reads it for --help-notebook and -p) and the
# crossval command line (its argparse parser).
NOTEBOOKS = [("search.ipynb", "Run (or continue) a study"),
             ("analysis.ipynb", "Understand a study"),
             ("train_best.ipynb", "Train the best configuration, test it, generate melodies")]


def _cell(text: str) -> str:
    # A placeholder such as <name> is text here, not an HTML tag that the page would swallow.
    return str(text).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


# Values no parameter accepts, by the parameter's type: each config's own check refuses them
# with the message that says what it takes ("n_trials must be a positive integer"), the
# reference's "allowed" column; a parameter whose check accepts a probe has none.
_PROBES = {"int": (-1, 10 ** 9), "float": (-1.0, 1e9), "bool": ("maybe",), "flag": ()}


def _allowed(config: type, name: str, kind: str) -> str:
    import dataclasses

    from chromasonic_lib.errors import ConfigError
    if name not in {f.name for f in dataclasses.fields(config)}:
        return ""
    said, kind = "", re.sub(r"Optional\[(.*)\]", r"\1", kind)
    for value in _PROBES.get(kind, ("\x01?",)):
        try:
            config(**{name: value})
        except ConfigError as e:
            m = re.match(rf"{re.escape(name)} must be (.*?)(?:[;,] got .*)?$", str(e), re.S)
            said = m.group(1) if m else said     # the last says most (the upper bound too)
    return said


def parameter_reference(root) -> str:
    import papermill

    from chromasonic_lib.config.crossval import CrossvalConfig
    from chromasonic_lib.config.train_best import TrainBestConfig
    from chromasonic_lib.crossval import parser
    from chromasonic_lib.search.config import SearchConfig
    configs = {"search.ipynb": SearchConfig, "train_best.ipynb": TrainBestConfig}
    # No table of contents on the right: the tables take the page's width.
    out = ["---", "hide:", "  - toc", "---", "", "# Parameters", "",
           "Every parameter of the three notebooks and of the crossval command, generated from the code "
           "when the site is built: the notebooks' parameters cells (what "
           "`papermill --help-notebook notebooks/<name>.ipynb` prints) and crossval's command line "
           "(`python -m chromasonic_lib.crossval --help`). Give a notebook's with papermill "
           "(`-p name value`, `-y` for a list or a dict, or `-f params/<set>.yaml`); the Python API "
           "takes the same names (`SearchConfig`, `TrainBestConfig`, `CrossvalConfig`: see "
           "[Python API](api.md)). A value out of its range (the *allowed* column) is refused before "
           "any work, with the parameter's name. A search's values are in nats per note (natural "
           "logarithms, as PyTorch's loss); crossval and the results are in bits per note: bits = "
           "nats / ln 2.", ""]
    for name, what in NOTEBOOKS:
        params = papermill.inspect_notebook(str(root / "notebooks" / name))
        out += [f"## {name}", "", what + ".", "", "| parameter | type | default | allowed | meaning |",
                "|---|---|---|---|---|"]
        out += [f"| `{p['name']}` | {_cell(p['inferred_type_name'])} | `{p['default']}` | "
                f"{_cell(_allowed(configs[name], p['name'], p['inferred_type_name']) if name in configs else '')} | "
                f"{_cell(p['help'])} |" for p in params.values()]
        out.append("")
    out += ["## crossval", "", "`python -m chromasonic_lib.crossval [options]`: cross-validate "
            "configurations (see [The crossval command](crossval.md)).", "",
            "| option | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for a in parser().options:
        kind = "flag" if a.nargs == 0 else (a.type.__name__ if a.type else "str")
        if a.nargs == 2:
            kind = "two files"
        default = "" if a.default in (None, (), "") else f"`{a.default}`"
        out.append(f"| `{', '.join(a.option_strings)}` | {kind} | {default} | "
                   f"{_cell(_allowed(CrossvalConfig, a.dest, kind))} | {_cell((a.help or '').replace('%%', '%'))} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- the gallery's widgets, offline
# mkdocs-jupyter loads the widget renderer from unpkg.com, so opened from disk without a network
# the gallery's controls (the trial explorer, the generator) draw nothing. The site ships
# Jupyter's own renderer instead (@jupyter-widgets/html-manager, BSD-3-Clause, with its licence
# notices; the version for ipywidgets 8), taken once from the npm registry into the cache and
# checked against its published digest at every build.
WIDGETS = "1.0.15"
WIDGETS_SHA512 = "5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="
# The renderer and the fallback mkdocs-jupyter names for widgets older than ipywidgets 7.
WIDGETS_CDN = re.compile(r"https://unpkg\.com/@jupyter-(?:widgets/html-manager|js-widgets)@\*/dist/embed(?:-amd)?\.js")
WIDGETS_JS = "javascripts/widgets/embed.js"
# What the site ships of the package: the renderer (self-contained, no RequireJS) and its notices.
WIDGETS_FILES = {"package/dist/embed.js": WIDGETS_JS,
                 "package/dist/embed.js.LICENSE.txt": WIDGETS_JS + ".LICENSE.txt"}


def widgets_files() -> dict[str, bytes]:
    """The site's path of each file shipped from html-manager's package, and its bytes."""
    import base64
    import hashlib
    import io
    import tarfile
    import urllib.request

    from chromasonic_lib.atomic import atomic_write
    from chromasonic_lib.paths import cache_dir
    url = f"https://registry.npmjs.org/@jupyter-widgets/html-manager/-/html-manager-{WIDGETS}.tgz"
    cached = cache_dir() / url.rsplit("/", 1)[1]
    if not cached.is_file():
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                atomic_write(cached, r.read())
        except OSError as e:
            raise RuntimeError(f"the gallery's widget renderer: {url} could not be fetched ({e}); "
                               f"put that file at {cached} to build offline") from None
    tgz = cached.read_bytes()
    if base64.b64encode(hashlib.sha512(tgz).digest()).decode() != WIDGETS_SHA512:
        raise RuntimeError(f"{cached}: not the published html-manager {WIDGETS} (its sha512 differs); "
                           "remove it to fetch it again")
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        return {site: tar.extractfile(member).read() for member, site in WIDGETS_FILES.items()}


def on_post_page(output: str, page, **kwargs) -> str:
    up = "../" * page.file.dest_uri.count("/")      # the page's folder back to the site's root
    return WIDGETS_CDN.sub(up + WIDGETS_JS, output)


def on_files(files, config, **kwargs):
    import sys
    from pathlib import Path

    from mkdocs.structure.files import File
    root = Path(config["config_file_path"]).resolve().parent
    sys.path.insert(0, str(root))
    files.append(File.generated(config, "parameters.md", content=parameter_reference(root)))
    for path, content in widgets_files().items():
        files.append(File.generated(config, path, content=content))
    return files
