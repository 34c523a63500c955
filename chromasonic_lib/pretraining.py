"""Other collections' melodies in training: ``pretrain: NAME`` (the model starts from weights
learned on them) and ``also_train_on: NAME`` (it trains on them beside its own), for crossval's
folds and for train_best.

The other collection's melodies that are copies of a tune of the collection trained and tested
on (identical, transposed or a variant: ``data.melody_groups`` over both) are left out first, so
no test melody's tune is ever trained on. Pretrained weights are kept in the cache folder, keyed
by the melodies, the configuration and the seed, so the pretraining is paid once per configuration.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import time
from pathlib import Path

import torch

from .atomic import atomic_write
from .config import TrainConfig
from .data import MelodySet, hold_out, load_dataset, not_copies
from .errors import DataError
from .models import PROTOCOL, build_model
from .models import family as model_family
from .paths import cache_dir
from .training import train

log = logging.getLogger(__name__)

# Part of every cached file's key: bump it when training changes what the same settings learn.
VERSION = 1


def pretrained(source: str, epochs: int, family: str, params: tuple[dict, dict], data: MelodySet,
               device, seed: int, limit: int = 0) -> tuple[dict | None, dict]:
    """The weights a model of ``data`` starts from, and what they were trained on (for the report).

    A ``family`` model of ``params`` (model hyperparameters, training settings) trained with
    ``seed`` for at most ``epochs`` epochs on the melodies of ``source`` (its first ``limit``
    files, 0: all), less every one that is a copy of a tune of ``data`` (identical, transposed or
    a variant: ``melody_groups`` over both collections), so no copy of a test melody's tune that
    the grouping finds is trained on; a twentieth of the rest (one melody at least) is held out
    for early stopping. (None, {}) without a ``source``.
    """
    if not source:
        return None, {}
    start = time.perf_counter()
    extra = load_dataset(source, data.encoding.name, limit=limit or None)
    keep = not_copies(data.melodies, extra.melodies)
    n_left_out = len(extra.melodies) - len(keep)
    if len(keep) < 2:
        raise DataError(f"pretrain: {source} has fewer than two melodies left once the "
                        f"{n_left_out} copies of {data.source}'s tunes are left out")
    hparams, training = params
    train_cfg = TrainConfig(epochs=epochs, seed=seed, **training)
    path = _pretrained_path(source, family, hparams, train_cfg, device, extra, keep)
    text = f"pretrained on {len(keep)} melodies of {source} ({n_left_out} left out as copies " \
           f"of {data.source}'s tunes)"
    saved = _load(path)
    if saved is not None:       # the same melodies, configuration and seed: the same weights
        print(f"{text}: the weights saved in {path}", flush=True)
        return saved["state"], {**saved["report"], "cached": str(path),
                                "seconds": round(time.perf_counter() - start, 1)}
    fit, val = hold_out(extra.melodies, keep, max(0.05, 1 / len(keep)), seed)
    model = build_model(family, hparams, data.vocab_size, seed=seed)
    history = train(model, extra.tensor(fit, device), extra.tensor(val, device), train_cfg)
    bits = history.best_val_loss / math.log(2)
    print(f"{text}: {history.epochs_trained} epochs, validation {bits:.3f} bits/note", flush=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    report = {"dataset": source, "melodies": len(keep), "left_out": n_left_out,
              "epochs": history.epochs_trained, "val_bits_per_note": bits}
    buf = io.BytesIO()
    torch.save({"state": state, "report": report}, buf)
    atomic_write(path, buf.getvalue())
    return state, {**report, "cached": None, "seconds": round(time.perf_counter() - start, 1)}


def _load(path: Path) -> dict | None:
    """The weights and report kept at ``path``; None when there are none or they are unreadable
    (then they are trained again and the file replaced)."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return saved if {"state", "report"} <= set(saved) else None
    except Exception as e:          # a truncated or foreign file: train again
        log.warning("pretrained weights %s unreadable (%s); training them again", path, e)
        return None


def _pretrained_path(source: str, family: str, hparams: dict, train_cfg: TrainConfig, device,
                     extra: MelodySet, keep: list[int]) -> Path:
    """Where the weights pretrained on these melodies (and their context), with this
    configuration (every setting, defaults included), seed and kind of device, are kept: the
    pretraining is paid once per configuration."""
    fam = model_family(family)
    # A model of one's own by its source too: weights of an edited class are never reused.
    h = hashlib.sha256(json.dumps({"model": family, "source": fam.source_hash, "hparams": {**fam.defaults, **hparams},
                                   "training": dataclasses.asdict(train_cfg), "device": device.type,
                                   "encoding": extra.encoding.name, "protocol": PROTOCOL, "version": VERSION},
                                  sort_keys=True, default=str).encode())
    for i in keep:
        h.update(len(extra.melodies[i]).to_bytes(8, "little"))
        h.update(extra.melodies[i].tobytes())
        if extra.contexts is not None:
            h.update(extra.contexts[i].tobytes())
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in source)[-40:]
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in family)[-40:]
    return cache_dir() / "pretrained" / f"{slug}-{name}-{h.hexdigest()[:16]}.pt"


def start_from(model, state: dict | None):
    """``model`` with the pretrained weights ``state`` loaded (as it is without them)."""
    if state is not None:
        model.load_state_dict(state)
    return model


def also_train_on(source: str, data: MelodySet, limit: int = 0) -> tuple[MelodySet, list[int], dict]:
    """``data`` followed by ``source``'s melodies (its first ``limit`` files, 0: all) less every
    copy of one of ``data``'s tunes (identical, transposed or a variant), where those are (what
    a model trains on beside its own melodies), and how many were kept and left out, for the
    report. (``data``, [], {}) without a ``source``."""
    if not source:
        return data, [], {}
    other = load_dataset(source, data.encoding.name, limit=limit or None)
    keep = not_copies(data.melodies, other.melodies)
    if not keep:
        raise DataError(f"also_train_on: every melody of {source} is a copy of a tune of "
                        f"{data.source} (the same collection?): nothing is left to train on")
    n = len(data.melodies)
    return data.joined(other, keep), list(range(n, n + len(keep))), \
        {"dataset": source, "melodies": len(keep), "left_out": len(other.melodies) - len(keep)}


def describe_also_train_on(report: dict, data: MelodySet) -> str:
    """What :func:`also_train_on` added, in words."""
    return (f"also trains on {report['melodies']} melodies of {report['dataset']} "
            f"({report['left_out']} left out as copies of {data.source}'s tunes)")
