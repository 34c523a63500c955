"""Train the winner: the best configuration of a study, trained, tested, saved and played.

What ``train_best.ipynb`` runs (the original script's ``--mode train_best``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import generate
from .atomic import write_json
from .config import (check_model, DataConfig, TrainBestConfig, TrainConfig, check_context,
                     check_param_file, check_settings_keys, check_writable_dir)
from .data import MelodySet, Prepared, load_data, prepare
from .data.encodings import N_KEYS, REST, Notes, midi_name
from .errors import ConfigError
from .imports import label, shown
from .models import MODELS, build_model, check_model as dry_run, split_params
from .pretraining import also_train_on, describe_also_train_on, pretrained, start_from
from .plots import history_curves_figure, save_figure
from .checkpoints import save_checkpoint
from .search import markov_baseline
from .surprise import surprise, write_table
from .search.objectives import measure_costs, pick_trial
from .search.results import trial_config
from .search.settings import model_source, stored_settings
from .search.study import load_existing_study
from .training import History, Metrics, evaluate, pick_device, train_ensemble
from .transposition import TranspositionAverage

log = logging.getLogger(__name__)


@dataclass
class BestConfiguration:
    """What ``train_best`` trains: a trial's parameters, on the data and for the epochs its study
    searched them with (unless the user gave others)."""

    params: dict[str, Any]              # the flat parameter dict: model, its hyperparameters, training
    data: DataConfig
    epochs: int
    study_name: str | None = None       # None: the parameters came from a best_params file
    trial: int | None = None            # the study's best trial
    # test_transpose, pretrain, pretrain_epochs, also_train_on: given, or the best_params file's
    # (a crossval params file's), or none (TrainBestConfig.extras).
    extras: dict[str, Any] = field(default_factory=lambda: dict(TrainBestConfig.FROM_FILE))

    def describe(self) -> str:
        d, x = self.data, self.extras
        source = f"trial {self.trial} of study {self.study_name!r}" if self.study_name else "best_params file"
        melodies = f" ({d.n_sequences} melodies × {d.sequence_length} notes)" if d.dataset == "synthetic" else ""
        more = (f"; first trained on {x['pretrain']} for at most {x['pretrain_epochs']} epochs"
                if x["pretrain"] else "")
        more += f"; also trains on {x['also_train_on']}" if x["also_train_on"] else ""
        more += f"; scored over transpositions ±{x['test_transpose']}" if x["test_transpose"] else ""
        more += f"; an ensemble of {x['ensemble']}" if x.get("ensemble", 1) > 1 else ""
        more += "; exactly those epochs, none held out (val_fraction 0)" if x.get("val_fraction") == 0 else ""
        return (f"{shown(self.params.get('model'))} from {source}; data {d.dataset}{melodies}, {d.encoding} "
                f"encoding, split val {d.val_fraction:g} / test {d.test_fraction:g} with seed "
                f"{d.seed}; at most {self.epochs} epochs{more}")


def best_configuration(cfg: TrainBestConfig) -> BestConfiguration:
    """The parameters from ``best_params`` if given, else the study's best trial; with the data
    and epochs that ``cfg`` gives or, for a study, the study was searched with.

    ``best_params`` is a search's ``best_hyperparameters.json`` or a crossval params file
    (``params/crossval*.yaml``), whose ``epochs``, ``test_transpose``, ``pretrain``,
    ``pretrain_epochs`` and ``also_train_on`` apply where ``cfg`` does not give them.
    """
    if cfg.best_params:
        params = check_param_file("best_params", cfg.best_params)
        if "model" not in params:
            raise ConfigError(f"best_params: {cfg.best_params} must name a model ({', '.join(MODELS)}, or "
                              f"'package.module:Class') under 'model', as a search's "
                              f"best_hyperparameters.json and params/crossval*.yaml do")
        params["model"] = check_model(f"best_params: {cfg.best_params}: model", params["model"])
        check_settings_keys("best_params", cfg.best_params, params, params["model"], "train_best",
                            FILE_SETTINGS)
        settings = _file_settings(params)
        data, epochs = cfg.resolve_data(None, file=settings)
        return BestConfiguration(params, data, epochs,
                                 extras=cfg.extras(settings, data.dataset, params["model"]))
    study = load_existing_study(cfg.storage, cfg.study_name)
    try:
        trial = pick_trial(study, cfg.pick)
    except ValueError:
        raise ConfigError(f"study_name {cfg.study_name!r} has no completed trial yet") from None
    params = trial_config(trial)
    # A cross-validated trial's config also says how it trained (epochs, test_transpose, ...).
    settings = _file_settings(params)
    stored = stored_settings(study)
    searched, now = stored.get("model_source"), model_source(params.get("model"))
    if searched and searched != now:
        log.warning("the source of %s changed since study %r searched it (hash %s there, %s now): "
                    "the class trained now is the edited one", shown(params.get("model")),
                    study.study_name, searched, now)
    data, epochs = cfg.resolve_data(stored, study.study_name, settings)
    return BestConfiguration(params, data, epochs, study.study_name, trial.number,
                             cfg.extras(settings, data.dataset, params.get("model")))


# What a params file or a cross-validated trial's config may say beside the model's and its
# training's parameters: how crossval trains and scores it.
FILE_SETTINGS = (*TrainBestConfig.FROM_FILE, "epochs", "val_fraction")


def _file_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The settings of ``FILE_SETTINGS`` taken out of ``params``."""
    return {k: params.pop(k) for k in FILE_SETTINGS if k in params}


