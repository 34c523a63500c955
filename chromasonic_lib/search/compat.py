"""The original Chromasonic script's API, kept so its users feel at home; it runs the same search as the notebook."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..config import TrainConfig, check_float, check_int
from ..data import from_token_lists
from ..errors import ConfigError
from ..models import MODELS, MarkovModel, RecurrentModel, TransformerModel, family, is_own, own
from ..training import pick_device
from .config import SearchConfig


@dataclass
class HyperparameterSearchSpace:
    """The original script's six hyperparameters (ranges are inclusive; learning rate on a log scale)."""

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
        if self.learning_rate_range[0] <= 0:
            raise ConfigError(f"learning_rate_range must stay above 0 (it is searched on a log scale), "
                              f"got {tuple(self.learning_rate_range)!r}")
        if not self.batch_size_options:
            raise ConfigError("batch_size_options must be a non-empty list, got []")
        self.num_epochs = check_int("num_epochs", self.num_epochs)

    def to_space(self, model: str | None = None) -> dict[str, Any]:
        """The same structure as a YAML file in ``params/spaces/``; for a model of one's own
        (``model``), the model ranges its constructor takes, under its name (the others are
        left out, and the log says so once)."""
        rng = lambda kind, r, **kw: {"type": kind, "low": r[0], "high": r[1], **kw}
        recurrent = {"embedding_dim": rng("int", self.embedding_dim_range),
                     "hidden_size": rng("int", self.hidden_size_range),
                     "num_layers": rng("int", self.num_layers_range),
                     "dropout": rng("float", self.dropout_range)}
        training = {"learning_rate": rng("float", self.learning_rate_range, log=True),
                    "batch_size": {"type": "categorical", "choices": list(self.batch_size_options)}}
        if model is not None and is_own(model):
            takes = family(model).model_params
            left_out = [n for n in recurrent if n not in takes]
            if left_out:
                own.log_once(f"{model}: its constructor takes no {', '.join(left_out)}, so "
                             f"HyperparameterSearchSpace's {' and '.join(n + '_range' for n in left_out)} "
                             f"{'is' if len(left_out) == 1 else 'are'} left out of the search")
            return {"training": training, "models": {model: {n: r for n, r in recurrent.items() if n in takes}}}
        return {"training": training,
                "models": {"rnn": recurrent, "lstm": recurrent, "gru": recurrent,
                           "transformer": {"num_layers": rng("int", self.num_layers_range),
                                           "dropout": rng("float", self.dropout_range)},
                           "markov": {}}}


class HyperparameterOptimizer:
    """``HyperparameterOptimizer(model_class, search_space).optimize(train_data, val_data)``.

    ``model_class`` is a model class of one's own (any ``nn.Module`` whose constructor takes
    ``vocab_size`` and keyword hyperparameters, see ``models.own``), its import path
    (``package.module:Class``, ``file.py:Class``), a model name (``lstm``, ``gru``, ``rnn``,
    ``transformer``, ``markov``) or one of our model classes. The data are lists of token
    lists (0..vocab_size-1), 2-D arrays or tensors padded with ``pad_id``, or Datasets of
    melodies. ``train_step``: a function ``(model, batch, optimizer, params) -> loss`` that
    computes the loss and calls ``backward`` itself (see ``training.train``).
    """

    def __init__(self, model_class: Any = "lstm", search_space: HyperparameterSearchSpace | None = None,
                 device: str = "auto", output_dir: str = "runs/optimizer",
                 storage: str = "memory", sampler: str = "tpe", pruner: str = "median", seed: int = 42,
                 train_step: Any = None):
        self.model = _model_name(model_class)
        self.train_step = own.function_name(train_step) if train_step is not None else ""
        self.search_space = search_space or HyperparameterSearchSpace()
        self.device, self.output_dir, self.storage = device, output_dir, storage
        self.sampler, self.pruner, self.seed = sampler, pruner, seed

    def optimize(self, train_data: Any, val_data: Any, vocab_size: int = 88, n_trials: int = 20,
                 timeout: float | None = None, study_name: str = "melody-search",
                 transpose: int | None = None, pad_id: int | None = None) -> dict[str, Any]:
        """Search on the caller's melodies: ``train_data`` to train, ``val_data`` to score.

        Returns the original script's dict (``best_params``, ``best_value``, ``n_trials``, ``total_time``,
        ``trial_results``) and ``model_params``: the best trial's hyperparameters of the model
        class itself, so ``model_class(vocab_size=vocab_size, **result["model_params"])`` builds it.

        ``vocab_size`` 88 means the piano keys; the models predict ``vocab_size`` tokens.
        ``transpose``: random transposition of the training melodies by up to ± that many
        token steps (0 = off). None: the training default (±6 semitones) for the piano keys,
        none for any other vocabulary, whose token ids need not be pitches.
        """
        from . import run_search
        check_int("vocab_size", vocab_size, 2)
        space = self.search_space.to_space(self.model)
        if transpose is not None:       # checked as training checks it
            space["training"]["transpose"] = TrainConfig(transpose=transpose).transpose
        # dataset="synthetic" only passes the config's checks: the data are the caller's, and
        # the study records them as such (below), never as synthetic, and gets no floor.
        cfg = SearchConfig(study_name=study_name, storage=self.storage, output_dir=self.output_dir,
                           dataset="synthetic", model=self.model, search_space=space,
                           n_trials=n_trials, timeout=check_float("timeout", timeout or 0),
                           epochs=self.search_space.num_epochs, sampler=self.sampler,
                           pruner=self.pruner, seed=self.seed, device=self.device,
                           train_step=self.train_step)
        data = from_token_lists(train_data, val_data, vocab_size, pick_device(self.device),
                                None if transpose is None else transpose > 0, pad_id)
        for config in (cfg, cfg.data):
            config.dataset, config.encoding = data.data.source, data.data.encoding.name
        result = run_search(cfg, data).as_dict()
        takes = family(self.model).model_params
        result["model_params"] = {k: v for k, v in result["best_params"].items() if k in takes}
        return result


def _model_name(model_class: Any) -> str:
    """Our family's name, or the import path of a class of one's own (checked: a Module class)."""
    if isinstance(model_class, str) and model_class.lower() in MODELS:
        return model_class.lower()
    names = {MarkovModel: "markov", TransformerModel: "transformer", RecurrentModel: "lstm"}
    if isinstance(model_class, type) and model_class in names:
        return names[model_class]
    if isinstance(model_class, type) or is_own(model_class):
        try:
            return family(model_class).name
        except ConfigError as e:
            raise ConfigError(f"model_class: {e}") from None
    raise ConfigError(f"model_class must be a torch.nn.Module class, its import path "
                      f"('package.module:Class' or 'file.py:Class') or one of {', '.join(MODELS)}; "
                      f"got {model_class!r}")
