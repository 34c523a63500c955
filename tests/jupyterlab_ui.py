"""A JupyterLab server of its own and what a user does in it (open a notebook, edit the parameters
cell, Run All, save), driven through Chromium by Playwright for tests/test_browser.py."""
from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from conftest import _free_port

if TYPE_CHECKING:       # imported without Playwright too, so that its absence is a skip, not an error
    from playwright.sync_api import Locator, Page

# Root needs --no-sandbox; the rest keep Chromium off the network (this machine refuses it anyway).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# User settings of the test's JupyterLab: every cell stays in the DOM (the default windowing
# detaches cells scrolled out of view, which would hide their prompts and outputs from the
# checks), and no "get Jupyter news?" toast covers the page.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}

ERROR_MIME = "application/vnd.jupyter.error"
STDERR_MIME = "application/vnd.jupyter.stderr"


@dataclass
class JupyterLab:
    """A running ``jupyter lab`` serving ``root`` on a loopback port with a random token."""

    root: Path
    url: str
    token: str
    process: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, root: Path, scratch: Path, env: dict[str, str], timeout: float = 90) -> "JupyterLab":
        """Start JupyterLab in ``root`` (its file browser's top, and the dashboard's working folder).

        Its user settings, workspaces, runtime files and kernel specs live in ``scratch``, so
        nothing from the user's own JupyterLab leaks in and nothing leaks out.
        """
        for name, settings in LAB_SETTINGS.items():
            path = scratch / "settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(settings))
        port, token = _free_port(), secrets.token_hex(16)
        env = {**env, "JUPYTER_CONFIG_DIR": str(scratch / "config"), "JUPYTER_DATA_DIR": str(scratch / "data"),
               "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"), "IPYTHONDIR": str(scratch / "ipython")}
        log = scratch / "jupyterlab.log"
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               f"--LabApp.user_settings_dir={scratch / 'settings'}",
               f"--LabApp.workspaces_dir={scratch / 'workspaces'}",
               "--LabApp.extension_manager=readonly", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        with open(log, "wb") as out:
            process = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
        lab = cls(root, f"http://127.0.0.1:{port}", token, process, log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                lab.api("GET", "status")
                return lab
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    lab.stop()
                    raise RuntimeError(f"JupyterLab did not start; the end of {log}:\n"
                                       + log.read_text(errors="replace")[-3000:])
                time.sleep(0.5)

    def api(self, method: str, path: str) -> object:
        """Call the server's REST API (``/api/<path>``) with the token; the decoded JSON, or None."""
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def page_url(self, path: str = "") -> str:
        """``/lab/tree/<path>`` (or the launcher), in a fresh workspace: no tab of an earlier test comes back."""
        return f"{self.url}/lab{'/tree/' + path if path else ''}?reset&token={self.token}"

    def shutdown_kernels(self) -> None:
        """Stop every kernel, so a finished notebook's kernel stops taking memory and CPU."""
        for kernel in self.api("GET", "kernels"):
            self.api("DELETE", f"kernels/{kernel['id']}")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.shutdown_kernels()
            except OSError:
                pass
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Notebook:
    """One notebook open in JupyterLab, as its user sees it."""

    def __init__(self, page: Page, lab: JupyterLab, path: str, timeout: float = 120):
        self.page = page
        page.goto(lab.page_url(path))
        # The open notebook's panel (a hidden tab's panel carries lm-mod-hidden).
        self.panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        self.panel.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=timeout * 1000)
        self.kernel_status = page.get_by_title(re.compile(r"^Change kernel"))
        self.kernel_status.filter(has_text="Idle").wait_for(timeout=timeout * 1000)

    @property
    def code_cells(self) -> Locator:
        return self.panel.locator(".jp-CodeCell")

    def cell_with(self, text: str) -> Locator:
        """The code cell whose source contains ``text``."""
        return self.code_cells.filter(has=self.page.locator(".jp-InputArea", has_text=text))

    def set_parameters(self, lines: str) -> None:
        """Replace the parameters cell (the first code cell) by ``lines``, typed into its editor."""
        editor = self.code_cells.first.locator(".cm-content")
        assert "study_name" in editor.inner_text(), "the first code cell is not the parameters cell"
        editor.click()
        self.page.keyboard.press("Control+A")          # in a cell's editor: that cell's text only
        self.page.keyboard.insert_text(lines)
        self.page.keyboard.press("Escape")
        assert editor.inner_text().strip() == lines.strip()

    def prompts(self) -> list[str]:
        return self.code_cells.locator(".jp-InputPrompt").all_inner_texts()

    def run_all(self, timeout: float = 240, poll: Callable[[], None] | None = None) -> None:
        """Run → Run All Cells, then wait until no cell is queued or running and the kernel is idle.

        ``poll`` is called a few times a second meanwhile (to watch a cell while it runs).
        """
        before = self.prompts()
        self.menu("Run", r"^Run All Cells")
        self.wait_until_idle(timeout, poll, started=lambda prompts: prompts != before)

    def wait_until_idle(self, timeout: float = 120, poll: Callable[[], None] | None = None,
                        started: Callable[[list[str]], bool] = lambda prompts: True) -> None:
        """Wait until ``started`` has held once, then until no ``[*]`` prompt is left and the kernel is idle.

        The kernel reports idle between two queued cells too: the prompts tell a run that ended.
        """
        deadline = time.monotonic() + timeout
        seen_start = False
        while time.monotonic() < deadline:
            if poll is not None:
                poll()
            prompts = self.prompts()
            seen_start = seen_start or started(prompts) or any("*" in p for p in prompts)
            if seen_start and not any("*" in p for p in prompts) and "Idle" in self.kernel_status.inner_text():
                return
            self.page.wait_for_timeout(150)
        raise TimeoutError(f"the notebook was still running after {timeout} s; prompts {self.prompts()}")

    def until(self, condition: Callable[[], object], timeout: float = 180, what: str = "") -> None:
        """Wait until ``condition()`` is true (checked a few times a second)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s for {what or condition}")
            self.page.wait_for_timeout(150)

    def outputs(self, mime: str | None = None) -> Locator:
        selector = ".jp-OutputArea-output" + (f'[data-mime-type="{mime}"]' if mime else "")
        return self.panel.locator(selector)

    def errors(self) -> list[str]:
        """Every error a user would see: tracebacks (raised, or printed to stderr) and widgets that failed."""
        found = self.outputs(ERROR_MIME).all_inner_texts()
        found += [t for t in self.outputs(STDERR_MIME).all_inner_texts() if "Traceback (most recent call last)" in t]
        found += [t for t in self.outputs().all_inner_texts() if "Error displaying widget" in t]
        return [t[:2000] for t in found]

    def unexecuted_cells(self) -> list[int]:
        """Code cells (by position) without an execution count: Run All stopped before them."""
        return [i for i, p in enumerate(self.prompts()) if not re.fullmatch(r"\[\d+\]:", p.strip())]

    def save(self) -> None:
        """File → Save Notebook, and wait until its tab is no longer marked as modified."""
        self.menu("File", r"^Save Notebook(?! As)")
        self.page.locator(".lm-TabBar-tab.jp-mod-current:not(.jp-mod-dirty)").wait_for()

    def menu(self, menu: str, item: str) -> None:
        """Click ``menu`` in the menu bar, then its item whose name matches the regex ``item``."""
        self.page.get_by_role("menuitem", name=menu, exact=True).click()
        self.page.get_by_role("menuitem", name=re.compile(item)).click()

    def screenshot(self, path: Path, show: Locator | None = None) -> None:
        """A screenshot of the page, scrolled so that ``show`` is in view."""
        if show is not None:
            show.scroll_into_view_if_needed()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))
