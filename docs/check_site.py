"""Open the built site from disk, as the README says a reader does (``file://.../site/index.html``),
follow a navigation link in Chromium and check that a page, not a folder listing, opens.

    .venv/bin/python docs/check_site.py site     # make docs runs it after the build

Without Playwright or a system Chromium it says so and exits 0 (CI has both and fails on 1).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run"]


def main(site: str) -> int:
    index = Path(site).resolve() / "index.html"
    if not index.is_file():
        print(f"check_site: {index} not found: build the site first (make docs)")
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
        browser.close()
    if not url.endswith("getting-started.html") or "Index of" in text or heading.strip().rstrip("¶") != "Getting started":
        print(f"check_site: from {index.as_uri()} the nav link to Getting started opened {url} "
              f"(heading {heading!r}): the site does not work from disk")
        return 1
    print(f"check_site: opened from disk, the nav link leads to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "site"))
