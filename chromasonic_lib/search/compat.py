"""The seed system's API, kept so its users feel at home; it runs the same search as the notebook."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..config import TrainConfig, check_float, check_int
from ..data import from_token_lists
from ..errors import ConfigError
from ..models import MODELS, MarkovModel, RecurrentModel, TransformerModel
from ..training import pick_device
from .config import SearchConfig


@dataclass
class HyperparameterSearchSpace:
    """The seed's six hyperparameters (ranges are inclusive; learning rate on a log scale)."""

    learning_rate_range: Sequence[float] = (1e-5, 1e-2)
    batch_size_options: Sequence[int] = (16, 32, 64, 128)
    hidden_size_range: Sequence[int] = (64, 512)
    num_layers_range: Sequence[int] = (1, 4)
    dropout_range: Sequence[float] = (0.0, 0.5)
    embedding_dim_range: Sequence[int] = (32, 256)
    num_epochs: int = 15

    def __post_init__(self) -> None:
        for name in ("learning_rate_range", "hidden_size_range", "num_layers_range",
                     "dropout_range", "embedding_dim_range"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or len(value) != 2 or value[0] > value[1]:
                raise ConfigError(f"{name} must be a (low, high) pair with low ≤ high, got {value!r}")
        if not self.batch_size_options:
            raise ConfigError("batch_size_options must be a non-empty list, got []")
        self.num_epochs = check_int("num_epochs", self.num_epochs)

    def to_space(self) -> dict[str, Any]:
        """The same structure as a YAML file in ``params/spaces/``."""
        rng = lambda kind, r, **kw: {"type": kind, "low": r[0], "high": r[1], **kw}
        recurrent = {"embedding_dim": rng("int", self.embedding_dim_range),
                     "hidden_size": rng("int", self.hidden_size_range),
                     "num_layers": rng("int", self.num_layers_range),
                     "dropout": rng("float", self.dropout_range)}
        return {"training": {"learning_rate": rng("float", self.learning_rate_range, log=True),
                             "batch_size": {"type": "categorical",
                                            "choices": list(self.batch_size_options)}},
                "models": {"rnn": recurrent, "lstm": recurrent, "gru": recurrent,
                           "transformer": {"num_layers": rng("int", self.num_layers_range),
                                           "dropout": rng("float", self.dropout_range)},
                           "markov": {}}}


class HyperparameterOptimizer:
    """``HyperparameterOptimizer(model_class, search_space).optimize(train_data, val_data)``.

    ``model_class`` is a model name (``lstm``, ``gru``, ``rnn``, ``transformer``, ``markov``)
    or one of our model classes; the data are lists of token lists (0..vocab_size-1).
    """

    def __init__(self, model_class: Any = "lstm", search_space: HyperparameterSearchSpace | None = None,
                 device: str = "auto", output_dir: str = "runs/optimizer",
                 storage: str = "memory", sampler: str = "tpe", pruner: str = "median", seed: int = 42):
        self.model = _model_name(model_class)
        self.search_space = search_space or HyperparameterSearchSpace()
        self.device, self.output_dir, self.storage = device, output_dir, storage
        self.sampler, self.pruner, self.seed = sampler, pruner, seed

    def optimize(self, train_data: list, val_data: list, vocab_size: int = 88, n_trials: int = 20,
                 timeout: float | None = None, study_name: str = "melody-search",
                 transpose: int | None = None) -> dict[str, Any]:
        """Search on the caller's melodies: ``train_data`` to train, ``val_data`` to score.

        ``vocab_size`` 88 means the piano keys; the models predict ``vocab_size`` tokens.
        ``transpose``: random transposition of the training melodies by up to ± that many
        token steps (0 = off). None: the training default (±6 semitones) for the piano keys,
        none for any other vocabulary, whose token ids need not be pitches.
        """
        from . import run_search
        check_int("vocab_size", vocab_size, 2)
        space = self.search_space.to_space()
        if transpose is not None:       # checked as training checks it
            space["training"]["transpose"] = TrainConfig(transpose=transpose).transpose
        # dataset="synthetic" only passes the config's checks: the data are the caller's, and
        # the study records them as such (below), never as synthetic, and gets no floor.
        cfg = SearchConfig(study_name=study_name, storage=self.storage, output_dir=self.output_dir,
                           dataset="synthetic", model=self.model, search_space=space,
                           n_trials=n_trials, timeout=check_float("timeout", timeout or 0),
                           epochs=self.search_space.num_epochs, sampler=self.sampler,
                           pruner=self.pruner, seed=self.seed, device=self.device)
        data = from_token_lists(train_data, val_data, vocab_size, pick_device(self.device),
                                None if transpose is None else transpose > 0)
        for config in (cfg, cfg.data):
            config.dataset, config.encoding = data.data.source, data.data.encoding.name
        return run_search(cfg, data).as_dict()


def _model_name(model_class: Any) -> str:
    if isinstance(model_class, str):
        if model_class.lower() in MODELS:
            return model_class.lower()
    else:
        names = {MarkovModel: "markov", TransformerModel: "transformer", RecurrentModel: "lstm"}
        if model_class in names:
            return names[model_class]
    raise ConfigError(f"model_class must be one of {', '.join(MODELS)} or a chromasonic_lib "
                      f"model class, got {model_class!r}")
