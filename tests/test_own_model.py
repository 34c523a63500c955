"""A model of one's own: the original script's example as written, the dry run's refusals, every path
(search, checkpoints, crossval, surprise, generation, wrappers) on the example classes."""
from __future__ import annotations

import json
import random
import subprocess
import uuid

import optuna
import pytest
import torch
from torch import nn

import chromasonic_lib as cl
from chromasonic_lib import generate
from chromasonic_lib.errors import ConfigError
from chromasonic_lib.models import build_model, check_model, family
from conftest import PYTHON, ROOT, postgres_or_skip

GRU = "examples/my_models.py:SimpleRNN"
TRANSFORMER = "examples/my_models.py:TinyTransformer"
SMALL = {GRU: {"embedding_dim": 8, "hidden_size": 16}, TRANSFORMER: {"d_model": 16, "num_layers": 1}}


class SimpleRNN(nn.Module):
    """The original script's example model, written as its users write theirs."""

    def __init__(self, vocab_size, embedding_dim=16, hidden_size=32, num_layers=1, dropout=0.1):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = nn.GRU(embedding_dim, hidden_size, num_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, vocab_size)

    def forward(self, x, hidden=None):
        out, hidden = self.rnn(self.embedding(x), hidden)
        return self.fc(self.dropout(out)), hidden


def _melodies(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start = rng.randint(40, 50)
        out.append([start + rng.choice([-2, 0, 2, 4]) for _ in range(24)])
    return out


def test_the_original_script_s_example_runs_as_written_with_a_class_of_ones_own(tmp_path):
    search_space = cl.HyperparameterSearchSpace(hidden_size_range=(8, 16), embedding_dim_range=(4, 8),
                                                num_epochs=2)
    optimizer = cl.HyperparameterOptimizer(model_class=SimpleRNN, search_space=search_space,
                                           output_dir=str(tmp_path / "out"), device="cpu")
    results = optimizer.optimize(train_data=_melodies(30, 0), val_data=_melodies(8, 1), vocab_size=88,
                                 n_trials=3)
    assert results["n_trials"] == 3 and results["best_value"] > 0
    assert set(results["model_params"]) == {"embedding_dim", "hidden_size", "num_layers", "dropout"}
    model = SimpleRNN(vocab_size=88, **results["model_params"])
    assert model.rnn.hidden_size == results["best_params"]["hidden_size"]
    assert (tmp_path / "out" / "best_model.pt").is_file()


def test_space_ranges_the_constructor_does_not_take_are_left_out_and_said_once(caplog):
    class NoLayers(nn.Module):
        def __init__(self, vocab_size, hidden_size=8):
            super().__init__()
            self.e, self.f = nn.Embedding(vocab_size, hidden_size), nn.Linear(hidden_size, vocab_size)

        def forward(self, x):
            return self.f(self.e(x))

    name = family(NoLayers).name
    with caplog.at_level("INFO"):
        space = cl.HyperparameterSearchSpace().to_space(name)
        cl.HyperparameterSearchSpace().to_space(name)
    assert list(space["models"][name]) == ["hidden_size"]
    assert set(space["training"]) == {"learning_rate", "batch_size"}
    said = [r.message for r in caplog.records if "left out" in r.message]
    assert len(said) == 1 and "embedding_dim" in said[0] and "num_layers" in said[0]


def test_data_as_padded_tensors_and_datasets_and_tokens_outside_the_vocabulary():
    from chromasonic_lib.data import from_token_lists
    from chromasonic_lib.errors import DataError
    padded = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 0]])
    data = from_token_lists(padded, torch.utils.data.TensorDataset(padded), 12, pad_id=0)
    assert [len(m) for m in data.data.melodies] == [3, 4, 3, 4]
    with pytest.raises(DataError, match=r"val_data\[1\]\[2\] is token 12, outside 0..11"):
        from_token_lists([[1, 2, 3]], [[1, 2], [3, 4, 12]], 12)


def test_a_dataset_function_of_one_s_own_gives_the_melodies(tmp_path):
    from chromasonic_lib.data import load_dataset
    from chromasonic_lib.errors import DataError
    name = cl.config.check_dataset("dataset", "examples/my_models.py:rising_and_falling")
    data = load_dataset(name)
    assert len(data.melodies) == 24 and data.melodies[0][0] == 27        # piano key 27: C3
    bad = tmp_path / "bad.py"
    bad.write_text("def melodies():\n    return [[1, 2, 3], [4, 90, 5]]\n")
    with pytest.raises(DataError, match="melody 1, position 1: token 90 is outside the piano keys"):
        load_dataset(f"{bad}:melodies")


