"""A model of one's own: any ``nn.Module`` class, found by an import path, adapted to the
workbench's model protocol (start token, ``start``/``step``) without the user changing it.

The contract asked of the class: a constructor that takes ``vocab_size`` and keyword
hyperparameters (with defaults: the signature is the space of the model), and a ``forward``
whose first argument is tokens [batch, time] and which returns logits [batch, time, vocab_size],
or a tuple whose first element is those logits. Used when present, never required: a second
``forward`` argument that takes and returns a state (``(logits, hidden)``), which makes
generation linear in time, and a ``context`` keyword, which then gets the context features.

What differs from our own families lives here and only here:
- the start token: the class is built with ``vocab_size + 1`` (the start token's id is
  ``vocab_size``) and its last logit is dropped, so every note is scored, the first included,
  whatever the class does with its vocabulary;
- stepping: by the class's own state where it continues ``forward`` exactly (checked once per
  model), else by re-running ``forward`` over the melody so far;
- the dry run (:func:`dry_run`): a model that fails, gives the wrong shape, NaN, or sees later
  notes is refused before any trial.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.context import context_names
from ..errors import ConfigError
from ..imports import canonical, function_name, import_object, is_own, name_of  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# Names a hyperparameter of one's own may not have: the settings the workbench routes elsewhere
# (filled in by the registry, which knows the training settings).
RESERVED: set[str] = {"model", "seed", "epochs", "context", "vocab_size"}


def import_class(name: str) -> type[nn.Module]:
    """The model class ``name`` names, imported (a ``torch.nn.Module`` class, or a ConfigError)."""
    obj = import_object(name)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ConfigError(f"model {name!r} is not a torch.nn.Module class, got {obj!r}")
    return obj


def source_hash(cls: type) -> str:
    """A hash of the source the class is made of: the whole module of the class and of each of
    its own base classes (helpers and constants too), or, for a class typed into a notebook,
    its methods' code and defaults. It changes when any of it is edited."""
    h = hashlib.sha256()
    seen: set[str] = set()
    for c in cls.__mro__:
        module = sys.modules.get(c.__module__)
        if c.__module__.split(".")[0] in ("torch", "builtins") or c.__module__ in seen:
            continue
        seen.add(c.__module__)
        try:
            h.update(inspect.getsource(module).encode())
        except (OSError, TypeError):
            for value in vars(c).values():
                fn = getattr(value, "__func__", value)
                code = getattr(fn, "__code__", None)
                if code is not None:
                    h.update(code.co_code + repr((code.co_consts, getattr(fn, "__defaults__", None),
                                                  getattr(fn, "__kwdefaults__", None))).encode())
    return h.hexdigest()[:16]


def same_class(a: str, b: Any) -> bool:
    """Whether two import paths name one class (``examples/my_models.py:Net`` and
    ``examples.my_models:Net`` do): the same source file and qualified name."""
    if not (is_own(a) and is_own(b)):
        return False
    if canonical(a) == canonical(b):
        return True

    def where(name: str) -> tuple:
        cls = import_object(name)
        try:
            return Path(inspect.getsourcefile(cls)).resolve(), cls.__qualname__
        except (OSError, TypeError):
            return canonical(name), None
    return where(a) == where(b)


def constructor_defaults(cls: type, name: str) -> dict[str, Any]:
    """Each hyperparameter of the class's constructor with its default (``vocab_size`` aside)."""
    params = inspect.signature(cls.__init__).parameters
    if "vocab_size" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ConfigError(f"model {name}: its constructor must take vocab_size, got "
                          f"{cls.__name__}{inspect.signature(cls)}")
    defaults = {}
    for p in list(params.values())[1:]:
        if p.name == "vocab_size" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise ConfigError(f"model {name}: hyperparameter {p.name} of {cls.__name__}'s "
                              f"constructor has no default; give it one (the search and every "
                              f"path that rebuilds the model start from the defaults)")
        defaults[p.name] = p.default
    clash = sorted(set(defaults) & RESERVED)
    if clash:
        raise ConfigError(f"model {name}: hyperparameter {clash[0]} of {cls.__name__} has the name "
                          f"of a workbench setting ({', '.join(sorted(RESERVED))}); rename it in "
                          f"the constructor, so its value can't be routed to the wrong place")
    return defaults


def _forward_params(cls: type) -> list[inspect.Parameter]:
    return list(inspect.signature(cls.forward).parameters.values())[1:]


