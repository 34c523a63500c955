"""Where trials run: a search's devices, a slot on one for each running trial, and batch
workers spread over them.

Optuna runs ``trials_per_device × len(devices)`` trials at once, each in a thread of its own
(``study.optimize(n_jobs=...)``). A trial holds a slot while it runs: a device with a copy of
the data there and, when trials share a GPU, a CUDA stream of the slot's own, so their kernels
overlap instead of queueing behind each other.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import queue
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch

from ..config import check_devices
from ..data import Prepared
from ..data.splits import MelodyTensor
from ..errors import ConfigError
from ..training import pick_device


def parse_devices(spec: str = "auto", device: str = "auto") -> list[torch.device]:
    """The devices of ``devices=spec``, each with its index (``cuda`` is the current GPU).

    ``auto`` means ``device``'s choice, and when that is auto too, every visible CUDA GPU,
    else MPS, else the CPU. CUDA or MPS asked for where there is none warns and falls back to
    the CPU, as :func:`~chromasonic_lib.training.pick_device` does; a GPU index that is not
    visible is a :class:`ConfigError` naming those that are.
    """
    check_devices("devices", spec)
    if spec == "auto" and device == "auto" and torch.cuda.is_available():
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    names = [device] if spec == "auto" else [name.strip() for name in spec.split(",")]
    found: list[torch.device] = []
    for name in names:
        d = pick_device(name)
        if d.type == "cuda":
            d = torch.device("cuda", torch.cuda.current_device() if d.index is None else d.index)
            if d.index >= torch.cuda.device_count():
                visible = ", ".join(f"cuda:{i}" for i in range(torch.cuda.device_count()))
                raise ConfigError(f"devices: {name} is not visible here; the GPUs are {visible} "
                                  f"(CUDA_VISIBLE_DEVICES numbers them from 0)")
        if d not in found:          # cuda:0,cuda:1 without CUDA: the CPU, once
            found.append(d)
    return found


def spread(devices: list[str], workers: int) -> list[str]:
    """Each of ``workers`` worker processes' ``devices`` parameter: worker i takes device
    i mod n; with more devices than workers, worker i takes every workers-th from the i-th,
    so that every device is used."""
    if workers >= len(devices):
        return [devices[i % len(devices)] for i in range(workers)]
    return [",".join(devices[i::workers]) for i in range(workers)]


@dataclass
class Slot:
    """One place for a running trial: a device, the data there, and its stream on a GPU
    that several trials share (None: the device's default stream)."""

    device: torch.device
    data: Prepared
    stream: Any = None


def data_on(data: Prepared, device: torch.device) -> Prepared:
    """``data`` with its splits on ``device`` (the same object if they are there already)."""
    here = data.train.tokens.device
    if here.type == device.type and (here.index or 0) == (device.index or 0):   # mps is mps:0
        return data
    s, n_keys = data.splits, data.train.n_keys
    return dataclasses.replace(data, train=MelodyTensor(s.train, device, n_keys),
                               val=MelodyTensor(s.val, device, n_keys),
                               test=MelodyTensor(s.test, device, n_keys) if data.test else None)


class DeviceSlots:
    """``trials_per_device`` slots on each device; a trial holds one for as long as it runs.

    The slots are handed out round the devices (cuda:0, cuda:1, cuda:0, ...), so the first
    trials of a search spread over the GPUs. Optuna runs as many trials at once as there are
    slots, so a trial never waits for one.
    """

    def __init__(self, data: Prepared, devices: list[torch.device], trials_per_device: int = 1):
        self.devices, self.trials_per_device = devices, trials_per_device
        copies = {d: data_on(data, d) for d in devices}
        shared = trials_per_device > 1
        self._free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        for _ in range(trials_per_device):
            for d in devices:
                stream = torch.cuda.Stream(d) if shared and d.type == "cuda" else None
                self._free.put(Slot(d, copies[d], stream))

    def __len__(self) -> int:
        return len(self.devices) * self.trials_per_device

    @contextlib.contextmanager
    def hold(self) -> Iterator[Slot]:
        slot = self._free.get()
        try:
            with _running_on(slot):
                yield slot
        finally:
            self._free.put(slot)


@contextlib.contextmanager
def _running_on(slot: Slot) -> Iterator[None]:
    """This thread's CUDA work goes to the slot's device, on the slot's stream if it has one."""
    if slot.device.type != "cuda":
        yield
        return
    with torch.cuda.device(slot.device):
        if slot.stream is None:
            yield
            return
        # The data were copied on the default stream: the slot's stream starts after that.
        slot.stream.wait_stream(torch.cuda.default_stream(slot.device))
        with torch.cuda.stream(slot.stream):
            yield
        slot.stream.synchronize()


def free_memory(device: torch.device) -> None:
    """Give a failed trial's cached GPU memory back, so the trials beside it can use it (the
    allocator keeps freed blocks for the stream that used them)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.empty_cache()


class OneAtATime:
    """Optuna callbacks that run one at a time, in order: with several trials at once, two
    may finish together, and the result files, the checkpoint keeper and the live view each
    expect one caller."""

    def __init__(self, callbacks: Iterable[Callable]):
        self.callbacks, self.lock = list(callbacks), threading.Lock()

    def __call__(self, study, trial) -> None:
        with self.lock:
            seen = ReadOnce(study)
            for callback in self.callbacks:
                callback(seen, trial)


class ReadOnce:
    """The study as the callbacks after one trial see it: its trials read from the storage once
    for all of them (the result files, the checkpoint keeper and the live view each read them,
    and with dozens of workers each read costs the database). Everything else is the study's."""

    def __init__(self, study):
        self._study, self._trials = study, None

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        if self._trials is None:
            self._trials = self._study.get_trials(deepcopy=False)
        if states is None and not deepcopy:
            return self._trials         # a list of its own, read by the callbacks, never changed
        trials = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    @property
    def trials(self) -> list:
        return self.get_trials()


@contextlib.contextmanager
def stop_on_interrupt(stop: threading.Event | None) -> Iterator[None]:
    """Ctrl-C (SIGINT) sets ``stop`` as well as raising KeyboardInterrupt in the main thread.

    With trials in threads, the main thread only waits for them: it is the one Ctrl-C
    interrupts, and then Optuna waits for the running trials to end. Each checks ``stop``
    after every epoch, so they end at their next one instead of running to their last.
    Nothing changes without ``stop`` (a trial alone runs in the main thread).
    """
    if stop is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        stop.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