# ---------------------------------------------------------------- the dry run refuses
class Bidirectional(nn.Module):
    def __init__(self, vocab_size, hidden_size=8):
        super().__init__()
        self.e = nn.Embedding(vocab_size, hidden_size)
        self.rnn = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.f = nn.Linear(2 * hidden_size, vocab_size)

    def forward(self, x):
        return self.f(self.rnn(self.e(x))[0])


class NoMask(nn.Module):
    def __init__(self, vocab_size, d_model=8):
        super().__init__()
        self.e = nn.Embedding(vocab_size, d_model)
        self.layer = nn.TransformerEncoderLayer(d_model, 2, 16, 0.0, batch_first=True)
        self.f = nn.Linear(d_model, vocab_size)

    def forward(self, x):
        return self.f(self.layer(self.e(x)))


class Transposed(nn.Module):
    def __init__(self, vocab_size, hidden_size=8):
        super().__init__()
        self.e, self.f = nn.Embedding(vocab_size, hidden_size), nn.Linear(hidden_size, vocab_size)

    def forward(self, x):
        return self.f(self.e(x)).transpose(1, 2)


class Nan(Transposed):
    def forward(self, x):
        return self.f(self.e(x)) * float("nan")


class BatchMean(Transposed):
    def forward(self, x):
        h = self.e(x)
        return self.f(h - h.mean(0, keepdim=True))


class Fine(Transposed):
    def forward(self, x):
        return self.f(self.e(x))


class WantsHeads(Fine):
    def __init__(self, vocab_size, hidden_size=8, heads=2):
        if hidden_size % heads:
            raise ValueError(f"hidden_size {hidden_size} does not divide into {heads} heads")
        super().__init__(vocab_size, hidden_size)


@pytest.mark.parametrize("cls,message", [
    (Bidirectional, "sees later notes: its logits at step 0 changed"),
    (NoMask, "sees later notes"),
    (Transposed, r"logits of shape \(3, 89, 7\) for tokens of shape \(3, 7\); expected \(3, 7, 89\)"),
    (Nan, "NaN"),
    (BatchMean, "changed with the other melodies of its batch"),
])
def test_the_dry_run_refuses_a_model_that_would_score_wrongly(cls, message):
    with pytest.raises(ConfigError, match=message) as e:
        check_model(cls, 88)
    assert cls.__qualname__ in str(e.value)


