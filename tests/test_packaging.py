"""The project's own files agree with each other."""
from __future__ import annotations

import re
import sys
import tomllib

import yaml

from conftest import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    have = set()
    for dep in env["dependencies"]:
        for item in (dep["pip"] if isinstance(dep, dict) else [dep]):
            have.add(_name(item))
    # conda calls torch pytorch
    have = {{"pytorch": "torch"}.get(n, n) for n in have} - {"python", "pip"}
    assert have == wanted


def test_no_unused_heavy_dependencies():
    text = (ROOT / "pyproject.toml").read_text().lower()
    for unwanted in ("tensorflow", "opencv", "flask"):
        assert unwanted not in text


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make search" in (ROOT / "README.md").read_text()


def test_importing_the_library_loads_no_plotting_or_statistics_library():
    """Workers, fold processes and commands that never draw start without pyplot and scipy.stats
    (about a second each process): the modules that use them import them on first use."""
    import subprocess
    code = ("import sys, chromasonic_lib; "
            "print([m for m in ('matplotlib.pyplot', 'scipy.stats') if m in sys.modules])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
