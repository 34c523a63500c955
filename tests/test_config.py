"""Every bad input stops the run before any data is loaded, with a message naming the parameter."""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import papermill as pm
import pytest

import chromasonic_lib as cl
from chromasonic_lib import search as search_mod
from conftest import ROOT, run_notebook

# (parameters, text the error must contain): at least 25 bad inputs.
BAD = [
    ({"n_trials": -5}, "n_trials must be a positive integer, got -5"),
    ({"n_trials": 0}, "n_trials"),
    ({"n_trials": "five"}, "n_trials"),
    ({"n_trials": 2.5}, "n_trials"),
    ({"epochs": 0}, "epochs"),
    ({"epochs": "ten"}, "epochs"),
    ({"timeout": -1}, "timeout"),
    ({"timeout": "soon"}, "timeout"),
    ({"n_sequences": 0}, "n_sequences"),
    ({"sequence_length": 1}, "sequence_length"),
    ({"val_fraction": 0}, "val_fraction"),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction + test_fraction"),
    ({"seed": -1}, "seed"),
    ({"model": "wavenet"}, "model must be one of markov, rnn, lstm, gru, transformer, any"),
    ({"dataset": "beatles"}, "dataset"),
    ({"dataset": "essen/nowhere"}, "dataset: no Essen file"),
    ({"encoding": "abc"}, "encoding must be one of pitch, grid"),
    ({"sampler": "bayes"}, "sampler must be one of tpe, random, gp, cmaes"),
    ({"pruner": "percentile"}, "pruner must be one of auto, median, hyperband, wilcoxon, none"),
    ({"device": "tpu"}, "device must be one of"),
    ({"devices": "gpu0,gpu1"}, "devices must be auto or a comma-separated list of cpu, cuda, cuda:N, mps"),
    ({"trials_per_device": 0}, "trials_per_device must be a positive integer, got 0"),
    ({"plot": "maybe"}, "plot"),
    ({"study_name": ""}, "study_name"),
    ({"study_name": "a b/c"}, "study_name"),
    ({"storage": "redis://localhost"}, "storage must be a URL"),
    ({"heartbeat_interval": 0}, "heartbeat_interval"),
    ({"grace_period": 5, "heartbeat_interval": 10}, "grace_period"),
    ({"search_space": "params/spaces/missing.yaml"}, "search_space: file not found"),
    ({"search_space": "BAD:malformed"}, "search_space"),
    ({"search_space": "BAD:low_high"}, "low must not exceed high"),
    ({"search_space": "BAD:log_zero"}, "a log range must stay above 0"),
    ({"search_space": "BAD:empty_choices"}, "choices must be a non-empty list"),
    ({"search_space": "BAD:unknown_param"}, "colour is not a hyperparameter of lstm"),
    ({"search_space": "BAD:empty"}, "search_space"),
    ({"dataset": "EMPTY_FOLDER"}, "holds no score files"),
]

SPACES = {
    "malformed": "training: {learning_rate: [1e-3\n",
    "low_high": "models:\n  lstm:\n    hidden_size: {type: int, low: 512, high: 64}\n",
    "log_zero": "training:\n  learning_rate: {type: float, low: 0, high: 0.1, log: true}\n",
    "empty_choices": "training:\n  batch_size: {type: categorical, choices: []}\n",
    "unknown_param": "models:\n  lstm:\n    colour: {type: int, low: 1, high: 3}\n",
    "empty": "",
}


def _materialize(params: dict, tmp_path) -> dict:
    params = dict(params)
    if params.get("dataset") == "EMPTY_FOLDER":
        (tmp_path / "empty").mkdir(exist_ok=True)
        params["dataset"] = str(tmp_path / "empty")
    space = params.get("search_space", "")
    if space.startswith("BAD:"):
        path = tmp_path / f"{space[4:]}.yaml"
        path.write_text(SPACES[space[4:]])
        params["search_space"] = str(path)
    return params


def _base(tmp_path) -> dict:
    return dict(storage=f"sqlite:///{tmp_path}/s.db", output_dir=str(tmp_path / "out"), dataset="synthetic")


@pytest.mark.parametrize("params,message", BAD, ids=[str(p) for p, _ in BAD])
def test_api_rejects_bad_input_naming_the_parameter(params, message, tmp_path):
    with pytest.raises(cl.ConfigError) as err:
        cl.SearchConfig(**{**_base(tmp_path), **_materialize(params, tmp_path)})
    assert message in str(err.value)
    assert not (tmp_path / "out").exists()


