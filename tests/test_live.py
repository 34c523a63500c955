"""The live view of a running search and the analysis' watch: one output area, throttled, headless-safe."""
from __future__ import annotations

import base64
import json
import queue
import re
import textwrap
import time

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from chromasonic_lib import live
from chromasonic_lib.live import LiveView
from conftest import ROOT


class FakeHandle:
    """Stands in for the handle of ``display(..., display_id=True)``; may advance a fake clock."""

    def __init__(self, clock=None, cost: float = 0.0):
        self.frames, self.clock, self.cost = [], clock, cost

    def update(self, obj, raw=False):
        assert raw and {"text/html", "text/plain"} <= set(obj)
        self.frames.append(obj)
        if self.clock:
            self.clock.now += self.cost


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def small_study(n: int = 6) -> optuna.Study:
    study = optuna.create_study(study_name="live-test")
    study.set_user_attr("markov_baseline", 1.60)
    study.set_user_attr("floor", 1.50)
    for i in range(n):
        attrs = {"config": {"model": "gru", "hidden_size": 8 + i}}
        if i % 3 == 2:
            study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs=attrs,
                                         intermediate_values={0: 1.9, 1: 1.8}))
        else:
            study.add_trial(create_trial(value=1.55 - i / 100, user_attrs=attrs,
                                         intermediate_values={0: 1.7}))
    return study


def test_many_fast_trials_give_few_redraws_of_one_handle_and_always_a_final_one():
    study, clock = small_study(), Clock()
    handle = FakeHandle()
    view = LiveView(handle, total=50, clock=clock)
    for _ in range(50):                 # 50 trials of 0.05 s: 2.5 s in all
        clock.now += 0.05
        view(study, study.trials[-1])
    assert 2 <= len(handle.frames) <= 3          # at most one a second
    assert "trial 20 of 50" in handle.frames[0]["text/plain"]
    view.finish(study)
    assert len(handle.frames) <= 4
    final = handle.frames[-1]
    html, text = final["text/html"], final["text/plain"]
    assert text.startswith("search finished: 50/50 trials · best 1.5100")
    assert f'class="{live.CSS_CLASS}"' in html and 'data-state="finished"' in html
    assert 'data-trial="50"' in html and 'data-best="1.5100"' in html
    assert "2 pruned" in text and "last 5 trials" in text
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1))
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_a_slow_frame_makes_redraws_rarer():
    """Drawing takes at most a tenth of the time: 0.5 s per frame → one frame per 5 s."""
    study, clock = small_study(), Clock()
    handle = FakeHandle(clock, cost=0.5)
    view = LiveView(handle, total=100, clock=clock, max_share=0.1)
    for _ in range(100):                # 100 trials of 0.2 s: 20 s, plus drawing
        clock.now += 0.2
        view(study, study.trials[-1])
    assert 3 <= len(handle.frames) <= 5
    assert view.draw_seconds == pytest.approx(0.5 * len(handle.frames))


def test_one_slow_frame_does_not_silence_the_view():
    """The first figure pays matplotlib's warm-up (0.6 s, then 0.1 s): the next frames still
    come about once a second, not 20 × 0.6 s later, which in a short search is never."""
    study, clock = small_study(), Clock()
    handle = FakeHandle(clock, cost=0.001)
    view = LiveView(handle, total=100, clock=clock, max_share=0.05)
    view.draw(study)                    # as LiveView.open does: no figure yet, quick
    handle.cost = 0.6
    for _ in range(13):                 # 13 trials of 1 s
        clock.now += 1.0
        view(study, study.trials[-1])
        if len(handle.frames) == 2:     # the slow one is drawn: the rest are quick
            handle.cost = 0.01
    assert handle.frames and view.draw_seconds > 0.6
    assert len(handle.frames) >= 5


def test_plot_false_draws_no_figure_and_a_failing_display_does_not_stop_the_search():
    study = small_study()
    handle = FakeHandle()
    view = LiveView(handle, total=3, plot=False)
    view.draw(study)
    assert "<img" not in handle.frames[0]["text/html"]

    class Broken:
        def update(self, obj, raw=False):
            raise RuntimeError("comm closed")
    view = LiveView(Broken(), total=3)
    view(study, study.trials[-1])
    view.finish(study)                  # no exception: the view just stops
    assert view.handle is None


def test_outside_a_kernel_nothing_is_displayed():
    study = small_study()
    assert live.kernel() is None and not live.attended()
    assert LiveView.open(study, 5) is None
    assert live.watch(study) is None


# ------------------------------------------------------------ in a real kernel
@pytest.fixture(scope="module")
def kernel():
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(ROOT), startup_timeout=300)
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def execute(kc, code: str, allow_stdin: bool, timeout: float = 300) -> list[dict]:
    """Run ``code`` as JupyterLab (allow_stdin) or papermill (not) would; its iopub messages."""
    msg_id = kc.execute(code, allow_stdin=allow_stdin)
    msgs = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") == msg_id:
            msgs.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
    errors = [m["content"] for m in msgs if m["msg_type"] == "error"]
    assert not errors, errors[0]["traceback"]
    return msgs


