"""Checkpoints: every complete trial's weights in the artifact store, the best as best_model.pt."""
from __future__ import annotations

import json

import optuna
import pytest
import torch

import chromasonic_lib as cl
from chromasonic_lib.checkpoints import checkpoint_id
from chromasonic_lib.training import evaluate
from test_search import tiny_cfg


def test_each_trial_keeps_its_weights_and_only_the_best_few_stay(tmp_path):
    store = tmp_path / "store"
    result = cl.run_search(tiny_cfg(tmp_path, n_trials=5, epochs=2, pruner="none",
                                    artifact_store=str(store), keep_checkpoints=2))
    study = result.study
    done = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert len(done) >= 3 and all(checkpoint_id(t) for t in done)
    assert sorted(p.name for p in store.iterdir()) == sorted(checkpoint_id(t) for t in done[:2])
    model, meta = cl.load_checkpoint(study, done[1].number)
    assert meta["trial"] == done[1].number and meta["value"] == pytest.approx(done[1].value)
    with pytest.raises(cl.ConfigError, match=f"no longer in the artifact store '{store}' .the study's."):
        cl.load_checkpoint(study, done[-1].number)
    best_file = torch.load(tmp_path / "out" / "best_model.pt", weights_only=True)
    assert best_file["trial"] == study.best_trial.number


def test_best_model_pt_scores_the_best_value(tmp_path, synthetic_prepared):
    result = cl.run_search(tiny_cfg(tmp_path, n_trials=3, epochs=2), data=synthetic_prepared)
    model, meta = cl.load_checkpoint(tmp_path / "out" / "best_model.pt")
    assert meta["trial"] == result.study.best_trial.number
    assert evaluate(model, synthetic_prepared.val).nats_per_note == pytest.approx(result.best_value, rel=1e-4)


def test_the_default_store_lies_beside_the_sqlite_file(tmp_path):
    result = cl.run_search(tiny_cfg(tmp_path, n_trials=1, epochs=1))
    assert result.study.user_attrs["artifact_store"] == str(tmp_path / "artifacts")
    assert len(list((tmp_path / "artifacts").iterdir())) == 1


def test_workers_that_join_use_the_study_s_store_and_one_naming_another_stops(tmp_path):
    store = tmp_path / "the-study-s-store"
    first = cl.run_search(tiny_cfg(tmp_path, n_trials=1, epochs=1, artifact_store=str(store)))
    # A worker that names no store (on a machine whose default would be elsewhere) uses the study's.
    joined = cl.run_search(tiny_cfg(tmp_path, n_trials=1, epochs=1, output_dir=str(tmp_path / "other")))
    done = [t for t in joined.study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2 and sorted(p.name for p in store.iterdir()) == sorted(checkpoint_id(t) for t in done)
    assert not (tmp_path / "artifacts").exists()
    cl.load_checkpoint(first.study, done[-1].number)
    with pytest.raises(cl.ConfigError, match=f"artifact_store '{tmp_path}/elsewhere' is not the store "
                                             f"study 't' recorded when it was created, '{store}'"):
        cl.run_search(tiny_cfg(tmp_path, n_trials=1, epochs=1, artifact_store=str(tmp_path / "elsewhere")))


def test_a_checkpoint_whose_removal_failed_is_removed_after_a_later_trial(tmp_path):
    """A store that refuses a removal once (a network error) keeps the checkpoint on the
    keeper's list: the next trial's call removes it."""
    from chromasonic_lib.checkpoints import CheckpointKeeper

    class Store:
        def __init__(self):
            self.removed, self.fail = [], True

        def remove(self, artifact):
            if self.fail:
                self.fail = False
                raise OSError("network down")
            self.removed.append(artifact)

    study = optuna.create_study()
    store, dist = Store(), {"x": optuna.distributions.FloatDistribution(0, 1)}
    keeper = CheckpointKeeper(store, None, keep=1)
    for i, value in enumerate((2.0, 1.0, 3.0)):
        link = json.dumps({"artifact_id": f"a{i}", "filename": "checkpoint.pt"})
        study.add_trial(optuna.trial.create_trial(value=value, params={"x": 0.5}, distributions=dist,
                                                  system_attrs={f"artifacts:a{i}": link}))
        try:
            keeper(study, study.trials[-1])
        except OSError:
            assert i == 1               # a0 out of the best, its removal refused
    assert sorted(store.removed) == ["a0", "a2"]
