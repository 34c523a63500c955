"""The study is the record: settings stored at creation, a changed one stops a resume."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest

import chromasonic_lib as cl
from test_search import TINY_SPACE, tiny_cfg

CHANGES = {
    "seed": 7, "val_fraction": 0.3, "test_fraction": 0.2, "n_sequences": 31, "sequence_length": 21,
    "epochs": 3, "encoding": "grid", "dataset": "essen/erk5",
    "search_space": {**TINY_SPACE, "models": {"lstm": {**TINY_SPACE["models"]["lstm"],
                                                       "hidden_size": {"type": "int", "low": 8, "high": 32}}}},
}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A one-trial study to resume with changed settings."""
    tmp = tmp_path_factory.mktemp("study")
    cl.run_search(tiny_cfg(tmp, n_trials=1, epochs=2))
    return tmp


def test_the_study_stores_what_its_numbers_mean(searched):
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{searched}/s.db")
    s = study.user_attrs["settings"]
    assert {k: s[k] for k in ("dataset", "encoding", "seed", "val_fraction", "test_fraction",
                              "n_sequences", "sequence_length", "epochs")} == \
        {"dataset": "synthetic", "encoding": "pitch", "seed": 42, "val_fraction": 0.1,
         "test_fraction": 0.1, "n_sequences": 30, "sequence_length": 20, "epochs": 2}
    assert s["search_space"]["models"]["lstm"]["hidden_size"]["high"] == 24
    assert len(s["dataset_fingerprint"]) == 16 and s["library_version"]


@pytest.mark.parametrize("name", list(CHANGES))
def test_resuming_with_a_changed_setting_stops_before_training(searched, name, monkeypatch):
    from chromasonic_lib.search import objective
    monkeypatch.setattr(objective, "train", lambda *a, **k: pytest.fail("trained"))
    kw = {"n_trials": 1, "epochs": 2, name: CHANGES[name]}
    with pytest.raises(cl.ConfigError) as err:
        cl.run_search(tiny_cfg(searched, **kw))
    message = str(err.value)
    assert "study_name 't'" in message and "new study_name" in message
    if name == "search_space":
        assert "models.lstm.hidden_size.high: 24 there, 32 now" in message
    else:
        assert name in message and repr(CHANGES[name]) in message
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{searched}/s.db")
    assert len(study.trials) == 1                          # the study keeps its trials


def test_settings_that_do_not_change_the_measurement_may_change(tmp_path):
    cl.run_search(tiny_cfg(tmp_path, n_trials=1, epochs=2))
    result = cl.run_search(tiny_cfg(tmp_path, n_trials=1, epochs=2, sampler="random", pruner="none",
                                    timeout=600, plot=True, heartbeat_interval=5, grace_period=20))
    assert len(result.study.trials) == 2


def test_a_folder_dataset_is_guarded_by_its_melodies(tmp_path):
    import shutil
    from chromasonic_lib.data.encodings import Notes
    from chromasonic_lib.generate import write_midi
    import numpy as np
    folder = tmp_path / "tunes"
    for i in range(6):
        write_midi(folder / f"t{i}.mid", Notes(np.array([60 + i, 62, 64, 65, 67, 65, 64, 62]),
                                               np.full(8, 0.5, np.float32)))
    cfg = dict(dataset=str(folder), n_trials=1, epochs=1, val_fraction=0.2, test_fraction=0.2)
    cl.run_search(tiny_cfg(tmp_path, **cfg))
    shutil.move(folder, tmp_path / "moved")                # same melodies elsewhere: fine
    cl.run_search(tiny_cfg(tmp_path, **{**cfg, "dataset": str(tmp_path / "moved")}))
    write_midi(tmp_path / "moved" / "t0.mid", Notes(np.array([70, 72, 74, 72, 70, 69, 67, 65]),
                                                    np.full(8, 0.5, np.float32)))
    with pytest.raises(cl.ConfigError, match="melodies in folder .* changed since the study"):
        cl.run_search(tiny_cfg(tmp_path, **{**cfg, "dataset": str(tmp_path / "moved")}))


def test_a_resumed_random_search_draws_new_configurations(tmp_path):
    cl.run_search(tiny_cfg(tmp_path, n_trials=4, sampler="random", epochs=1, pruner="none"))
    result = cl.run_search(tiny_cfg(tmp_path, n_trials=4, sampler="random", epochs=1, pruner="none"))
    params = [tuple(sorted(t.params.items())) for t in result.study.trials]
    assert len(params) == 8 and len(set(params)) == 8


def test_a_study_from_before_first_notes_were_scored_is_not_resumed():
    from chromasonic_lib.search.settings import check_resume, stored_settings
    study = optuna.create_study()
    now = {"protocol": 2, "dataset": "synthetic", "epochs": 2}
    study.set_user_attr("settings", {k: v for k, v in now.items() if k != "protocol"})
    assert stored_settings(study)["protocol"] == 1          # recorded before protocols were
    with pytest.raises(cl.ConfigError, match=r"leave out each melody's first note \(protocol 1\), "
                                             r"this version scores every note \(protocol 2\)"):
        check_resume(study, now)
    study.set_user_attr("settings", now)
    check_resume(study, now)


def test_the_library_version_changes_with_the_library_s_source(tmp_path, monkeypatch):
    from chromasonic_lib.search import settings
    settings.library_version.cache_clear()      # the source as it is now, not when first read
    now = settings.library_version()
    assert "+src." in now
    copy = tmp_path / "chromasonic_lib"
    (copy / "search").mkdir(parents=True)
    (copy / "search" / "settings.py").write_text(Path(settings.__file__).read_text())
    (copy / "models.py").write_text("X = 1\n")
    monkeypatch.setattr(settings, "__file__", str(copy / "search" / "settings.py"))
    settings.library_version.cache_clear()
    try:
        before = settings.library_version()
        (copy / "models.py").write_text("X = 2\n")
        settings.library_version.cache_clear()
        assert settings.library_version() != before
    finally:
        monkeypatch.undo()
        settings.library_version.cache_clear()
    assert settings.library_version() == now
