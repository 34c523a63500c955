"""Every private attribute of Optuna (and the standard library) the workbench reads, in one place.

Optuna 5 gives no public way to reach a study's storage, a trial's or study's storage id, or what
its trial cache knows; the fault layer needs each. Each is named here once, with the Optuna
version it was checked against, and ``tests/test_optuna_private.py`` fails the day one moves.
"""
from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import _CachedStorage as CachedStorage        # noqa: F401 (named here)
from optuna.storages._heartbeat import BaseHeartbeat                # noqa: F401 (named here)

CHECKED_WITH = "5.1.0"      # the Optuna version these attributes were read from


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes through (``Study._storage``)."""
    return study._storage


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """A trial's id in its storage, as the storage's methods take it (``_trial_id``)."""
    return trial._trial_id


def study_id(study: optuna.Study) -> int:
    """A study's id in its storage (``Study._study_id``)."""
    return study._study_id


def cache_knows(cache: Any, trial: int) -> bool:
    """Whether Optuna's ``_CachedStorage`` has seen the trial with this id
    (``_trial_id_to_study_id_and_number``); read under the cache's own lock by the caller."""
    return trial in cache._trial_id_to_study_id_and_number


def worker_processes(pool: Any) -> list:
    """The processes of a ``ProcessPoolExecutor`` (``_processes``; none once it shut down)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def backend_of(storage: Any) -> Any:
    """What a wrapping storage wraps: ``_CachedStorage``'s RDB storage, ``JournalStorage``'s
    file or Redis backend (``_backend``); None for a storage that wraps nothing."""
    return getattr(storage, "_backend", None)


def journal_file(storage: Any) -> str | None:
    """The file of a journal storage's file backend (``_backend._file_path``); None otherwise."""
    return getattr(backend_of(storage), "_file_path", None)


def cache_refresh(cache: Any, study_id: int) -> None:
    """Have Optuna's ``_CachedStorage`` read the study's new and unfinished trials
    (``_read_trials_from_remote_storage``); it takes the cache's lock itself."""
    cache._read_trials_from_remote_storage(study_id)


def cache_trials(cache: Any, study_id: int) -> dict:
    """The cache's trials of a study by number (``_studies[id].trials``); read under the
    cache's own lock (``cache_lock``) by the caller."""
    return cache._studies[study_id].trials


def cache_unfinished(cache: Any, study_id: int) -> list:
    """The cache's unfinished (WAITING or RUNNING) trials of a study
    (``_studies[id].unfinished_trial_ids``, ``_trial_id_to_study_id_and_number``); under its lock."""
    trials = cache._studies[study_id].trials
    numbers = cache._trial_id_to_study_id_and_number
    return [trials[numbers[i][1]] for i in cache._studies[study_id].unfinished_trial_ids]


def cache_lock(cache: Any) -> Any:
    """The lock of Optuna's ``_CachedStorage`` (``_lock``)."""
    return cache._lock


# The storage method Optuna's heartbeats ask for the trials gone stale (retried like the others).
STALE_TRIAL_IDS = "_get_stale_trial_ids"


def running_without_heartbeat(storage: Any, study_id: int) -> list[tuple[int, Any]]:
    """The RUNNING trials of a study in an RDB storage that have no heartbeat row, as (trial id,
    datetime_start): Optuna's ``_get_stale_trial_ids`` passes them over. Read as it reads them
    (``_rdb.models.TrialModel.heartbeats``, ``_rdb.storage._create_scoped_session``,
    ``RDBStorage.scoped_session``)."""
    import sqlalchemy.orm
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    with _create_scoped_session(storage.scoped_session, True) as session:
        running = (session.query(models.TrialModel)
                   .options(sqlalchemy.orm.selectinload(models.TrialModel.heartbeats))
                   .filter(models.TrialModel.state == optuna.trial.TrialState.RUNNING)
                   .filter(models.TrialModel.study_id == study_id).all())
        return [(t.trial_id, t.datetime_start) for t in running if not t.heartbeats]