@dataclass
class TrainedRun:
    family: str
    hparams: dict[str, Any]
    training: dict[str, Any]
    model: torch.nn.Module              # an Ensemble with TrainBestConfig.ensemble > 1
    history: History                    # the first (or only) model's
    data: Prepared
    test: Metrics
    baseline: Metrics
    output_dir: Path
    configuration: BestConfiguration
    histories: list[History]            # one per model of the ensemble
    # Every test note's probability, IC and entropy (surprise.note_table); test_notes.csv.
    test_notes: pd.DataFrame | None = None
    baseline_notes: pd.DataFrame | None = None      # the same under the markov baseline

    @property
    def name(self) -> str:
        """The model's name for titles and legends (a class of one's own: its class name)."""
        return label(self.family)

    def metrics_table(self) -> pd.DataFrame:
        rows = {f"{self.name} (best configuration)": self.test.as_dict(),
                "markov baseline": self.baseline.as_dict()}
        return pd.DataFrame(rows).T[["nats_per_note", "bits_per_note", "accuracy", "perplexity", "n_notes"]]


def train_best(cfg: TrainBestConfig, best: BestConfiguration) -> TrainedRun:
    """Train ``best`` on the training split, stop early on validation, score on test; save it all.

    Trained as the search trained its trials (``TrainConfig`` with the study's epochs and seed,
    plus the trial's training parameters), on the same split, so the test melodies are ones
    the search never saw. With ``cfg.ensemble`` N, N models are trained with seeds seed,
    seed+1, … and scored (and sampled) as the average of their probabilities; with
    ``test_transpose`` K (``best.extras``), as the average over the melody moved by -K..K
    semitones. With ``pretrain`` the model starts from weights learned on another collection;
    with ``also_train_on`` it trains on another collection's melodies beside the training
    split's; of either, every melody that is a copy of a tune of the data set (test melodies
    included) is left out first, as crossval does (``pretraining``). With both ``pretrain``
    and an ensemble, every member starts from the same pretrained weights and differs by its
    training seed (order of the batches, dropout) only. Early stopping and the scores stay on
    the data set's own splits; the markov baseline counts its training split.
    """
    params = dict(best.params)
    family = check_model("best_params: model", params.pop("model", None))
    hparams, training = split_params(family, params)
    unknown = set(training) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"best_params: unknown parameter {sorted(unknown)[0]!r} for {family}")
    d = best.data
    if "context" in hparams:            # the features must be ones this encoding gives
        hparams["context"] = check_context("best_params: context", hparams["context"], family, d.encoding)
    out = check_writable_dir("output_dir", cfg.output_path)
    device = pick_device(cfg.device)
    data = prepare(load_data(d),
                   d.val_fraction, d.test_fraction, d.seed, device)
    log.info(data.describe())
    dry_run(family, data.vocab_size, device, [hparams])      # a model of one's own: checked before training
    settings = best.extras
    state, pretraining = pretrained(settings["pretrain"], settings["pretrain_epochs"], family,
                                    (hparams, training), data.data, device, d.seed)
    pool, extra_idx, also = also_train_on(settings["also_train_on"], data.data)
    if also:
        log.info(describe_also_train_on(also, data.data))
    fit = pool.tensor(data.splits.index["train"] + extra_idx, device) if extra_idx else data.train
    # The search's recipe: run_search's TrainConfig(epochs, seed) plus the trial's training params.
    train_cfg = TrainConfig(epochs=best.epochs, seed=d.seed, **training)
    # val_fraction 0 (a crossval file's): exactly the epochs, the last weights, as its folds trained.
    model, histories = train_ensemble(
        lambda j: start_from(build_model(family, hparams, data.vocab_size, seed=train_cfg.seed + j), state),
        fit, None if settings["val_fraction"] == 0 else data.val, train_cfg, settings["ensemble"])
    if settings["test_transpose"]:
        model = TranspositionAverage(model, settings["test_transpose"])
    history = histories[0]
    test = evaluate(model, data.test)
    markov = markov_baseline(data)[2]
    baseline = evaluate(markov, data.test)
    test_notes = surprise(model, data.data, data.splits.index["test"], cfg.device)
    baseline_notes = surprise(markov, data.data, data.splits.index["test"], cfg.device)
    write_table(test_notes, out / "test_notes.csv")
    log.info("test: %.4f nats/note (%.3f bits), accuracy %.3f; markov baseline %.4f",
             test.nats_per_note, test.bits_per_note, test.accuracy, baseline.nats_per_note)
    save_checkpoint(out / "model.pt", model, family, hparams, d.encoding,
                    {"training": training, "dataset": d.dataset, "test_nats_per_note": test.nats_per_note})
    synthetic = d.dataset == "synthetic"
    write_json(out / "best_hyperparameters.json", best.params)     # what was trained: the pick
    costs = measure_costs(model)
    write_json(out / "test_metrics.json", {
        "model": family, "params": {**hparams, **training},
        "study_name": best.study_name, "trial": best.trial, "dataset": d.dataset,
        "n_sequences": d.n_sequences if synthetic else None,
        "sequence_length": d.sequence_length if synthetic else None, "encoding": d.encoding,
        "seed": d.seed, "val_fraction": d.val_fraction, "test_fraction": d.test_fraction,
        "n_test_melodies": len(data.splits.test), "epochs": best.epochs, "ensemble": settings["ensemble"],
        "test_transpose": settings["test_transpose"], "pretrain": pretraining or None,
        "also_train_on": also or None,
        "test": test.as_dict(), "markov_baseline": baseline.as_dict(), **costs,
        # Of each model of an ensemble.
        "epochs_trained": history.epochs_trained if len(histories) == 1 else [h.epochs_trained for h in histories],
        "best_epoch": history.best_epoch if len(histories) == 1 else [h.best_epoch for h in histories],
        "audio": generate.audio_source()})
    save_figure(history_curves_figure(history.train_loss, history.val_loss, f"{label(family)}: learning curves"),
                out / "learning_curves.png")
    return TrainedRun(family, hparams, training, model, history, data, test, baseline, out, best,
                      histories, test_notes, baseline_notes)


