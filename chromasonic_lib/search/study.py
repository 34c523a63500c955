"""Studies: storage (SQLite, PostgreSQL/MySQL, journal file, gRPC proxy), sampler, pruner,
heartbeats.

Optuna's own storages are the distributed engine: workers on several machines share one
study through an RDB URL (directly, or through Optuna's gRPC proxy when there are hundreds of
them: see :mod:`chromasonic_lib.proxy`); processes on one machine can share a journal file.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import random
import re
import threading
import time
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import optuna
from ..optuna_private import (CachedStorage, backend_of, cache_knows, cache_lock, cache_refresh,
                              cache_trials, cache_unfinished, running_without_heartbeat)
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from .config import SearchConfig
from .objectives import METRIC_NAMES
from ..config.checks import grpc_address
from ..errors import ConfigError
from ..paths import mask_url, resolve_storage_url
from .heartbeat import MAX_RETRY
from .storage import RetryingStorage, chain, describe

log = logging.getLogger(__name__)


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 patience: float = 600) -> RetryingStorage:
    """Connect to a storage URL now, so a wrong or unreachable one fails before any training.

    RDB storages get heartbeats: a trial whose worker died (even by SIGKILL) is marked FAIL
    after ``grace_period`` seconds by the next worker, and its parameters are queued again.
    (Journal files and the gRPC proxy have none of Optuna's: the search gives them its own,
    see :mod:`.heartbeat`.)
    Once open, every call waits out an outage for up to ``patience`` seconds (see
    :mod:`.storage`); the wrapped storage is its ``inner``.
    """
    storage = _open(url, heartbeat_interval, grace_period)
    if isinstance(storage, RDBStorage):     # as optuna.create_study would wrap it
        storage = _Cache(storage)
    return RetryingStorage(storage, mask_url(url), patience)


def _open(url: str, heartbeat_interval: int | None, grace_period: int | None
          ) -> optuna.storages.BaseStorage:
    resolved = resolve_storage_url(url)
    if resolved.startswith("grpc://"):
        return _open_proxy(url)
    try:
        if url in ("memory", ":memory:"):
            return optuna.storages.InMemoryStorage()
        if resolved.startswith("journal:"):
            path = resolved[len("journal:"):]
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        if resolved.startswith("sqlite:///"):
            Path(resolved[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        storage_class = _SQLiteStorage if resolved.startswith("sqlite") else _RDBStorage
        engine = {"pool_pre_ping": True}
        if resolved.startswith(("postgresql", "mysql")):
            engine["connect_args"] = {"connect_timeout": 10}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            heartbeat = {}
            if heartbeat_interval:
                heartbeat = dict(heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
            # Workers starting together on a fresh database race to create Optuna's tables;
            # the loser sees an integrity error and simply tries again. Dozens starting at once
            # may also fill the server's connection slots for a moment ("too many clients", which
            # Optuna may wrap in its StorageInternalError "during the commit"): those wait, up to
            # FULL_WAIT seconds, for the others to settle.
            attempt, began = 0, time.monotonic()
            server = resolved.startswith(("postgresql", "mysql"))
            while True:
                try:
                    return storage_class(resolved, engine_kwargs=engine, **heartbeat)
                except ImportError:
                    raise
                except Exception as e:
                    attempt += 1
                    crowded = server and (_SERVER_FULL.search(" ".join(map(str, chain(e)))) or
                                          isinstance(e, optuna.exceptions.StorageInternalError))
                    full = crowded and time.monotonic() - began < FULL_WAIT
                    if not full and (attempt >= 3 or not server):
                        raise
                    time.sleep(min(1 + attempt, 5) + random.random())
    except ImportError as e:
        raise ConfigError(mask_url(f"storage {url!r} needs a database driver that is not installed "
                                   f"({e}); for PostgreSQL: pip install -e '.[postgres]'")) from None
    except Exception as e:
        first, cause = describe(e), list(chain(e))[-1]      # the driver's own words too
        if cause is not e:
            first += f" ({type(cause).__name__}: {describe(cause)})"
        raise ConfigError(mask_url(f"storage {url!r} cannot be opened: {first}")) from None


PROXY_WAIT = 10      # seconds a worker waits for the gRPC proxy to answer when it opens it
FULL_WAIT = 120      # seconds a worker waits for a free connection slot of a full server
# What PostgreSQL (SQLSTATE 53300) and MySQL (1040) say when every connection slot is taken.
_SERVER_FULL = re.compile(r"too many clients|remaining connection slots|too many connections",
                          re.IGNORECASE)


def _open_proxy(url: str) -> optuna.storages.BaseStorage:
    """Optuna's client of the gRPC storage proxy at ``grpc://host:port``, once it answers."""
    host, port = grpc_address(url)
    try:
        import grpc  # noqa: F401  (Optuna imports it lazily, and would fail on first use)
    except ImportError as e:
        raise ConfigError(f"storage {url!r} needs grpcio, which is not installed ({e}): "
                          f"pip install -e '.[grpc]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=PROXY_WAIT)
    except ConnectionError:
        proxy.close()
        raise ConfigError(f"storage {url!r} cannot be opened: no storage proxy answered at "
                          f"{host}:{port} within {PROXY_WAIT} s (start one with python -m "
                          f"chromasonic_lib.proxy --storage <database URL> --port {port})") from None
    return proxy


class _RDBStorage(RDBStorage):
    """Optuna's RDB storage, whose stale trials also include those whose first heartbeat never
    landed: a server that went away as a trial started leaves it RUNNING with no heartbeat row,
    which Optuna's check passes over for ever. Such a trial is stale once it started longer than
    the grace period ago (on this machine's clock, as Optuna stamps the start), as a journal
    study's trial without a beat is (heartbeat.py)."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        grace = timedelta(seconds=self.grace_period or 2 * self.heartbeat_interval)
        now = datetime.now()
        return stale + [tid for tid, start in running_without_heartbeat(self, study_id)
                        if start is not None and now - start > grace]


class _SQLiteStorage(_RDBStorage):
    """Optuna's RDB storage on SQLite, safe for trials that run in threads (``n_jobs``).

    A worker takes a queued trial by reading it WAITING and writing RUNNING under a row lock
    (SELECT ... FOR UPDATE), which SQLite ignores: two threads could both take the same trial
    and both run it. Within a process, a lock does what the row lock would.
    """

    _state_lock = threading.Lock()

    def set_trial_state_values(self, trial_id, state, values=None) -> bool:
        with self._state_lock:
            return super().set_trial_state_values(trial_id, state, values)


_UNFINISHED = {optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING}


class _Cache(CachedStorage):
    """Optuna's cache in front of an RDB storage, which also takes the parameters of trials it
    never saw.

    Optuna's cache looks a trial's study up in its own memory to set a parameter, and fails the
    trial with a bare ``KeyError`` when it isn't there. A worker's cache has seen every trial it
    runs, but a gRPC proxy restarted under running workers hasn't: it is asked for the next
    parameter of trials created through the proxy before it. Those go to the database itself,
    which checks them against the study's earlier ones as the cache would.
    """

    def __init__(self, backend) -> None:
        super().__init__(backend)
        self._listed: dict[int, list] = {}         # study id -> its trials by number, so far
        self._changing: dict[int, set[int]] = {}   # study id -> numbers unfinished when listed

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states=None) -> list:
        """Optuna's answer, at a cost that does not grow with the study where it can: the
        unfinished trials (what ``ask`` looks for after every trial: WAITING ones) from the
        cache's set of them; every trial by number without sorting the study again (Optuna's
        own sorts it with a Python key for each call, 8 ms at 10,000 trials)."""
        cache_refresh(self, study_id)
        with cache_lock(self):
            if states is not None and set(states) <= _UNFINISHED:
                trials = sorted((t for t in cache_unfinished(self, study_id) if t.state in states),
                                key=lambda t: t.number)
            else:
                trials = self._by_number(study_id)
                if states is not None:
                    trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def _by_number(self, study_id: int) -> list:
        """Every trial of the study by number (under the cache's lock). The list is kept from one
        call to the next: only the entries of trials unfinished at the last call (the cache
        replaces a trial it reads again) and the trials numbered beyond it are looked up."""
        by_number = cache_trials(self, study_id)
        listed = self._listed.setdefault(study_id, [])
        changing, new = self._changing.pop(study_id, set()), range(len(listed), len(by_number))
        for n in changing:
            listed[n] = by_number[n]
        try:        # numbered 0..n-1, as a study's trials are once all are read
            listed.extend([by_number[n] for n in new])
        except KeyError:        # a gap (a trial not read yet): sorted, and not kept
            del self._listed[study_id]
            return sorted(by_number.values(), key=lambda t: t.number)
        self._changing[study_id] = {n for n in (*changing, *new) if not listed[n].state.is_finished()}
        return list(listed)

    def set_trial_param(self, trial_id, param_name, param_value_internal, distribution) -> None:
        with cache_lock(self):
            known = cache_knows(self, trial_id)
        if known:
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        else:
            backend_of(self).set_trial_param(trial_id, param_name, param_value_internal, distribution)


def load_existing_study(storage_url: str, name: str) -> optuna.Study:
    """Load a study that must already exist; a missing one is an error naming the others."""
    storage = open_storage(storage_url)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        raise ConfigError(f"study_name {name!r} is not in storage {mask_url(storage_url)!r}; "
                          f"studies there: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=storage)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """tpe (multivariate, constant liar), random, gp, cmaes, each drawing per trial (see below)."""
    return TrialSeededSampler(name, seed)


def _new_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            # group=True: a conditional space (model=any) is modelled per family, not flattened.
            # constant_liar (Optuna 5's default, said here to keep it): running trials of other
            # workers count as bad, so parallel workers don't all sample the same region.
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                              n_startup_trials=5, constant_liar=True)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5)
        # CMA-ES has no categorical support: those parameters fall back to random sampling.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False,
                                            independent_sampler=optuna.samplers.RandomSampler(seed=seed))


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` in a study searched with ``seed``."""
    digest = hashlib.sha256(f"{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """An Optuna sampler whose random stream is drawn afresh for every trial from
    (``seed``, trial number).

    A sampler seeded once per process makes every worker, and every resumed run, propose the
    same configurations. Trial numbers are handed out by the storage, unique across workers
    and resumes, so seeding by them gives each trial its own draws, while a study run again
    from scratch with the same seed still proposes the same trials. The sampler's model (TPE's
    densities, CMA-ES's state in the storage) is rebuilt from the study's trials every time.
    Each running trial has its own sampler, so trials that run at once in threads (``n_jobs``)
    don't draw from each other's.
    """

    def __init__(self, name: str, seed: int):
        self.name, self.seed = name, seed
        self._sampler = _new_sampler(name, seed)
        self._running: dict[int, optuna.samplers.BaseSampler] = {}   # trial number -> its sampler

    def __str__(self) -> str:
        return f"{type(self._sampler).__name__} (seeded per trial from seed {self.seed})"

    def _of(self, trial) -> optuna.samplers.BaseSampler:
        return self._running.get(trial.number, self._sampler)

    def before_trial(self, study, trial) -> None:
        sampler = self._running[trial.number] = _new_sampler(self.name, trial_seed(self.seed, trial.number))
        sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._of(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._of(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._of(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._running.pop(trial.number, self._sampler).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


def make_pruner(name: str, epochs: int, p_threshold: float = 0.1) -> optuna.pruners.BasePruner:
    """median: stop a trial whose loss is worse than the median of earlier trials at that epoch
    (``epochs``: the steps a trial reports; a cross-validated trial's are its folds).

    One finished trial is enough to compare against, because a new study starts with the
    families' defaults: a reasonable reference. The first tenth of the epochs (at least one)
    is never judged, so big models that start slowly get a fair chance.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=max(1, epochs // 10))
    if name == "wilcoxon":
        # Paired evidence, melody by melody against the best trial (a cross-validated trial
        # reports each melody's nats/note, its id the step): Optuna's pruner for this case.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=p_threshold)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 2),
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def create_study(cfg: SearchConfig, storage: optuna.storages.BaseStorage) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists: a rerun adds trials, it never starts over.

    Returns ``(study, created)``. When several workers start together on a new study, the
    storage's unique study name lets exactly one of them create it; only that one sets it up
    (stores its settings, queues the families' defaults).
    """
    sampler, pruner = make_sampler(cfg.sampler, cfg.seed), make_pruner(cfg.pruner, cfg.folds or cfg.epochs, cfg.wilcoxon_p)
    try:
        study = optuna.create_study(storage=storage, study_name=cfg.study_name,
                                    directions=["minimize"] * len(cfg.objectives), sampler=sampler,
                                    pruner=pruner)
        created = True
        if len(cfg.objectives) > 1:     # the names Optuna's plots give the axes
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([METRIC_NAMES[o] for o in cfg.objectives])
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=cfg.study_name, storage=storage, sampler=sampler,
                                  pruner=pruner)
        created = False
        log.info("resuming study %r: %d trials so far", cfg.study_name, len(study.trials))
    if cfg.storage.startswith("sqlite") and any(
            t.state == optuna.trial.TrialState.RUNNING for t in study.trials):
        log.warning("storage is SQLite and another worker seems to be running on study %r: "
                    "SQLite is not safe for several processes; use journal:<file> or PostgreSQL",
                    cfg.study_name)
    return study, created
