"""Several trials at once: which device each trial and each batch worker gets, how many run
together, and a trial that runs out of memory failing alone."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import weakref

import pytest
import torch
import yaml
from optuna.trial import TrialState

import chromasonic_lib as cl
from chromasonic_lib import batch
from chromasonic_lib.search import objective as objective_mod
from chromasonic_lib.search.devices import DeviceSlots, parse_devices, spread
from test_search import tiny_cfg


@pytest.fixture
def two_gpus(monkeypatch):
    """CUDA as a machine with two GPUs shows it (only what parse_devices asks)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_devices_name_each_gpu_and_auto_takes_every_visible_one(two_gpus):
    assert parse_devices("cuda:1,cuda:0") == [torch.device("cuda", 1), torch.device("cuda", 0)]
    assert parse_devices("auto") == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert parse_devices("auto", device="cuda:1") == [torch.device("cuda", 1)]
    assert parse_devices("auto", device="cpu") == parse_devices("cpu") == [torch.device("cpu")]
    assert parse_devices("cuda") == [torch.device("cuda", 0)]       # the current GPU
    with pytest.raises(cl.ConfigError, match=r"devices: cuda:5 is not visible here; the GPUs are cuda:0, cuda:1"):
        parse_devices("cuda:0,cuda:5")


def test_cuda_devices_without_cuda_warn_and_use_the_cpu_as_device_does():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        assert parse_devices("cuda:0,cuda:5") == [torch.device("cpu")]


@pytest.mark.parametrize("spec", ["gpu", "cuda:0;cuda:1", "", "cuda:x", "cuda:0,,cuda:1", 3])
def test_a_malformed_devices_list_is_named(spec):
    with pytest.raises(cl.ConfigError, match=r"devices must be auto or a comma-separated list of cpu"):
        parse_devices(spec)


def test_devices_are_checked_with_the_other_parameters(tmp_path):
    with pytest.raises(cl.ConfigError, match="devices names cuda:1 twice"):
        tiny_cfg(tmp_path, device="auto", devices="cuda:1, cuda:1")
    with pytest.raises(cl.ConfigError, match="device 'cpu' is not among devices 'cuda:0,cuda:1'"):
        tiny_cfg(tmp_path, device="cpu", devices="cuda:0,cuda:1")
    with pytest.raises(cl.ConfigError, match="trials_per_device must be a positive integer, got 0"):
        tiny_cfg(tmp_path, trials_per_device=0)
    assert tiny_cfg(tmp_path, device="cuda:1", devices="cuda:0,cuda:1").devices == "cuda:0,cuda:1"


def test_batch_workers_are_spread_over_the_devices():
    assert spread(["cuda:0", "cuda:1"], 3) == ["cuda:0", "cuda:1", "cuda:0"]
    assert spread(["cuda:0", "cuda:1", "cuda:2", "cuda:3"], 2) == ["cuda:0,cuda:2", "cuda:1,cuda:3"]
    assert spread(["cpu"], 2) == ["cpu", "cpu"]