@dataclass
class Sample:
    tokens: list[int]
    notes: Notes
    midi: Path
    wav: Path
    name: str
    audio: str          # what rendered the WAV: generate.audio_source()
    rhythm: str = ""    # a context model's: whose rhythm the melody was written in
    temperature: float = 1.0

    def describe(self) -> str:
        keys = self.notes.pitches[self.notes.pitches >= 0]
        span = f"{midi_name(int(keys.min()))}–{midi_name(int(keys.max()))}" if len(keys) else "no notes"
        rhythm = f" in the {self.rhythm}" if self.rhythm else ""
        return (f"{self.name}: {len(keys)} notes, range {span}{rhythm}, temperature "
                f"{self.temperature:g}; {self.midi.name}, "
                f"{self.wav.name} rendered by {self.audio}")

    def piano_roll(self, ax=None):
        return generate.piano_roll_figure(self.notes, self.name, ax)


def generate_samples(run: TrainedRun, cfg: TrainBestConfig, n: int | None = None, length: int | None = None,
                     temperature: float | None = None, primer: list[int] | Notes | None = None,
                     seed: int | None = None) -> list[Sample]:
    """Generate melodies, each saved as MIDI and WAV in ``output_dir``.

    ``primer``: MIDI numbers, or a melody's notes with their context (a parsed score's).
    A model that reads context writes in a real rhythm (see :func:`sample_in_rhythm`).
    """
    n = cfg.n_samples if n is None else n
    length = length or cfg.sample_length
    temperature = temperature or cfg.temperature
    primer = cfg.primer_notes if primer is None else primer
    if isinstance(primer, Notes) and (primer.context is None or (primer.pitches == REST).all()):
        primer = primer.pitches[primer.pitches != REST].tolist()     # no rhythm: its pitches only
    enc = run.data.data.encoding
    gen = torch.Generator().manual_seed(run.configuration.data.seed if seed is None else seed)
    openings = [int(m[0]) for m in run.data.splits.train]
    audio = generate.audio_source()
    samples = []
    for i in range(n):
        rhythm = ""
        if getattr(run.model, "context", ()):
            tokens, notes, rhythm = sample_in_rhythm(run, primer, length, temperature, cfg.top_k, gen)
        else:
            start = _primer_tokens(enc, primer) or \
                [openings[int(torch.randint(len(openings), (1,), generator=gen))]]
            tokens = generate.sample(run.model, start, max(length, len(start)), temperature, cfg.top_k, gen)
            notes = enc.decode(tokens)
        name = f"sample_{i + 1}"
        samples.append(Sample(tokens, notes, generate.write_midi(run.output_dir / f"{name}.mid", notes),
                              generate.write_wav(run.output_dir / f"{name}.wav", notes), name, audio,
                              rhythm, temperature))
    return samples


