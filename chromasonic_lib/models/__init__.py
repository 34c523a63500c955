"""The melody models and their one registry: ``build_model(name, hparams, vocab_size)``.

Every model maps tokens [batch, time] to logits [batch, time, vocab]. The input is a start
token (id ``vocab_size``, one past the notes) followed by the melody's notes 0..T-2, so the
output at step t predicts note t from notes 0..t-1 only, the first note from the start token
alone (teacher forcing over the whole melody in one forward pass; IDyOM scores every note
too). Models know a vocabulary size, never an encoding or a corpus.

For sampling, every model also reads a melody one token at a time: ``state = model.start(B)``,
then ``out, state = model.step(state, tokens)`` for tokens [B] (the start token first) gives
[B, vocab] equal to what ``forward`` gives at that position, at a cost that does not grow with
the melody (the recurrent state, the transformer's keys and values, the markov model's last
notes, the memory's counts so far). States are the model's own, possibly updated in place;
stepping is for eval mode (no dropout).

A neural model may also read musical context (hyperparameter ``context``: feature names of
``data.context``): ``forward(x, context)`` with ``context`` a dict of [batch, time] feature
ids of the note each step predicts (``step`` takes [batch] ids), each embedded and added to the
token embedding. What a feature means stays in the data; the model only knows how many values
each has. The pitch alone is predicted, as without context.

The modules: ``markov`` (the count model), ``neural`` (recurrent, transformer, context
embeddings), ``memory`` (the melody memory), ``ensemble`` (wrappers and ensembles). This one
holds the registry, :data:`FAMILIES`, and :func:`family`, which everything that names a family
asks: it also understands a model of one's own (``package.module:Class`` or ``file.py:Class``,
see ``own``), made into a family on demand, its defaults read from the constructor.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..data.context import context_names
from ..errors import ConfigError
from .ensemble import Ensemble, Wrapper, _forward, _step  # noqa: F401  (re-exported)
from .markov import MarkovModel
from .memory import MEMORY_DEFAULTS, RHYTHM, MelodyMemory, MemoryState, remember  # noqa: F401
from .neural import ContextEmbedding, RecurrentModel, ScaleDegrees, TransformerModel  # noqa: F401
from .own import OwnModel, import_class, is_own, name_of
from . import own

# What a model's input and output mean (see the module docstring), recorded in checkpoints and
# studies so that models or losses of two protocols never mix. 2: a start token, every note
# predicted; 1 (older checkpoints and studies): no start token, the first note never predicted.
PROTOCOL = 2


@dataclass(frozen=True)
class Family:
    """A model family: its name, its class and its hyperparameters with their defaults (the
    class's own, plus the melody memory's, which every family can add). Every hyperparameter
    is one a search space may tune (``searchable``)."""

    name: str
    cls: type[nn.Module]
    defaults: dict[str, Any]
    fixed: dict[str, Any] = field(default_factory=dict)     # constructor arguments no search changes
    source_hash: str = ""       # a model of one's own: its class's source, so an edit is seen

    @property
    def searchable(self) -> tuple[str, ...]:
        return tuple(self.defaults)

    @property
    def own(self) -> bool:
        return self.cls is OwnModel

    @property
    def user_class(self) -> type[nn.Module]:
        """The class whose constructor takes the model's hyperparameters (a user's, or ours)."""
        return self.fixed.get("cls", self.cls)

    @property
    def model_params(self) -> tuple[str, ...]:
        """The hyperparameters the class's own constructor takes (not the memory's, not context)."""
        if not self.own:
            return self.searchable
        return tuple(n for n in self.defaults if n not in MEMORY_DEFAULTS and n != "context")


def _family(name: str, cls: type[nn.Module], **fixed: Any) -> Family:
    return Family(name, cls, {**cls.DEFAULTS, **MEMORY_DEFAULTS}, fixed)


# The registry, in the order the families are listed to a user.
FAMILIES: dict[str, Family] = {f.name: f for f in (
    _family("markov", MarkovModel), *(_family(cell, RecurrentModel, cell=cell) for cell in RecurrentModel.CELLS),
    _family("transformer", TransformerModel))}
MODELS: tuple[str, ...] = tuple(FAMILIES)
# Each family's hyperparameters and defaults (what build_model and a checkpoint fill in).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {name: dict(f.defaults) for name, f in FAMILIES.items()}


def family(name: Any) -> Family:
    """The family ``name`` names: one of ours (``lstm``), or a model of one's own by its import
    path (``package.module:Class``, ``path/to/file.py:Class``) or its class. A :class:`ConfigError`
    names what is wrong: an unknown name, a class that can't be imported or isn't a Module."""
    if isinstance(name, type):
        name = name_of(name)
    if isinstance(name, str) and name in FAMILIES:
        return FAMILIES[name]
    if not is_own(name):
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, or a model class of one's own "
                          f"as 'package.module:Class' or 'path/to/file.py:Class'; got {name!r}")
    name = own.canonical(name)
    # Keyed by the class too: a class defined again (a notebook cell run anew) is a new family.
    return _own_family(name, import_class(name))


@functools.lru_cache(maxsize=None)
def _own_family(name: str, cls: type[nn.Module]) -> Family:
    import dataclasses

    from ..config.training import TrainConfig       # late: the config package reads the registry
    from ..folds import PROTOCOL_SETTINGS
    own.RESERVED.update(f.name for f in dataclasses.fields(TrainConfig))
    own.RESERVED.update(PROTOCOL_SETTINGS, MEMORY_DEFAULTS)
    defaults = own.constructor_defaults(cls, name)
    if own.reads_context(cls):
        defaults["context"] = ()
    return Family(name, OwnModel, {**defaults, **MEMORY_DEFAULTS}, {"cls": cls, "name": name},
                  own.source_hash(cls))


def family_name(name: Any) -> str:
    """The name a study, a checkpoint and a params file record for ``name`` (checked)."""
    return family(name).name


def _check_hparams(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    fam = family(name)
    name = fam.name
    allowed = fam.defaults
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ConfigError(f"{unknown[0]} is not a hyperparameter of {name}; allowed: "
                          f"{', '.join(allowed)}")
    out = {**allowed, **hparams}
    for key, value in out.items():
        if fam.own and key not in MEMORY_DEFAULTS and key != "context":
            own.check_value(name, key, value, allowed[key])     # its constructor's rules, not ours
            continue
        if key == "dropout":
            ok = isinstance(value, (int, float)) and 0 <= value < 1
            what = "a number in [0, 1)"
        elif key == "memory_rhythm":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            what = "a number ≥ 0 (0: no rhythm-linked memory)"
        elif key in ("alpha", "memory_alpha"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            what = "a positive number"
        elif key == "memory_order":
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 8
            what = "an integer from 0 (no memory) to 8"
        elif key == "context":
            out[key] = context_names(value, f"context of {name}")      # raises, naming the features
            continue
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            what = "a positive integer"
        if not ok:
            raise ConfigError(f"{key} of {name} must be {what}, got {value!r}")
    if name == "transformer" and out["d_model"] % out["nhead"]:
        raise ConfigError(f"d_model of transformer must be divisible by nhead, got "
                          f"d_model={out['d_model']}, nhead={out['nhead']}")
    if name == "markov" and out["order"] > 5:
        raise ConfigError(f"order of markov must be at most 5, got {out['order']}")
    return out


def full_hparams(name: str, hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    """``hparams`` over the family's defaults, checked: what a checkpoint records, so that a
    default changed later never changes what an old checkpoint rebuilds."""
    return _check_hparams(name, dict(hparams or {}))


def build_model(name: str, hparams: dict[str, Any] | None = None, vocab_size: int = 88,
                seed: int | None = None) -> nn.Module:
    """The model ``name`` (markov, rnn, lstm, gru, transformer, or a class of one's own:
    ``package.module:Class``, ``file.py:Class``) with ``hparams`` over the defaults.

    With ``seed`` the initial weights are reproducible (same seed, same weights). A neural
    family's ``context`` (a list, or names joined by ``+``) names the context features it reads.
    """
    hp = full_hparams(name, hparams)
    if seed is not None:
        torch.manual_seed(seed)
    memory_order, memory_alpha, rhythm = hp.pop("memory_order"), hp.pop("memory_alpha"), hp.pop("memory_rhythm")
    fam = family(name)
    model = fam.cls(vocab_size, **fam.fixed, **hp)
    if rhythm and not (memory_order and set(RHYTHM) & set(getattr(model, "context", ()))):
        raise ConfigError(f"memory_rhythm needs the melody memory (memory_order ≥ 1) and a model that "
                          f"reads at least one of the context features {', '.join(RHYTHM)}")
    return MelodyMemory(model, memory_order, memory_alpha, rhythm) if memory_order else model


def check_model(name: Any, vocab_size: int, device: Any = "cpu",
                variants: list[dict[str, Any]] | None = None) -> None:
    """The dry run of a model of one's own (nothing for ours): built with each of ``variants``
    (hyperparameters over its defaults; default: the defaults alone) and a tiny batch run
    through it on ``device``. A model that fails, gives logits of the wrong shape or NaN, or
    sees later notes is a :class:`ConfigError` here, before any trial (see ``own.dry_run``)."""
    fam = family(name)
    if not fam.own:
        return

    def build(hparams: dict[str, Any]) -> nn.Module:
        hp = {k: v for k, v in full_hparams(fam.name, hparams).items() if k not in MEMORY_DEFAULTS}
        return fam.cls(vocab_size, **fam.fixed, **hp)
    from ..data.context import CONTEXT_FEATURES
    own.dry_run(fam.name, build, variants or [{}], vocab_size, torch.device(device), CONTEXT_FEATURES)


def split_params(name: str, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a flat parameter dict into (model hyperparameters, everything else)."""
    names = family(name).defaults
    return ({k: v for k, v in params.items() if k in names},
            {k: v for k, v in params.items() if k not in names})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
