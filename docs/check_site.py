"""Check the built site as a reader meets it: no heading swallowed by a code block in docs/*.md,
no link to an anchor that leads nowhere, no path of the machine that built it, no placeholder
(``<name>``) swallowed as an HTML tag, no widget renderer asked of a CDN, and, opened from
disk as the README says (``file://.../site/index.html``), a navigation link in Chromium opens a
page, not a folder listing, search finds pages, and the gallery's widgets are drawn.

    .venv/bin/python docs/check_site.py site     # make docs runs it after the build

Without Playwright or a system Chromium it says so and exits 0 (CI has both and fails on 1).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run"]


FENCE = re.compile(r"^\s*(```|~~~)")
HREF = re.compile(r'href="([^"#:]*\.html)?#([^"]+)"')
ID = re.compile(r'id="([^"]+)"')


def headings_in_code(docs: Path) -> list[str]:
    """Markdown headings that landed inside a fenced code block (a fence left open above them)."""
    found = []
    for page in sorted(docs.glob("*.md")):
        inside = False
        for n, line in enumerate(page.read_text().splitlines(), 1):
            if FENCE.match(line):
                inside = not inside
            elif inside and re.match(r"#{2,6} \S", line):     # "# x" is a comment of the code
                found.append(f"{page.name}:{n}: {line.strip()}")
    return found


def read_pages(site: Path) -> dict[Path, str]:
    """Every page of the site and the gallery's notebook downloads, read once, by full path."""
    return {p.resolve(): p.read_text(errors="replace") for p in sorted([*site.rglob("*.html"), *site.rglob("*.ipynb")])}


def html(pages: dict[Path, str]) -> dict[Path, str]:
    return {p: text for p, text in pages.items() if p.suffix == ".html"}


def dead_anchors(site: Path, pages: dict[Path, str]) -> list[str]:
    """Links to an anchor (``#x``, ``page.html#x``) whose page has no element with that id."""
    ids = {p: set(ID.findall(text)) for p, text in html(pages).items()}
    dead = []
    for page, text in html(pages).items():
        if "gallery" in page.relative_to(site).parts or page.name == "404.html":
            continue                    # executed notebooks: their anchors are nbconvert's
        for target, anchor in set(HREF.findall(text)):
            where = (page.parent / target).resolve() if target else page
            if anchor not in ids.get(where, set()):
                dead.append(f"{page.relative_to(site)} → {target or ''}#{anchor}")
    return dead


TAG = re.compile(r"<([A-Za-z][A-Za-z0-9_.-]*)[\s/>]")
# The elements the site's pages are made of; any other "tag" is text such as <study_name> that
# the browser drops from the page.
HTML = set("""a abbr article aside audio b blockquote body br button caption clipboard-copy code col
    colgroup dd details div dl dt em figcaption figure footer form h1 h2 h3 h4 h5 h6 head header hr
    html i iframe img input kbd label li link main mark meta nav ol optgroup option p path pre
    progress rect s script section select small source span strong style sub summary sup svg table
    tbody td template textarea tfoot th thead time title tr u ul video""".split())


def swallowed_placeholders(site: Path, pages: dict[Path, str]) -> list[str]:
    """Pages with a "tag" that is no HTML element: a placeholder the page does not show."""
    return [f"{page.relative_to(site)}: <{tag}>" for page, text in html(pages).items()
            for tag in sorted({t.lower() for t in TAG.findall(text)} - HTML)]


def machine_paths(site: Path, pages: dict[Path, str]) -> list[str]:
    """Pages, and the gallery's downloads, that show a path of the machine that built them (the
    checkout's, the home folder's)."""
    root, home = str(Path(__file__).resolve().parent.parent), str(Path.home())
    return [f"{page.relative_to(site)} shows {where}" for page, text in pages.items()
            for where in (root, home) if where + "/" in text]


def widgets_from_a_cdn(site: Path, pages: dict[Path, str]) -> list[str]:
    """Pages that would load Jupyter's widget renderer from unpkg.com (nothing drawn offline)."""
    return [str(p.relative_to(site)) for p, text in html(pages).items() if "unpkg.com" in text]


def main(site: str) -> int:
    index = Path(site).resolve() / "index.html"
    if not index.is_file():
        print(f"check_site: {index} not found: build the site first (make docs)")
        return 1
    site, pages = index.parent, read_pages(index.parent)
    problems = [f"heading inside a code block: {h}" for h in headings_in_code(Path("docs"))] + \
        [f"anchor that leads nowhere: {a}" for a in dead_anchors(site, pages)] + \
        [f"a path of the build machine: {m}" for m in machine_paths(site, pages)] + \
        [f"a placeholder swallowed as an HTML tag: {t}" for t in swallowed_placeholders(site, pages)] + \
        [f"widgets drawn by a CDN's script (nothing offline): {p}" for p in widgets_from_a_cdn(site, pages)]
    if problems:
        print("check_site:\n  " + "\n  ".join(problems))
        return 1
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("check_site: skipped (needs Playwright and a system Chromium)")
        return 1 if os.environ.get("CHROMASONIC_REQUIRE_SERVICES") else 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = browser.new_page()
        page.goto(index.as_uri())
        page.click("nav.md-nav--primary a[href$='getting-started.html']")
        page.wait_for_load_state()
        url, heading, text = page.url, page.locator("h1").first.inner_text(), page.inner_text("body")
        page.click(".md-search__input")
        page.keyboard.type("wilcoxon", delay=30)        # typed: search answers key presses
        try:
            page.wait_for_selector(".md-search-result__item", timeout=15000)
            found = len(page.query_selector_all(".md-search-result__item"))
        except Exception:
            found = 0
        explorer = index.parent / "gallery" / "analysis.html"     # its trial explorer: two dropdowns
        page.goto(explorer.as_uri())
        try:
            page.wait_for_selector(".widget-dropdown", timeout=30000)
            drawn = len(page.query_selector_all(".widget-dropdown"))
        except Exception:
            drawn = 0
        browser.close()
    if not url.endswith("getting-started.html") or "Index of" in text or heading.strip().rstrip("¶") != "Getting started":
        print(f"check_site: from {index.as_uri()} the nav link to Getting started opened {url} "
              f"(heading {heading!r}): the site does not work from disk")
        return 1
    if not found:
        print(f"check_site: opened from disk ({url}), search for 'wilcoxon' found nothing")
        return 1
    if not drawn:
        print(f"check_site: opened from disk, {explorer.as_uri()} draws no widget (its trial explorer)")
        return 1
    print(f"check_site: opened from disk, the nav link leads to {url}; search finds {found} pages; "
          f"the gallery's trial explorer draws {drawn} dropdowns")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "site"))