def test_a_bad_model_is_refused_before_any_trial_exists(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    name = family(Bidirectional).name
    cfg = cl.SearchConfig(study_name="bad", storage=storage, output_dir=str(tmp_path / "out"),
                          dataset="synthetic", n_sequences=20, sequence_length=16, model=name,
                          search_space={"training": {}, "models": {}}, device="cpu", plot=False, live=False)
    with pytest.raises(ConfigError, match="sees later notes"):
        cl.run_search(cfg)
    assert optuna.get_all_study_names(storage) == []


def test_a_space_and_a_constructor_that_disagree_are_refused_naming_both(tmp_path):
    name = family(WantsHeads).name
    with pytest.raises(ConfigError, match=r"layers is not a hyperparameter of .*WantsHeads .*its "
                                          r"constructor does not take it; allowed: hidden_size, heads"):
        cl.search.load_space({"models": {name: {"layers": 2}}}, name)
    space = cl.search.load_space({"models": {name: {"hidden_size": {"choices": [8, 9]}}}}, name)
    with pytest.raises(ConfigError, match=r"WantsHeads with hidden_size=9: its constructor failed: "
                                          r"ValueError: hidden_size 9 does not divide"):
        check_model(name, 88, "cpu", space.variants(name))


def test_values_are_checked_against_the_constructor_defaults_and_clashes_refused():
    class Kinds(Fine):
        def __init__(self, vocab_size, hidden_size=8, cell="gru", tied=False, scale=1.0):
            super().__init__(vocab_size, hidden_size)

    class Clash(Fine):
        def __init__(self, vocab_size, hidden_size=8, batch_size=4):
            super().__init__(vocab_size, hidden_size)

    build_model(Kinds, {"cell": "lstm", "tied": True, "scale": 2})
    for bad, message in (({"tied": 1}, "tied of .* must be a bool"), ({"cell": 3}, "cell .* must be a string"),
                         ({"hidden_size": 8.5}, "hidden_size .* must be an integer")):
        with pytest.raises(ConfigError, match=message):
            build_model(Kinds, bad)
    with pytest.raises(ConfigError, match="hyperparameter batch_size of Clash has the name of a workbench setting"):
        family(Clash)
    with pytest.raises(ConfigError, match="cannot import Nope from examples/my_models.py|cannot import Nope"):
        family("examples/my_models.py:Nope")
    with pytest.raises(ConfigError, match="not a torch.nn.Module class"):
        family("examples/my_models.py:math")


# ---------------------------------------------------------------- every path
@pytest.mark.parametrize("name", [GRU, TRANSFORMER])
def test_stepping_gives_what_forward_scores_with_and_without_the_class_s_state(name):
    model = build_model(name, SMALL[name], 88, seed=0).eval()
    x = torch.randint(0, 88, (2, 12))
    x[:, 0] = 88
    state, outs = model.start(2), []
    with torch.no_grad():
        for t in range(x.shape[1]):
            out, state = model.step(state, x[:, t])
            outs.append(out)
        torch.testing.assert_close(torch.stack(outs, 1), model(x), atol=1e-4, rtol=1e-4)
    assert state["stateful"] is (name == GRU)


def test_wrappers_memory_transposition_and_ensembles_take_an_own_model(synthetic_prepared):
    from chromasonic_lib.models import Ensemble
    from chromasonic_lib.surprise import surprise
    from chromasonic_lib.transposition import TranspositionAverage
    data = synthetic_prepared
    with_memory = build_model(GRU, {**SMALL[GRU], "memory_order": 2}, data.vocab_size, seed=0)
    ensemble = Ensemble([build_model(TRANSFORMER, SMALL[TRANSFORMER], data.vocab_size, seed=s) for s in (0, 1)])
    for model in (with_memory, TranspositionAverage(build_model(GRU, SMALL[GRU], data.vocab_size, seed=0), 2), ensemble):
        notes = surprise(model, data.data, data.splits.index["val"], "cpu")
        assert len(notes) == int(data.val.host_lengths.sum())        # every note, the first included
        assert notes["information.content"].notna().all()
        melody = generate.sample(model.eval(), [40, 42], 16)
        assert len(melody) == 16


def test_an_own_model_s_checkpoint_loads_in_a_fresh_process_and_names_a_missing_class(tmp_path):
    from chromasonic_lib.checkpoints import save_checkpoint
    model = build_model(GRU, SMALL[GRU], 88, seed=0)
    path = save_checkpoint(tmp_path / "m.pt", model, GRU, SMALL[GRU], "pitch")
    code = ("import sys, torch; from chromasonic_lib.checkpoints import load_checkpoint; "
            "m, p = load_checkpoint(sys.argv[1]); x = torch.tensor([[88, 40, 42]]); "
            "print(p['class'], p['hparams']['hidden_size'], float(m(x).sum()))")
    out = subprocess.run([PYTHON, "-c", code, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == [str(ROOT / "examples/my_models.py") + ":SimpleRNN", "16"]
    assert float(out.stdout.split()[2]) == pytest.approx(float(model.eval()(torch.tensor([[88, 40, 42]])).sum().detach()), rel=1e-4)
    payload = torch.load(path, weights_only=True)
    payload["class"] = payload["family"] = str(tmp_path / "gone.py") + ":SimpleRNN"
    torch.save(payload, tmp_path / "gone.pt")
    with pytest.raises(ConfigError, match=r"holds weights of .*gone.py:SimpleRNN.*model file not found"):
        cl.load_checkpoint(tmp_path / "gone.pt")


def test_crossval_cross_validates_an_own_model_by_its_import_path(tmp_path):
    out = subprocess.run([PYTHON, "-m", "chromasonic_lib.crossval", "--dataset", "synthetic", "--folds", "2",
                          "--model", GRU, "--params", "", "--epochs", "1", "--jobs", "2", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["model"] == str(ROOT / GRU) and result["bits_per_note"] > 0


def test_a_training_step_of_one_s_own_replaces_the_loss(tmp_path, synthetic_prepared):
    from chromasonic_lib.config import TrainConfig
    from chromasonic_lib.training import train
    step = tmp_path / "steps.py"
    step.write_text("import torch.nn.functional as F\nCALLS = []\n"
                    "def smoothed(model, batch, optimizer, params):\n"
                    "    CALLS.append(params['learning_rate'])\n"
                    "    logits = model(batch.x)\n"
                    "    loss = F.cross_entropy(logits.flatten(0, 1), batch.y.flatten(), ignore_index=-100,"
                    " label_smoothing=0.1)\n"
                    "    loss.backward()\n    return loss\n")
    cfg = TrainConfig(epochs=1, min_epoch_tokens=0, train_step=f"{step}:smoothed")
    history = train(build_model(GRU, SMALL[GRU], 88, seed=0), synthetic_prepared.train, synthetic_prepared.val, cfg)
    from chromasonic_lib.models.own import import_object
    assert import_object(f"{step}:CALLS") and history.val_loss[0] > 0


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_search_both_example_models_on_postgres_then_train_best_plays_them(tmp_path):
    url = postgres_or_skip()
    for name in (GRU, TRANSFORMER):
        study = f"own-{uuid.uuid4().hex[:8]}"
        params = dict(study_name=study, storage=url, dataset="synthetic", n_sequences=24, sequence_length=16,
                      model=name, search_space="params/spaces/own_model.yaml", n_trials=2, epochs=2,
                      device="cpu", threads=1, output_dir=str(tmp_path / study), plot=False, live=False)
        worker = "import sys, json, chromasonic_lib as cl; cl.run_search(cl.SearchConfig(**json.loads(sys.argv[1])))"
        procs = [subprocess.Popen([PYTHON, "-c", worker, json.dumps(params)], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        for p in procs:
            out, _ = p.communicate(timeout=600)
            assert p.returncode == 0, out[-3000:]
        try:
            trials = optuna.load_study(study_name=study, storage=url).trials
            assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
            cfg = cl.TrainBestConfig(study_name=study, storage=url, output_dir=str(tmp_path / study / "best"),
                                     epochs=1, device="cpu", n_samples=1, sample_length=8)
            from chromasonic_lib import best
            run = best.train_best(cfg, best.best_configuration(cfg))
            samples = best.generate_samples(run, cfg)
            assert samples[0].midi.is_file() and samples[0].wav.is_file()
            assert (tmp_path / study / "best" / "model.pt").is_file()
        finally:
            optuna.delete_study(study_name=study, storage=url)


# ---------------------------------------------------------------- what a stranger's review found
def test_a_class_defined_again_is_the_new_class():
    def make(width):
        class Net(Fine):
            def __init__(self, vocab_size, hidden_size=width):
                super().__init__(vocab_size, hidden_size)
        return Net
    first, second = make(8), make(16)
    assert family(first).defaults["hidden_size"] == 8
    assert family(second).defaults["hidden_size"] == 16       # not the cached first class
    assert build_model(second, {}, 88).model.e.embedding_dim == 16


def test_own_names_follow_their_own_defaults_not_our_families_rules(tmp_path):
    class Loose(Fine):
        def __init__(self, vocab_size, hidden_size=8, dropout=None, alpha=0.0, width=None,
                     activation=nn.ReLU):
            super().__init__(vocab_size, hidden_size if width is None else width)

    build_model(Loose, {"alpha": 0.0, "dropout": None})
    name = family(Loose).name
    space = cl.search.load_space({"models": {name: {"width": {"type": "int", "low": 8, "high": 32, "log": True}}}}, name)
    assert space.default_trials() == [{"width": 16}]           # a None default starts mid-range
    from chromasonic_lib.checkpoints import save_checkpoint
    path = save_checkpoint(tmp_path / "m.pt", build_model(Loose, {}, 88), name, {}, "pitch")
    model, payload = cl.load_checkpoint(path)                   # nn.ReLU rebuilt from the default
    assert "activation" not in payload["hparams"] and model.model.f.out_features == 89


def test_a_misspelled_space_entry_is_refused_and_another_spelling_of_the_class_is_its_entry():
    with pytest.raises(ConfigError, match="cannot import|not found"):
        cl.search.load_space({"models": {"examples/my_model.py:SimpleRNN": {"hidden_size": 8}}}, family(GRU).name)
    with pytest.raises(ConfigError, match="cannot import SimpleRNNN"):
        cl.search.load_space({"models": {"examples/my_models.py:SimpleRNNN": {"hidden_size": 8}}}, family(GRU).name)
    import sys
    sys.path.insert(0, str(ROOT))
    try:
        space = cl.search.load_space({"models": {"examples.my_models:SimpleRNN": {"hidden_size": 8}}},
                                     family(GRU).name)
    finally:
        sys.path.remove(str(ROOT))
    assert space.models[family(GRU).name]["hidden_size"].value == 8


def test_the_dry_run_tries_each_context_a_space_can_choose():
    class PoolsContext(Fine):
        def forward(self, x, context=None):
            h = self.e(x)
            if context is not None:
                h = h + context["duration"].float().mean(1, keepdim=True)[..., None]   # the whole melody's
            return self.f(h)

    name = family(PoolsContext).name
    space = cl.search.load_space({"models": {name: {"context": {"choices": ["none", "duration"]}}}}, name, "pitch")
    with pytest.raises(ConfigError, match="with context='duration'"):
        check_model(name, 88, "cpu", space.variants(name))


def test_the_original_space_and_crossval_name_what_the_user_gave():
    with pytest.raises(ConfigError, match=r"learning_rate_range must stay above 0 .* got \(0, 0.01\)"):
        cl.HyperparameterSearchSpace(learning_rate_range=(0, 0.01))
    out = subprocess.run([PYTHON, "-m", "chromasonic_lib.crossval", "--dataset", "synthetic", "--folds", "2",
                          "--model", "markov", "--per-note", "x.txt"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "error: --per-note must be a .csv or .parquet file" in out.stderr


def test_a_trial_s_checkpoint_error_is_its_own_upload_s_not_its_neighbours():
    """Trial 2's upload works while trial 1's keeps failing beside it: trial 2 records nothing, though
    the chore's failing table names trial 1's error again the moment trial 2 reads it."""
    import logging

    from chromasonic_lib.search.housekeeping import CHORES, upload_weights
    attrs: dict[int, dict] = {1: {}, 2: {}}

    class Trial:
        def __init__(self, number):
            self.number = number

        def set_user_attr(self, key, value):
            attrs[self.number][key] = value

    def fails():
        raise OSError(28, "No space left on device")

    class AnotherFailureMeanwhile(logging.Handler):
        def emit(self, record):     # trial 2's upload recovered the chore; trial 1's fails again
            if "working again" in record.getMessage():
                self.close()
                logger.removeHandler(self)
                upload_weights(Trial(1), fails)

    logger = logging.getLogger("chromasonic_lib.search.housekeeping")
    CHORES.failing.clear()
    upload_weights(Trial(1), fails)
    logger.addHandler(AnotherFailureMeanwhile())
    level, logger.level = logger.level, logging.INFO
    try:
        upload_weights(Trial(2), lambda: None)
    finally:
        logger.setLevel(level)
        CHORES.failing.clear()
    assert attrs[1]["checkpoint_error"].startswith("OSError: No space left on device") and attrs[2] == {}


def test_a_search_can_leave_out_every_copy_of_another_collection_s_tunes(tmp_path):
    """exclude_copies_of: the searched melodies lose every copy of a tune of the named
    collection, the study records it, and train_best loads the same melodies."""
    from chromasonic_lib.data import load_data, load_dataset
    from chromasonic_lib.config import DataConfig
    folder = tmp_path / "mine"
    folder.mkdir()
    tunes = _melodies(12, 3)
    for i, tune in enumerate(tunes):                     # 12 tunes, each also transposed up a tone
        for shift, name in ((0, "a"), (2, "b")):
            path = folder / f"{name}{i}.mid"
            path.write_bytes(cl.generate.notes_to_midi_bytes(_notes(tune, shift)))
    other = tmp_path / "other"
    other.mkdir()
    for i in range(4):                                   # copies of the first 4 tunes, transposed
        (other / f"o{i}.mid").write_bytes(cl.generate.notes_to_midi_bytes(_notes(tunes[i], 5)))
    d = DataConfig(dataset=str(folder), exclude_copies_of=str(other))
    data = load_data(d)
    assert len(load_dataset(str(folder)).melodies) == 24 and len(data.melodies) == 16
    assert f"8 copies of tunes of {other} left out" in data.describe()
    with pytest.raises(ConfigError, match="exclude_copies_of must be another collection"):
        DataConfig(dataset=str(folder), exclude_copies_of=str(folder))


def _notes(tune, shift):
    import numpy as np
    from chromasonic_lib.data.encodings import LOWEST_MIDI, Notes
    return Notes(np.array([t + shift + LOWEST_MIDI for t in tune], np.int16), np.ones(len(tune), np.float32))


def test_a_class_of_one_s_own_is_shown_by_its_path_in_the_project_not_the_machine_s():
    from chromasonic_lib.imports import canonical, shown
    full = canonical("examples/my_models.py:SimpleRNN")
    assert full.startswith("/") and shown(full) == "examples/my_models.py:SimpleRNN"
    assert shown("/somewhere/else/mine.py:Net") == "mine.py:Net" and shown("lstm") == "lstm"
    # The analysis' table of the best trials too (the model column a reader sees).
    from chromasonic_lib import analysis
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=2.0, user_attrs={"config": {"model": full, "epochs": 3}}))
    assert analysis.top_trials(study)["model"].tolist() == ["examples/my_models.py:SimpleRNN"]
