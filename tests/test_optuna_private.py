"""The private attributes of Optuna the workbench reads (optuna_private.py): each still
where it was, on real objects, so an Optuna upgrade that moves one fails here first."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import optuna

from chromasonic_lib import optuna_private as private
from chromasonic_lib.search.study import _Cache


def _square(x):
    return x * x


def test_each_private_attribute_is_where_it_was_checked(tmp_path):
    study = optuna.create_study(study_name="p", storage=f"sqlite:///{tmp_path}/s.db")
    trial = study.ask()
    storage = private.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert storage.get_trial(private.trial_id(trial)).number == trial.number
    assert storage.get_study_id_from_name("p") == private.study_id(study)
    frozen = study.trials[0]
    assert private.trial_id(frozen) == private.trial_id(trial)
    cache = _Cache(optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db"))
    assert not private.cache_knows(cache, private.trial_id(trial))
    cache.get_all_trials(private.study_id(study))
    assert private.cache_knows(cache, private.trial_id(trial))
    assert isinstance(private.backend_of(cache), optuna.storages.RDBStorage)
    waiting = study.enqueue_trial({}) or study.trials[-1]
    private.cache_refresh(cache, private.study_id(study))
    with private.cache_lock(cache):
        assert [t.number for t in private.cache_unfinished(cache, private.study_id(study))] in \
            ([trial.number, waiting.number], [waiting.number, trial.number])
        assert sorted(private.cache_trials(cache, private.study_id(study))) == [0, 1]
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/h.db", heartbeat_interval=10)
    assert isinstance(rdb, private.BaseHeartbeat) and hasattr(rdb, private.STALE_TRIAL_IDS)
    beating = optuna.create_study(study_name="h", storage=rdb)
    quiet, beat = beating.ask(), beating.ask()
    rdb.record_heartbeat(private.trial_id(beat))
    assert [tid for tid, _ in private.running_without_heartbeat(rdb, private.study_id(beating))] == \
        [private.trial_id(quiet)]
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    assert private.journal_file(journal) == str(tmp_path / "j.log")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(_square, 3).result() == 9
        assert len(private.worker_processes(pool)) == 1


def test_the_cache_answers_as_optuna_s_own_however_its_trials_were_read(tmp_path):
    """The workbench's cache lists a study's trials without sorting the study after every trial:
    the same answer as Optuna's own cache, for every filter, when another worker's trials came
    in between and out of order."""
    from optuna.trial import TrialState
    url = f"sqlite:///{tmp_path}/s.db"
    ours = optuna.create_study(study_name="c", storage=_Cache(optuna.storages.RDBStorage(url)))
    other = optuna.load_study(study_name="c", storage=url)
    for i in range(6):
        study = ours if i % 2 else other
        trial = study.ask()
        if i == 4:
            continue                    # left RUNNING
        study.tell(trial, float(i)) if i != 3 else study.tell(trial, state=TrialState.PRUNED)
    other.enqueue_trial({})
    ours.ask()                          # a trial of ours created before the other's were read
    reference = optuna.load_study(study_name="c", storage=optuna.storages._CachedStorage(
        optuna.storages.RDBStorage(url)))
    def same():
        for states in (None, (TrialState.WAITING,), (TrialState.RUNNING,), (TrialState.COMPLETE,),
                       (TrialState.WAITING, TrialState.RUNNING)):
            mine = [(t.number, t.state, t.value) for t in ours.get_trials(deepcopy=False, states=states)]
            theirs = [(t.number, t.state, t.value) for t in reference.get_trials(deepcopy=False, states=states)]
            assert mine == theirs, states

    same()
    # Later calls look up only what may have changed: a running trial told, new ones added.
    running = [t for t in other.get_trials() if t.state == TrialState.RUNNING][0]
    other.tell(running.number, 0.5)
    ours.tell(ours.get_trials(states=(TrialState.RUNNING,))[-1].number, 0.25)
    for i in range(3):
        (ours if i % 2 else other).enqueue_trial({})
    same()
