"""The notebooks as a user runs them in JupyterLab, through Chromium (Playwright).

One JupyterLab serves every test, in a copy of the project (CHROMASONIC_ROOT points there, so the
study and results land in the copy). The search runs first (Run All, its live view watched), then
analysis and train_best on its study; Optuna's dashboard extension opens the same storage; the
analysis notebook saved from JupyterLab goes through ``make report``. Screenshots go to
runs/browser/ of this checkout.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import optuna
import pytest

from conftest import ROOT, chromium_or_skip
from jupyterlab_ui import CHROMIUM_ARGS, JupyterLab, Notebook

pytestmark = pytest.mark.browser

SHOTS = ROOT / "runs" / "browser"
VIEWPORT = {"width": 1400, "height": 1000}
STUDY = "browser"
STORAGE = "sqlite:///runs/studies.db"           # relative: in the copy
TINY_SPACE = """\
training:
  learning_rate: {type: float, low: 1.0e-3, high: 2.0e-2, log: true}
models:
  gru:
    hidden_size: {type: int, low: 8, high: 32}
    embedding_dim: 8
"""
# Seconds, not minutes, on two cores. No pruner: every trial completes, and the analysis'
# parallel coordinates and contour need five complete trials (analysis.FEW_FOR_SHAPES).
SEARCH_PARAMETERS = f"""\
study_name = "{STUDY}"
storage = "{STORAGE}"
dataset = "synthetic"
n_sequences = 30
sequence_length = 20
model = "gru"
search_space = "params/spaces/browser.yaml"
n_trials = 10
epochs = 4
pruner = "none"
device = "cpu"
"""
ANALYSIS_PARAMETERS = f"""\
study_name = "{STUDY}"
storage = "{STORAGE}"
"""
TRAIN_BEST_PARAMETERS = f"""\
study_name = "{STUDY}"
storage = "{STORAGE}"
n_samples = 1
sample_length = 16
primer = "C4 D4 E4"
device = "cpu"
"""


def the_study(root: Path) -> optuna.Study:
    """The study the browser ran, read from its storage in the copy."""
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{root}/runs/studies.db")


def new_page(browser):
    """A page whose waits (clicks, loads, texts) allow two minutes, not Playwright's 30 s: CI
    runs these tests beside others that keep both cores busy."""
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(120_000)
    page.set_default_navigation_timeout(120_000)
    return page


@pytest.fixture(scope="module")
def chromium():
    path = chromium_or_skip()
    SHOTS.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for folder in ("notebooks", "params"):
        shutil.copytree(ROOT / folder, root / folder)
    (root / "params" / "spaces" / "browser.yaml").write_text(TINY_SPACE)
    return root


@pytest.fixture(scope="module")
def lab(chromium, project, tmp_path_factory):
    pythonpath = [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = {**os.environ, "CHROMASONIC_ROOT": str(project),
           # The kernels import this checkout's chromasonic_lib, wherever the editable install points.
           "PYTHONPATH": os.pathsep.join(pythonpath),
           # One thread per kernel: the tests, Chromium and a kernel share two cores.
           "OMP_NUM_THREADS": "1"}
    server = JupyterLab.start(project, tmp_path_factory.mktemp("jupyterlab"), env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page_of(chromium, lab):
    """Open a notebook of the copy in a new page: ``page_of("search")`` → Notebook."""
    pages = []

    def open_notebook(name: str) -> Notebook:
        page = new_page(chromium)
        pages.append(page)
        return Notebook(page, lab, f"notebooks/{name}.ipynb")

    yield open_notebook
    for page in pages:
        page.close()


@dataclass
class SearchRun:
    notebook: Notebook
    live: list[str]         # the live view's texts while the search ran, each change once
    final_live: str | None  # its text once the notebook finished
    best_line: str          # what the notebook printed as the best value
    best_value: float       # the study's, read from its storage


@pytest.fixture(scope="module")
def searched(page_of, lab, project) -> SearchRun:
    """search.ipynb run in JupyterLab with tiny parameters, its live view watched, then saved."""
    nb = page_of("search")
    nb.set_parameters(SEARCH_PARAMETERS)
    cell = nb.cell_with("run_search(")
    live = cell.locator(".chromasonic-live")
    texts: list[str] = []
    running_shot = SHOTS / "search-running.png"
    running_shot.unlink(missing_ok=True)

    def watch():
        if "*" not in cell.locator(".jp-InputPrompt").inner_text():
            return
        if live.count():
            text = live.last.inner_text().strip()
            if text and (not texts or texts[-1] != text):
                texts.append(text)
        outputs = cell.locator(".jp-Cell-outputArea")
        if not running_shot.exists() and re.search(r"\btrial \d", outputs.inner_text()):
            nb.screenshot(running_shot, show=outputs)

    nb.run_all(poll=watch)
    nb.screenshot(SHOTS / "search-end.png", show=cell.locator(".jp-Cell-outputArea"))
    nb.screenshot(SHOTS / "search-history.png", show=nb.outputs("image/png").last)
    nb.save()
    lab.shutdown_kernels()
    best = [t for t in nb.outputs().all_inner_texts() if t.startswith("best:")]
    return SearchRun(nb, texts, live.last.inner_text().strip() if live.count() else None,
                     best[0] if best else "", the_study(project).best_value)


@pytest.fixture(scope="module")
def analysed(page_of, searched) -> Notebook:
    """analysis.ipynb run in JupyterLab on the search's study, then saved (its kernel stays up
    for the trial explorer)."""
    nb = page_of("analysis")
    nb.set_parameters(ANALYSIS_PARAMETERS)
    nb.run_all()
    nb.save()
    return nb


def assert_ran_cleanly(nb: Notebook) -> None:
    assert not nb.errors(), "\n\n".join(nb.errors())
    assert not nb.unexecuted_cells(), f"Run All stopped: code cells {nb.unexecuted_cells()} did not run"


def test_search_runs_without_errors_and_shows_the_best_value(searched):
    assert_ran_cleanly(searched.notebook)
    assert searched.best_line.startswith(f"best: {searched.best_value:.4f} nats/note"), searched.best_line


def test_search_live_view_follows_the_trials(searched):
    assert searched.live, "search.ipynb showed no .chromasonic-live element while it ran"
    assert len(set(searched.live)) >= 3, f"the live view changed fewer than twice: {searched.live}"
    assert f"{searched.best_value:.4f}" in searched.final_live


def test_analysis_shows_every_figure(analysed):
    assert_ran_cleanly(analysed)
    images = analysed.outputs("image/png").locator("img")
    # history, baselines, learning curves, pruning savings, importances, parallel coordinates,
    # slices, contour, timeline
    assert images.count() >= 9
    assert all(images.evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth > 0)"))
    analysed.screenshot(SHOTS / "analysis.png", show=images.nth(2))


def test_trial_explorer_redraws_the_curve_of_the_picked_trial(analysed):
    explorer = analysed.code_cells.last
    pick = explorer.get_by_label("trial", exact=True)
    curve = explorer.locator(".widget-output img")

    def shown() -> str | None:
        return curve.first.get_attribute("src") if curve.count() else None

    current = pick.evaluate("select => select.selectedIndex")
    others = [i for i in range(pick.locator("option").count()) if i != current]
    assert len(others) >= 2, "the explorer offers fewer than three trials"
    drawn = [shown()]
    for index in others[:2]:
        pick.select_option(index=index)
        analysed.until(lambda: shown() not in drawn, what=f"the curve of option {index}")
        drawn.append(shown())
    assert curve.first.evaluate("img => img.naturalWidth") > 0
    analysed.wait_until_idle()
    assert_ran_cleanly(analysed)
    analysed.screenshot(SHOTS / "analysis-explorer.png", show=explorer)


def test_generate_button_plays_a_new_melody_and_a_new_primer_changes_it(page_of, searched):
    nb = page_of("train_best")
    nb.set_parameters(TRAIN_BEST_PARAMETERS)
    nb.run_all()
    assert_ran_cleanly(nb)
    panel = nb.code_cells.last
    out = panel.locator(".widget-output")
    audio = out.locator("audio")
    roll = out.locator("img")
    generate = panel.get_by_role("button", name="Generate")

    def melody() -> tuple[str, str | None, str | None]:
        """The printed description, the audio's source and the piano roll's."""
        src = audio.first.locator("source").first.get_attribute("src") if audio.count() else None
        return out.inner_text(), src, roll.first.get_attribute("src") if roll.count() else None

    def press_generate(what: str) -> tuple[str, str | None, str | None]:
        before = melody()
        generate.click()
        # The piano roll is the panel's last output: a new one, loaded, means the whole melody is shown.
        nb.until(lambda: melody()[1] and melody()[2] not in (None, before[2])
                 and roll.first.evaluate("img => img.complete && img.naturalWidth > 0"), what=what)
        nb.wait_until_idle()
        assert_ran_cleanly(nb)
        nb.until(lambda: audio.first.evaluate("a => a.readyState >= 1 || a.error !== null"), what="audio metadata")
        assert audio.first.evaluate("a => a.error === null && a.duration > 0"), "the audio does not play"
        return melody()

    audios_before = nb.panel.locator("audio").count()
    first = press_generate("a melody and its piano roll after Generate")
    assert nb.panel.locator("audio").count() == audios_before + 1
    nb.screenshot(SHOTS / "train_best-generate.png", show=roll.first)

    primer = panel.get_by_label("primer", exact=True)
    assert primer.input_value() == "C4 D4 E4"
    primer.fill("G4 A4 B4")
    second = press_generate("a melody and its piano roll from the new primer")
    assert second != first
    assert nb.panel.locator("audio").count() == audios_before + 1      # replaced, not added
    nb.screenshot(SHOTS / "train_best-primer.png", show=roll.first)


def test_optuna_dashboard_extension_opens_the_study(chromium, lab, searched):
    page = new_page(chromium)
    try:
        page.goto(lab.page_url())
        page.locator(".jp-LauncherCard", has_text="Optuna Dashboard").click()
        # The artifact path first: the Create button enables once the storage URL's input settles.
        page.get_by_label(re.compile(r"^Artifact path")).fill("runs/artifacts")
        page.get_by_label(re.compile(r"^Storage URL")).fill(STORAGE)
        page.get_by_role("button", name="Create").click()
        page.get_by_text(re.compile(rf"^\d+\. {STUDY}$")).click()
        history = page.locator(".js-plotly-plot").first.locator(".scatterlayer .point")
        n_trials = len(the_study(lab.root).trials)
        history.nth(n_trials - 1).wait_for()          # a dot per trial
        page.screenshot(path=str(SHOTS / "optuna-dashboard.png"))
        page.get_by_role("link", name="Trials (List)").click()
        checkpoint = page.get_by_text("checkpoint.pt").first      # the trial's weights, from runs/artifacts
        checkpoint.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "optuna-dashboard-trial.png"))
    finally:
        page.close()


def test_make_report_html_shows_every_figure(chromium, analysed, project):
    notebook = project / "notebooks" / "analysis.ipynb"      # as saved from JupyterLab
    # The Makefile's own recipe with the venv running the tests (STAMP= skips its setup step).
    subprocess.run(["make", "-s", "report", f"NB={notebook}", f"VENV={sys.prefix}", "STAMP="],
                   cwd=ROOT, check=True, capture_output=True)
    figures = sum("image/png" in o.get("data", {}) for c in nbformat.read(notebook, 4).cells
                  if c.cell_type == "code" for o in c.outputs)
    assert figures >= 9
    page = new_page(chromium)
    try:
        page.goto(notebook.with_suffix(".html").as_uri())
        page.wait_for_function("[...document.images].every(i => i.complete)")
        widths = page.locator("img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
        assert len(widths) >= figures and all(w > 0 for w in widths), widths
        page.screenshot(path=str(SHOTS / "report-analysis.png"), full_page=True)
    finally:
        page.close()