def test_the_batch_plan_gives_each_worker_its_devices(tmp_path, two_gpus):
    params = dict(storage=f"journal:{tmp_path}/s.log", dataset="synthetic", model="lstm")
    (tmp_path / "auto.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "cpu.yaml").write_text(yaml.safe_dump({**params, "device": "cpu"}))
    (tmp_path / "list.yaml").write_text(yaml.safe_dump({**params, "devices": "cuda:1,cuda:0"}))

    def devices(name, workers):
        jobs = batch.plan([str(tmp_path / name)], 1, workers, tmp_path / "nbs")
        assert all(j.status == "pending" for j in jobs), [j.error for j in jobs]
        return [j.params.get("devices") for j in jobs]

    assert devices("auto.yaml", 3) == ["cuda:0", "cuda:1", "cuda:0"]
    assert devices("list.yaml", 2) == ["cuda:1", "cuda:0"]
    assert devices("cpu.yaml", 2) == [None, None]               # device names it: all workers there
    assert devices("auto.yaml", 1) == [None]                    # one worker takes every device itself


def test_slots_go_round_the_devices_and_each_device_holds_trials_per_device(synthetic_prepared):
    # The meta device stands in for a second GPU: DeviceSlots only copies the data there.
    cpu, meta = torch.device("cpu"), torch.device("meta")
    slots = DeviceSlots(synthetic_prepared, [cpu, meta], trials_per_device=2)
    assert len(slots) == 4
    with slots.hold() as a, slots.hold() as b, slots.hold() as c:
        assert [a.device, b.device, c.device] == [cpu, meta, cpu]
        assert a.data is synthetic_prepared and b.data.train.tokens.device == meta
        assert b.data is not synthetic_prepared and b.data.val.tokens.shape == synthetic_prepared.val.tokens.shape
        with slots.hold() as d:
            assert d.device == meta                     # the last free slot
    with slots.hold() as e:
        assert e is d                                   # the first one given back


class Recorder:
    """Wraps the objective's ``train``: when each call starts and ends, and on which thread.
    The first two calls wait for each other, so they overlap however busy the machine (a
    search of two trials at once must run two at once); ``on_both`` runs once both have begun."""

    def __init__(self, real, fail_call: int | None = None, pause: float = 0.3, on_both=None):
        self.real, self.fail_call, self.pause, self.on_both = real, fail_call, pause, on_both
        self.calls, self.lock, self.ballast = [], threading.Lock(), []
        self.both, self.apart = threading.Barrier(2, timeout=120), False

    def __call__(self, *args, **kwargs):
        with self.lock:
            n = len(self.calls)
            self.calls.append([time.monotonic(), None])
        try:
            if n < 2:
                try:
                    self.both.wait()
                except threading.BrokenBarrierError:
                    self.apart = True           # the test says so, rather than a count failing
                if n == 1 and self.on_both:
                    self.on_both()
            time.sleep(self.pause)
            if n == self.fail_call:
                ballast = torch.zeros(1000)         # stands in for the trial's GPU tensors
                self.ballast.append(weakref.ref(ballast))
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.real(*args, **kwargs)
        finally:
            self.calls[n][1] = time.monotonic()

    def most_at_once(self) -> int:
        events = sorted([(s, 1) for s, _ in self.calls] + [(e, -1) for _, e in self.calls])
        running = most = 0
        for _, step in events:
            running += step
            most = max(most, running)
        return most


def test_two_trials_at_once_on_the_cpu_and_an_oom_fails_alone(tmp_path, monkeypatch):
    recorder = Recorder(objective_mod.train, fail_call=2)
    freed = []
    monkeypatch.setattr(objective_mod, "train", recorder)
    # By the time the memory is given back, nothing holds the failed trial's tensors any more.
    monkeypatch.setattr(objective_mod, "free_memory",
                        lambda device: freed.append((device, [r() is None for r in recorder.ballast])))
    result = cl.run_search(tiny_cfg(tmp_path, n_trials=5, pruner="none", devices="cpu",
                                    trials_per_device=2))
    trials = result.study.trials
    assert not recorder.apart, "the first two trials never ran at once"
    assert len(trials) == 5 and all(t.user_attrs["device"] == "cpu" for t in trials)
    assert recorder.most_at_once() == 2
    states = [t.state for t in trials]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 4
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.user_attrs["fail_reason"].startswith("out of memory on cpu: CUDA out of memory")
    assert freed == [(torch.device("cpu"), [True])]
    res = json.loads((tmp_path / "out" / "optimization_results.json").read_text())
    assert res["n_trials"] == 5 and res["states"]["fail"] == 1 and res["states"]["complete"] == 4
    assert "out of memory on cpu" in (tmp_path / "out" / "optimization_report.txt").read_text()


def test_ctrl_c_stops_every_running_trial_at_its_next_epoch(tmp_path, monkeypatch):
    # Ctrl-C a second after both trials start, while both run (each would train ~5 s).
    timer = threading.Timer(1, os.kill, (os.getpid(), signal.SIGINT))
    recorder = Recorder(objective_mod.train, pause=0, on_both=timer.start)
    monkeypatch.setattr(objective_mod, "train", recorder)
    slow = {"training": {"learning_rate": 1e-3}, "models": {"lstm": {"hidden_size": 16, "embedding_dim": 8}}}
    try:
        result = cl.run_search(tiny_cfg(tmp_path, n_trials=4, epochs=400, pruner="none", search_space=slow,
                                        trials_per_device=2))
    finally:
        timer.cancel()
    assert not recorder.apart, "the first two trials never ran at once"
    assert result.interrupted
    assert max(end for _, end in recorder.calls) - recorder.calls[0][0] < 30
    trials = result.study.trials
    assert len(trials) == 2 and recorder.most_at_once() == 2
    for t in trials:
        assert t.state == TrialState.FAIL and "interrupted" in t.user_attrs["fail_reason"]
        assert 0 < len(t.intermediate_values) < 400