def reads_context(cls: type) -> bool:
    """Whether the class's ``forward`` takes a ``context`` keyword (the context features)."""
    return any(p.name == "context" for p in _forward_params(cls))


def check_value(name: str, key: str, value: Any, default: Any) -> None:
    """``value`` for the hyperparameter ``key`` is of its default's type (any for a None default)."""
    if default is None:
        return
    if isinstance(default, bool):
        ok, what = isinstance(value, bool), "a bool"
    elif isinstance(default, int):
        ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, what = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, what = isinstance(value, str), "a string"
    elif isinstance(default, (list, tuple)):
        ok, what = isinstance(value, (list, tuple)), "a list"
    else:
        ok, what = True, ""
    if not ok:
        raise ConfigError(f"{key} of {name} must be {what} (its default is {default!r}), got {value!r}")


class OwnModel(nn.Module):
    """A user's model as the workbench's: built with one more input id (the start token) whose
    logit is dropped, a tuple's logits taken, and ``start``/``step`` for sampling."""

    trainable = True

    def __init__(self, vocab_size: int, cls: type[nn.Module], name: str, context=(), **hparams: Any):
        super().__init__()
        self.vocab_size, self.name = vocab_size, name
        self.model = cls(vocab_size=vocab_size + 1, **hparams)
        self.context = context_names(context)
        params = _forward_params(cls)
        # A second argument besides context: perhaps a state; step checks that it continues forward.
        self._state_arg = len([p for p in params if p.name != "context"]) >= 2
        self._stateful: bool | None = None

    def raw(self, x: torch.Tensor, context: dict | None = None, state: Any = None):
        """What the class's forward gives: (logits over vocab_size + 1, its state or None)."""
        args = (x,) if state is None else (x, state)
        out = self.model(*args, context=context) if self.context else self.model(*args)
        if isinstance(out, (tuple, list)):
            return out[0], (out[1] if len(out) > 1 else None)
        return out, None

    def forward(self, x: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        return self.raw(x, context)[0][..., : self.vocab_size]

    def start(self, batch_size: int) -> dict:
        if self._stateful is None:
            self._stateful = self._state_arg and self._continues()
        return {"state": None, "tokens": None, "context": None, "stateful": self._stateful}

    def step(self, state: dict, tokens: torch.Tensor, context: dict | None = None):
        if state["stateful"]:
            logits, state["state"] = self.raw(tokens[:, None], {n: ids[:, None] for n, ids in context.items()} if context else None,
                                              state["state"])
            return logits[:, -1, : self.vocab_size], state
        # No state of its own: forward again over the melody so far (what it scores), kept as
        # one tensor that grows by a column a step.
        state["tokens"] = _grown(state["tokens"], tokens)
        if context:
            state["context"] = {n: _grown((state["context"] or {}).get(n), ids) for n, ids in context.items()}
        return self.raw(state["tokens"], state["context"])[0][:, -1, : self.vocab_size], state

    @torch.no_grad()
    def _continues(self) -> bool:
        """Whether stepping with the class's state gives the logits ``forward`` gives."""
        was = self.training
        self.eval()
        try:
            device = next(self.parameters(), torch.zeros(())).device
            # Its own generator: the check must not move the global one a sampler may be seeded by.
            gen = torch.Generator().manual_seed(0)
            x = torch.randint(0, self.vocab_size + 1, (2, 6), generator=gen).to(device)
            ctx = None
            if self.context:
                ctx = {n: torch.zeros_like(x) for n in self.context}
            whole = self.raw(x, ctx)[0]
            state, outs = None, []
            for t in range(x.shape[1]):
                step_ctx = {n: v[:, t: t + 1] for n, v in ctx.items()} if ctx else None
                out, state = self.raw(x[:, t: t + 1], step_ctx, state)
                if state is None:
                    return False
                outs.append(out[:, -1])
            ok = torch.allclose(torch.stack(outs, 1), whole, atol=1e-4, rtol=1e-4)
        except Exception as e:     # a second argument that is no state: re-run forward instead
            log.debug("%s: stepping by its state failed (%s); generation re-runs forward", self.name, e)
            ok = False
        finally:
            self.train(was)
        if not ok:
            log.info("%s: forward's second argument does not continue a melody step by step; "
                     "generation re-runs forward over each prefix", self.name)
        return ok


def _grown(so_far: torch.Tensor | None, column: torch.Tensor) -> torch.Tensor:
    return column[:, None] if so_far is None else torch.cat([so_far, column[:, None]], 1)


# ---------------------------------------------------------------- the dry run
def _sample_tokens(vocab_size: int, device, generator: torch.Generator) -> torch.Tensor:
    # A length other than the vocabulary's, so that logits [B, V, T] can't pass for [B, T, V].
    length = 7 if vocab_size + 1 != 7 else 9
    x = torch.randint(0, vocab_size, (3, length), generator=generator).to(device)
    x[:, 0] = vocab_size                 # the start token first, as in training
    return x


def _describe(hparams: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in hparams.items()) or "its defaults"


def dry_run(name: str, build, variants: list[dict[str, Any]], vocab_size: int, device,
            context_ids: dict[str, int] | None = None) -> None:
    """Build the model with each of ``variants`` (hyperparameters over the defaults) through
    ``build(hparams)`` and run a tiny batch through it on ``device``; raise a
    :class:`ConfigError` naming the class, the hyperparameters and what came back for a model
    that fails, gives logits of the wrong shape or NaN, or sees later notes."""
    gen = torch.Generator().manual_seed(0)
    for hparams in variants:
        where = f"model {name} with {_describe(hparams)}"
        try:
            model = build(hparams).to(device)
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"{where}: its constructor failed: {type(e).__name__}: {e}") from None
        x = _sample_tokens(vocab_size, device, gen)
        ctx = ({n: torch.randint(0, k, x.shape, generator=gen).to(device) for n, k in context_ids.items()
                if n in model.context} if getattr(model, "context", ()) and context_ids else None)

        def run(tokens, context=None):
            try:
                return model.raw(tokens, context)[0]
            except Exception as e:
                raise ConfigError(f"{where}: forward failed on tokens of shape {tuple(tokens.shape)} "
                                  f"on {device}: {type(e).__name__}: {e}") from None

        # Trains: a forward and a backward in train mode.
        model.train()
        out = run(x, ctx)
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"{where}: forward returned {type(out).__name__}, not logits (a tensor, "
                              f"or a tuple whose first element is the logits)")
        expected = (*x.shape, vocab_size + 1)
        if tuple(out.shape) != expected:
            raise ConfigError(
                f"{where}: forward gave logits of shape {tuple(out.shape)} for tokens of shape "
                f"{tuple(x.shape)}; expected {expected}: [batch, time, vocab_size] (the workbench "
                f"builds it with vocab_size={vocab_size + 1}: one more id, the start token)")
        if out.requires_grad:
            try:
                out.float().logsumexp(-1).mean().backward()
            except Exception as e:
                raise ConfigError(f"{where}: backward failed: {type(e).__name__}: {e}") from None
        model.eval()
        with torch.no_grad():
            full = run(x, ctx)
            if not torch.isfinite(full).all():
                raise ConfigError(f"{where}: forward gave NaN or infinite logits on a tiny batch")
            _check_causal(where, run, x, ctx, full, vocab_size, gen)