def test_unreachable_database_is_reported_before_any_data_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(search_mod, "load_data", lambda *a, **k: pytest.fail("data was loaded"))
    cfg = cl.SearchConfig(**{**_base(tmp_path), "storage": "postgresql://nobody@127.0.0.1:1/none"})
    with pytest.raises(cl.ConfigError, match="storage 'postgresql://nobody@127.0.0.1:1/none' cannot be opened"):
        cl.run_search(cfg)


def test_unwritable_output_folder_is_reported_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(search_mod, "load_data", lambda *a, **k: pytest.fail("data was loaded"))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = cl.SearchConfig(**{**_base(tmp_path), "output_dir": str(blocker / "sub")})
    with pytest.raises(cl.ConfigError, match="output_dir: cannot write"):
        cl.run_search(cfg)


def test_other_tools_validate_too(tmp_path):
    with pytest.raises(cl.ConfigError, match="temperature"):
        cl.TrainBestConfig(dataset="synthetic", temperature=0)
    with pytest.raises(cl.ConfigError, match="primer"):
        cl.TrainBestConfig(dataset="synthetic", primer="C4 H7")
    with pytest.raises(cl.ConfigError, match="compare"):
        cl.AnalysisConfig(compare=[""])
    from chromasonic_lib.config import CrossvalConfig
    with pytest.raises(cl.ConfigError, match="folds"):
        CrossvalConfig(dataset="synthetic", folds=1)
    with pytest.raises(cl.ConfigError, match="params: file not found"):
        CrossvalConfig(dataset="synthetic", params="nope.yaml")


def test_crossval_refuses_a_params_file_of_another_family():
    from chromasonic_lib.config import CrossvalConfig
    with pytest.raises(cl.ConfigError, match="model 'gru' and params 'params/crossval_context.yaml' "
                                             "disagree: the file is a 'lstm' configuration"):
        CrossvalConfig(dataset="synthetic", model="gru", params="params/crossval_context.yaml")
    # Without a file named, --model alone runs that family's defaults (not the LSTM file's).
    markov = CrossvalConfig(dataset="synthetic", model="markov")
    assert (markov.params, markov.settings, markov.epochs) == ("", {}, 30)
    lstm = CrossvalConfig(dataset="synthetic")
    assert lstm.params == "params/crossval.yaml" and lstm.model == "lstm"



def test_train_best_checks_the_values_given_and_leaves_the_rest_to_the_study():
    for params, message in [({"seed": -2}, "seed must be a non-negative integer, got -2"),
                            ({"val_fraction": 1.5}, "val_fraction"), ({"dataset": "nope"}, "dataset"),
                            ({"encoding": "midi"}, "encoding"), ({"epochs": 2.5}, "epochs"),
                            # None is "not given": 0 and -1 are values, checked as any other.
                            ({"epochs": 0}, "epochs must be a positive integer, got 0"),
                            ({"seed": -1}, "seed must be a non-negative integer, got -1"),
                            ({"test_fraction": 0}, "test_fraction must be a number in"),
                            ({"pretrain_epochs": 0}, "pretrain_epochs must be a positive integer, got 0")]:
        with pytest.raises(cl.ConfigError, match=message):
            cl.TrainBestConfig(**params)
    data, epochs = cl.TrainBestConfig(seed=0, dataset="synthetic").resolve_data({"seed": 7, "epochs": 4}, "s")
    assert (data.seed, data.dataset, epochs) == (0, "synthetic", 4)
    assert cl.TrainBestConfig().epochs is None


def test_train_best_says_which_settings_an_old_study_does_not_record(caplog):
    with caplog.at_level("WARNING", logger="chromasonic_lib"):
        data, epochs = cl.TrainBestConfig(seed=5).resolve_data({"dataset": "synthetic", "epochs": 4}, "old")
    assert (data.dataset, data.seed, epochs) == ("synthetic", 5, 4)
    assert "study 'old' does not record its encoding, n_sequences, sequence_length, val_fraction, " \
           "test_fraction: using encoding 'pitch', n_sequences 100" in caplog.text
    # Another dataset than the study's: its melody counts don't carry over, nor are they missing.
    caplog.clear()
    with caplog.at_level("WARNING", logger="chromasonic_lib"):
        data, _ = cl.TrainBestConfig(dataset="synthetic").resolve_data(
            {"dataset": "chorales", "n_sequences": 100, "sequence_length": 64, "encoding": "pitch",
             "val_fraction": 0.1, "test_fraction": 0.1, "seed": 42, "epochs": 15}, "chorales-study")
    assert "dataset 'synthetic' differs from the study's 'chorales': the test scores won't compare " \
           "with the search's validation losses" in caplog.text
    assert "does not record" not in caplog.text and "n_sequences" not in caplog.text