def drain(kc, seconds: float) -> list[dict]:
    """The iopub messages of the next ``seconds``."""
    msgs, end = [], time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            msgs.append(kc.get_iopub_msg(timeout=left))
        except queue.Empty:
            break
    return msgs


def frames_until(kc, done, timeout: float = 60) -> list[str]:
    """The live-view frames of the next messages, up to the first list for which ``done`` holds.

    A refresh draws a figure, which takes a while on a busy machine: the tests wait on what the
    view shows, not on a fixed window of time (CI runs them beside other heavy tests).
    """
    shown, end = [], time.monotonic() + timeout
    while not done(shown) and (left := end - time.monotonic()) > 0:
        try:
            shown += frames([kc.get_iopub_msg(timeout=left)])
        except queue.Empty:
            break
    return shown


def frames(msgs: list[dict]) -> list[str]:
    """The plain text of each live-view frame, display and updates."""
    return [m["content"]["data"]["text/plain"] for m in msgs
            if m["msg_type"] in ("display_data", "update_display_data")
            and live.CSS_CLASS in m["content"]["data"].get("text/html", "")]


STUDY_WITH_A_RUNNING_TRIAL = textwrap.dedent("""
    import json, optuna
    from chromasonic_lib import live
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="watched")
    for v in (1.6, 1.55):
        study.add_trial(optuna.trial.create_trial(value=v))
    running = study.ask()               # another worker's trial, still running
""")


@pytest.mark.slow
def test_watch_headless_draws_once_and_returns(kernel):
    msgs = execute(kernel, STUDY_WITH_A_RUNNING_TRIAL + "w = live.watch(study, interval=0.2)\n",
                   allow_stdin=False)
    assert len(frames(msgs)) == 2       # the placeholder, then the one frame
    assert frames(msgs)[-1].startswith("3 trials, 1 running · best 1.5500")
    msgs = execute(kernel, "print(w.task, w.state)", allow_stdin=False)
    assert "None once" in "".join(m["content"].get("text", "") for m in msgs)
    assert not frames(drain(kernel, 1.0))   # nothing keeps running


@pytest.mark.slow
def test_watch_in_jupyterlab_refreshes_until_stop_is_clicked(kernel):
    msgs = execute(kernel, STUDY_WITH_A_RUNNING_TRIAL + "w = live.watch(study, interval=0.3)\n"
                   "print(json.dumps(w.button.model_id))\n", allow_stdin=True)
    model_id = json.loads("".join(m["content"].get("text", "") for m in msgs if m["msg_type"] == "stream"))
    refreshed = frames_until(kernel, lambda f: len(f) >= 2)   # the cell has returned; the view goes on
    assert len(refreshed) >= 2 and all(f.startswith("watching: 3 trials, 1 running") for f in refreshed)
    # Click Stop as JupyterLab does: a comm message to the button's model.
    kernel.shell_channel.send(kernel.session.msg("comm_msg", {
        "comm_id": model_id, "data": {"method": "custom", "content": {"event": "click"}}}))
    after = frames_until(kernel, lambda f: any(x.startswith("stopped") for x in f))
    assert after and after[-1].startswith("stopped watching: 3 trials")
    assert not frames(drain(kernel, 1.0))  # and no refresh after it
    msgs = execute(kernel, "print(w.state, w.task.cancelled(), w.button.disabled)", allow_stdin=True)
    assert "stopped True True" in "".join(m["content"].get("text", "") for m in msgs)


@pytest.mark.slow
def test_watch_stops_by_itself_when_no_trial_is_running(kernel):
    execute(kernel, STUDY_WITH_A_RUNNING_TRIAL + "w = live.watch(study, interval=0.3)\n",
            allow_stdin=True)
    execute(kernel, "study.tell(running, 1.52)", allow_stdin=True)
    shown = frames_until(kernel, lambda f: any(x.startswith("no trial running") for x in f))
    assert shown, "the view stopped refreshing before it saw no trial running"
    last = shown[-1]
    assert last.startswith("no trial running any more: 3 trials · best 1.5200")


@pytest.mark.slow
def test_watch_run_again_stops_the_old_poller(kernel):
    execute(kernel, STUDY_WITH_A_RUNNING_TRIAL + "w1 = live.watch(study, interval=0.3)\n"
            "w2 = live.watch(study, interval=0.3)\n", allow_stdin=True)
    drain(kernel, 1.0)
    msgs = execute(kernel, "print(w1.state, w1.task.done(), w2.state, w2.task.done())\nw2.stop()",
                   allow_stdin=True)
    assert "stopped True watching False" in "".join(m["content"].get("text", "") for m in msgs)


def test_the_watch_figure_is_not_pyplot_s(tmp_path):
    """The Stop button draws from the widget's thread: pyplot (whose inline flush runs after
    each comm message) must never hold the figure."""
    import matplotlib.pyplot as plt
    study = optuna.create_study()
    for v in (1.6, 1.55, 1.5):
        study.add_trial(optuna.trial.create_trial(value=v))
    before = plt.get_fignums()
    assert live.figure_png(study)[:4] == b"\x89PNG"
    assert plt.get_fignums() == before