def _primer_tokens(enc, primer: list[int] | Notes) -> list[int]:
    return enc.encode(primer).tolist() if isinstance(primer, Notes) else generate.primer_tokens(enc, primer)


def sample_in_rhythm(run: TrainedRun, primer: list[int] | Notes, length: int, temperature: float,
                     top_k: int, generator: torch.Generator) -> tuple[list[int], Notes, str]:
    """A melody from a model that reads context, in a real melody's rhythm: (tokens, notes, whose).

    A primer melody (notes with context) is the opening and its rhythm goes on, repeated, for
    ``length`` tokens. Otherwise the rhythm is a training melody's, drawn at random (seeded)
    among those longer than the primer; the melody is as long as that one (its phrases and its
    ending are real), at most ``length`` tokens, and opens with its first note where there is
    no primer. Its key moves to fit primer pitches that are not in it: the model is told the
    key and writes pitches in it. The notes take the rhythm's durations (pitch encoding; the
    grid's tokens write their own).
    """
    data, enc = run.data.data, run.data.data.encoding
    start = _primer_tokens(enc, primer)
    # The grid's tokens hold their durations (so it gives no duration context): there the
    # melody takes only the bars and key.
    what = "rhythm" if "duration" in enc.context_features else "bars and key"
    if isinstance(primer, Notes):
        copies = -(-max(length, len(start)) // len(start))
        rhythm = generate.repeat_rhythm(primer, copies)
        about = f"{what} of the primer melody" + (f", {copies} times over" if copies > 1 else "")
    else:
        longer = [k for k in run.data.splits.index["train"] if len(data.melodies[k]) > len(start)]
        if not longer:
            raise ConfigError(f"primer: {len(start)} tokens, and no training melody is longer to "
                              f"give the notes after them a rhythm; give a shorter primer")
        k = longer[int(torch.randint(len(longer), (1,), generator=generator))]
        rhythm = data.notes[k]
        shift = generate.key_shift(primer, int(rhythm.context.keys[rhythm.pitches != REST][0]))
        rhythm = generate.move_key(rhythm, shift)
        start = start or data.melodies[k][:1].tolist()
        about = f"{what} of melody {k} of {data.source} (a training melody)" + \
            (f", its key moved {shift:+d} semitones to hold the primer" if shift else "")
    tokens = generate.sample(run.model, start, max(length, len(start)), temperature, top_k, generator,
                             context=generate.rhythm_context(run.model, enc, rhythm))
    return tokens, enc.decode(tokens, rhythm), about


def sample_notes(run: TrainedRun, samples: list[Sample]) -> pd.DataFrame:
    """The per-note table (``surprise``) of generated melodies under the model that wrote them:
    the IC profile of what it wrote, to set against ``run.test_notes``'. A context model's
    melodies are scored with the rhythm they were written in (their notes carry it)."""
    enc = run.data.data.encoding
    melodies = MelodySet("generated", enc, [np.asarray(s.tokens, np.int64) for s in samples],
                         notes=[s.notes for s in samples], ids=[s.name for s in samples])
    return surprise(run.model, melodies, device=str(run.data.train.tokens.device))


def _pitches_and_intervals(melodies: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    keys = [m[m < N_KEYS].astype(int) for m in melodies]
    pitches = np.concatenate(keys) + 21 if keys else np.zeros(0, int)
    intervals = np.concatenate([np.diff(k) for k in keys]) if keys else np.zeros(0, int)
    return pitches, intervals


def melody_statistics(melodies: list[np.ndarray]) -> dict[str, float]:
    """Pitch range and interval statistics: a musical sanity check of generated melodies."""
    p, iv = _pitches_and_intervals(melodies)
    return {"notes": len(p), "lowest": midi_name(int(p.min())) if len(p) else "-",
            "highest": midi_name(int(p.max())) if len(p) else "-",
            "mean pitch (MIDI)": float(p.mean()) if len(p) else math.nan,
            "mean |interval| (semitones)": float(np.abs(iv).mean()) if len(iv) else math.nan,
            "repeated notes (%)": 100 * float((iv == 0).mean()) if len(iv) else math.nan,
            "steps ≤ 2 semitones (%)": 100 * float((np.abs(iv) <= 2).mean()) if len(iv) else math.nan,
            "leaps > 7 semitones (%)": 100 * float((np.abs(iv) > 7).mean()) if len(iv) else math.nan}


def statistics_table(run: TrainedRun, samples: list[Sample]) -> pd.DataFrame:
    return pd.DataFrame({"training melodies": melody_statistics(run.data.splits.train),
                         "generated": melody_statistics([np.array(s.tokens) for s in samples])})


def comparison_figure(run: TrainedRun, samples: list[Sample]):
    """Pitch and interval distributions: generated against the training melodies."""
    import matplotlib.pyplot as plt
    real_p, real_iv = _pitches_and_intervals(run.data.splits.train)
    gen_p, gen_iv = _pitches_and_intervals([np.array(s.tokens) for s in samples])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    lo, hi = int(min(real_p.min(), gen_p.min(initial=200))), int(max(real_p.max(), gen_p.max(initial=0)))
    bins = np.arange(lo - 0.5, hi + 1.5)
    a.hist(real_p, bins=bins, density=True, alpha=0.5, label="training")
    a.hist(gen_p, bins=bins, density=True, alpha=0.5, label="generated")
    a.set_xlabel("pitch (MIDI)")
    a.set_title("Pitches")
    a.legend()
    ibins = np.arange(-12.5, 13.5)
    b.hist(np.clip(real_iv, -12, 12), bins=ibins, density=True, alpha=0.5, label="training")
    b.hist(np.clip(gen_iv, -12, 12), bins=ibins, density=True, alpha=0.5, label="generated")
    b.set_xlabel("interval (semitones, clipped to ±12)")
    b.set_title("Intervals between consecutive notes")
    b.legend()
    fig.tight_layout()
    fig.savefig(run.output_dir / "generated_vs_real.png", dpi=100)   # kept open: the notebook shows it
    return fig