def test_train_best_needs_a_test_split_the_study_may_not_have():
    settings = {"dataset": "synthetic", "encoding": "pitch", "n_sequences": 30, "sequence_length": 20,
                "val_fraction": 0.1, "test_fraction": 0.0, "seed": 42, "epochs": 3}
    with pytest.raises(cl.ConfigError, match="searched with test_fraction 0"):
        cl.TrainBestConfig().resolve_data(settings, "no-test")
    data, _ = cl.TrainBestConfig(test_fraction=0.1).resolve_data(settings, "no-test")
    assert data.test_fraction == 0.1


# The same table through the notebook, the way a researcher runs it: papermill -p name value.
NOTEBOOK_CASES = BAD


def _config_cells(notebook, params: dict) -> list[str]:
    """The code of ``notebook`` (the search notebook, as papermill loads it) up to its config
    cell, with ``params`` injected by papermill (as ``papermill -p`` does): the parameters cell,
    papermill's injected cell, the imports and the config check."""
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(copy.deepcopy(notebook), params, kernel_name="python3")  # it edits nb
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    return code[:next(i for i, src in enumerate(code) if "SearchConfig.from_namespace" in src) + 1]


@pytest.mark.slow
def test_search_notebook_stops_at_the_config_cell_with_the_parameter_named(tmp_path):
    """Every case of the table in one kernel, each from a cleared namespace, through the
    notebook's own cells with papermill's injection (one kernel start instead of one per case);
    two cases run whole through papermill, as a researcher's run does."""
    from jupyter_client.manager import start_new_kernel
    from papermill.iorw import load_notebook_node

    notebook = load_notebook_node(str(ROOT / "notebooks" / "search.ipynb"))
    cases = []
    for i, (params, message) in enumerate(NOTEBOOK_CASES):
        case = tmp_path / f"case{i}"
        case.mkdir()
        cases.append(({**_base(case), **_materialize(params, case)}, message, case))
    assert len(cases) >= 25
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(ROOT))
    try:
        for params, message, case in cases:
            kc.execute_interactive("%reset -f", timeout=60)
            for source in _config_cells(notebook, params):
                reply = kc.execute_interactive(source, timeout=120)["content"]
                if reply["status"] == "error":
                    break
            assert reply["status"] == "error", (params, "the config cell passed")
            assert reply["ename"] == "ConfigError" and message in reply["evalue"], (params, reply["evalue"])
            assert not (case / "out").exists()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    def papermill(i):
        params, message, case = cases[i]
        with pytest.raises(pm.PapermillExecutionError) as err:
            run_notebook("search", case / "run.ipynb", **params)
        assert err.value.ename == "ConfigError" and message in err.value.evalue
        assert not (case / "out" / "optimization_results.json").exists()

    with ThreadPoolExecutor(2) as pool:     # a number and a file, the whole notebook each
        list(pool.map(papermill, [0, next(i for i, (p, _) in enumerate(NOTEBOOK_CASES)
                                          if p.get("search_space") == "BAD:low_high")]))


def test_the_search_starts_from_trainconfigs_defaults():
    """One source: the family-defaults trial trains with TrainConfig's settings."""
    space = cl.SearchConfig(dataset="synthetic", model="lstm").space
    (first,) = space.default_trials()
    defaults = cl.TrainConfig()
    assert first["learning_rate"] == defaults.learning_rate == 1e-2
    assert first["weight_decay"] == defaults.weight_decay == 1e-4
    assert first["batch_size"] == defaults.batch_size and first["transpose"] == defaults.transpose


@pytest.mark.parametrize("config,injected,message", [
    (cl.SearchConfig, "n_trial = 50", r"not a parameter of this notebook \(SearchConfig\): n_trial: did you mean n_trials\?"),
    (cl.AnalysisConfig, "wach = True", r"wach: did you mean watch\?"),
    (cl.TrainBestConfig, "n_trials = 1\nepoch = 3", r"these are not parameters .*n_trials: no parameter is close; "
                                                     r"epoch: did you mean epochs\? \(the parameters: study_name"),
])
def test_a_parameter_the_notebook_does_not_declare_is_refused_with_the_nearest(config, injected, message):
    """What papermill injected (-p, or a -f file's keys) is read from the cell it added."""
    namespace = {"In": ["", "study_name: str = 'x'", f"# Parameters\n{injected}\n"], "storage": "memory"}
    with pytest.raises(cl.ConfigError, match=message):
        config.from_namespace(namespace)
    namespace["In"][2] = "# Parameters\nstudy_name = 'y'\n"
    assert config.from_namespace({**namespace, "study_name": "y"}).study_name == "y"