def _check_causal(where: str, run, x, ctx, full, vocab_size: int, gen) -> None:
    """Logits up to t depend on the tokens up to t of that melody alone."""
    def same(a, b):
        return torch.allclose(a, b, atol=1e-4, rtol=1e-3)

    T = x.shape[1]
    for t in (0, T // 2):
        later = x.clone()
        later[:, t + 1:] = torch.randint(0, vocab_size, (x.shape[0], T - t - 1), generator=gen).to(x.device)
        if not same(run(later, ctx)[:, : t + 1], full[:, : t + 1]):
            raise ConfigError(
                f"{where} sees later notes: its logits at step {t} changed when only the tokens "
                f"after step {t} changed (a bidirectional layer, attention without a causal mask, "
                f"pooling over time?). It would score impossibly well and generate from another "
                f"distribution than the one scored: make it causal")
        cut = {n: v[:, : t + 1] for n, v in ctx.items()} if ctx else None
        if not same(run(x[:, : t + 1], cut), full[:, : t + 1]):
            raise ConfigError(f"{where}: a melody cut short after step {t} gave other logits for the "
                              f"notes it keeps: its output must depend on the notes so far alone")
    one = {n: v[1:2] for n, v in ctx.items()} if ctx else None
    if not same(run(x[1:2], one), full[1:2]):
        raise ConfigError(f"{where}: a melody's logits changed with the other melodies of its batch "
                          f"(batch normalisation over the batch?): each must depend on its own notes alone")


@functools.lru_cache(maxsize=None)
def _logged(message: str) -> None:
    log.info(message)


def log_once(message: str) -> None:
    """Log ``message`` once a process (a space's left-out ranges are said once)."""
    _logged(message)
