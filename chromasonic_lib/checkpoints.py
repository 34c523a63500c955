"""Model checkpoints: saved and loaded as weights only, and every completed trial's checkpoint
kept in Optuna's artifact store, so any machine that reaches the store can load it.

A folder (local, or a shared file system) is Optuna's ``FileSystemArtifactStore``;
``s3://bucket/prefix`` is its ``Boto3ArtifactStore``. The store a study uses is recorded on
the study (user attribute ``artifact_store``), so readers find it without being told.
"""
from __future__ import annotations

import bisect
import contextlib
import io
import json
import logging
import tempfile
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import optuna
import torch
from filelock import FileLock
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from .atomic import atomic_write
from .optuna_private import study_id
from .errors import ConfigError
from .models import PROTOCOL, Ensemble, build_model, full_hparams
from .models import family as model_family
from .transposition import TranspositionAverage
from .paths import resolve, resolve_storage_url

log = logging.getLogger(__name__)

FILENAME = "checkpoint.pt"          # the artifact's name on each trial


def save_checkpoint(path: Path, model: torch.nn.Module, family: str, hparams: dict,
                    encoding: str, extra: dict | None = None) -> Path:
    """Weights with everything needed to rebuild them; loadable with ``weights_only=True``.

    An :class:`~chromasonic_lib.models.Ensemble` is saved as its members (``ensemble``: how
    many), each of ``family`` with ``hparams``; a :class:`~chromasonic_lib.transposition.
    TranspositionAverage` as the model it averages (``test_transpose``: its semitones).
    """
    semitones = 0
    if isinstance(model, TranspositionAverage):
        semitones, model = model.semitones, model.base
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    members = len(model.members) if isinstance(model, Ensemble) else 1
    # Every hyperparameter, defaults included: a default changed later never changes this model.
    hparams = full_hparams(family, hparams)
    if "context" in hparams:
        hparams["context"] = list(hparams["context"])
    fam = model_family(family)
    where = {"class": fam.name, "source_hash": fam.source_hash} if fam.own else {}
    if fam.own:
        hparams = _storable(fam, hparams)
    payload = {"family": fam.name, **where, "hparams": hparams, "encoding": encoding,
               "vocab_size": model.vocab_size, "protocol": PROTOCOL, "ensemble": members,
               "test_transpose": semitones, "state_dict": state, **(extra or {})}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(source: str | Path | optuna.Study, trial_number: int | None = None,
                    device="cpu", artifact_store: str = "") -> tuple[torch.nn.Module, dict]:
    """The model of a checkpoint and its metadata (never unpickles arbitrary objects).

    ``source`` is a checkpoint file, or a study: then trial ``trial_number`` (default: the
    best trial) is fetched from the study's artifact store (or ``artifact_store``).
    """
    if isinstance(source, optuna.Study):
        with tempfile.TemporaryDirectory() as tmp:
            path = fetch_trial_checkpoint(source, trial_number, Path(tmp) / FILENAME, artifact_store)
            return load_checkpoint(path, device=device)
    payload = torch.load(source, map_location=device, weights_only=True)
    protocol = payload.get("protocol", 1)
    if protocol != PROTOCOL:
        raise ConfigError(f"checkpoint {source} was saved by an older chromasonic-lab (protocol "
                          f"{protocol}: no start token, the first note never predicted); this one "
                          f"reads protocol {PROTOCOL}. Train the model again (train_best, or a new "
                          f"search)")
    _check_source(payload, source)
    members = [build_model(payload["family"], payload["hparams"], payload["vocab_size"])
               for _ in range(payload.get("ensemble", 1))]
    model = members[0] if len(members) == 1 else Ensemble(members)
    model.load_state_dict(payload["state_dict"])
    if payload.get("test_transpose"):
        model = TranspositionAverage(model, payload["test_transpose"])
    return model.to(device).eval(), payload


def _plain(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool, type(None))) or \
        isinstance(value, (list, tuple)) and all(map(_plain, value))


def _storable(fam, hparams: dict) -> dict:
    """The hyperparameters a weights-only checkpoint can hold: a default that is a class or a
    function (``activation=nn.ReLU``) is left out, and rebuilt from the constructor's default."""
    out = {}
    for key, value in hparams.items():
        if _plain(value):
            out[key] = value
        elif value is not fam.defaults.get(key):
            raise ConfigError(f"{key}={value!r} of {fam.name} can't be kept in a checkpoint (numbers, "
                              f"strings, bools, None and lists of them can): make it the "
                              f"constructor's default, or give it as a name the constructor maps")
    return out


def _check_source(payload: dict, source: Any) -> None:
    """A model of one's own: its class imported (or a :class:`ConfigError` naming the path and
    the import error), and a warning where its source changed since the weights were saved."""
    if "class" not in payload:
        return
    try:
        fam = model_family(payload["class"])
    except ConfigError as e:
        raise ConfigError(f"checkpoint {source} holds weights of {payload['class']}, which can't be "
                          f"loaded here: {e}") from None
    if payload.get("source_hash") and fam.source_hash != payload["source_hash"]:
        log.warning("checkpoint %s was saved from another version of %s (source hash %s, now %s): "
                    "its weights load only if the layers kept their names and shapes", source,
                    payload["class"], payload["source_hash"], fam.source_hash)


# ---------------------------------------------------------------- the artifact store
class _PrefixedStore:
    """An artifact store whose ids live under a key prefix (``s3://bucket/prefix``)."""

    def __init__(self, store: Any, prefix: str):
        self.store, self.prefix = store, prefix.strip("/") + "/"

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.store.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.store.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(self.prefix + artifact_id)


def default_artifact_location(storage_url: str, output_dir: Path) -> str:
    """Beside a SQLite or journal file: ``<its folder>/artifacts``; for an in-memory study,
    ``<output_dir>/artifacts``; for a database server (or its gRPC proxy), ``runs/artifacts``."""
    url = resolve_storage_url(storage_url)
    for scheme in ("sqlite:///", "journal:"):
        if url.startswith(scheme) and url != "sqlite:///:memory:":
            return str(Path(url[len(scheme):]).parent / "artifacts")
    if not url.startswith(("postgresql", "mysql", "grpc")):
        return str(output_dir / "artifacts")
    log.info("checkpoints go to runs/artifacts on this machine: workers on other machines "
             "need a shared folder or s3://bucket/prefix as artifact_store")
    return str(resolve("runs/artifacts"))


def open_artifact_store(location: str) -> Any:
    """A folder path (created) or ``s3://bucket[/prefix]`` (needs boto3 and AWS credentials)."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://"):].partition("/")
        try:
            from optuna.artifacts import Boto3ArtifactStore
            store = Boto3ArtifactStore(bucket)
        except ImportError as e:
            raise ConfigError(f"artifact_store {location!r} needs boto3 ({e}); "
                              f"pip install boto3") from None
        return _PrefixedStore(store, prefix) if prefix else store
    path = resolve(location)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"artifact_store: cannot create folder {str(path)!r}: "
                          f"{e.strerror or e}") from None
    return FileSystemArtifactStore(path)


def probe_artifact_store(store: Any, location: str) -> None:
    """Write a small object to the store, read it back and remove it: a store that can't take
    one (a full disk, a missing or forbidden bucket) stops a search before any training, not
    after every trial has trained."""
    artifact = f"chromasonic-probe-{uuid.uuid4().hex}"
    body = b"chromasonic-lab artifact store probe\n" * 64
    step = "write"
    try:
        store.write(artifact, io.BytesIO(body))
        step = "read back"
        with store.open_reader(artifact) as reader:
            if reader.read() != body:
                raise OSError("the object read back differs from the one written")
        step = "remove"
        store.remove(artifact)
    except Exception as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip() or type(e).__name__
        raise ConfigError(f"artifact_store {location!r} can't keep checkpoints: a small test "
                          f"object failed to {step}: {type(e).__name__}: {reason}") from None


def study_store_location(study_name: str, given: str, recorded: str | None, default: str) -> str:
    """Where a worker of study ``study_name`` keeps checkpoints: the store the study recorded
    when it was created (``recorded``; None for a new study), else ``given``, else ``default``.
    A worker that names another store than the study's stops: its trials' weights would be
    where no other worker, ``best_model.pt`` or ``load_checkpoint`` looks."""
    if not recorded:
        return given or default
    if given and not _same_location(given, recorded):
        raise ConfigError(f"artifact_store {given!r} is not the store study {study_name!r} "
                          f"recorded when it was created, {recorded!r}; allowed: leave "
                          f"artifact_store out (the study's is used), or give {recorded!r}")
    return recorded


def _same_location(a: str, b: str) -> bool:
    if a.startswith("s3://") or b.startswith("s3://"):
        return a.rstrip("/") == b.rstrip("/")
    return resolve(a) == resolve(b)


def _study_store(study: optuna.Study, location: str = "") -> tuple[Any, str]:
    """The artifact store to read ``study``'s checkpoints from, and where that is."""
    location = location or study.user_attrs.get("artifact_store", "")
    if not location:
        raise ConfigError(f"study {study.study_name!r} records no artifact store: it was searched "
                          f"before trials kept their checkpoints; pass artifact_store")
    return open_artifact_store(location), location


def study_artifact_store(study: optuna.Study, location: str = "") -> Any:
    return _study_store(study, location)[0]


# ---------------------------------------------------------------- trial checkpoints
def upload_trial_checkpoint(trial: optuna.Trial, store: Any, model: torch.nn.Module, family: str,
                            hparams: dict, encoding: str, extra: dict) -> str:
    """Store the trial's weights as its artifact ``checkpoint.pt``; returns the artifact id."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / FILENAME, model, family, hparams, encoding,
                               {**_identity(trial.study, trial.number, trial.datetime_start), **extra})
        return optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path),
                                                study_or_trial=trial)


def checkpoint_id(trial: FrozenTrial) -> str | None:
    """The artifact id of a trial's checkpoint (the newest, if it was uploaded twice).

    Read from the trial's own system attributes, where ``upload_artifact`` links it
    (``get_all_artifact_meta`` would ask the storage again for what the trial already holds).
    """
    ids = [meta["artifact_id"] for key, meta in
           ((k, json.loads(v)) for k, v in trial.system_attrs.items() if k.startswith("artifacts:"))
           if meta.get("filename") == FILENAME]
    return ids[-1] if ids else None


def fetch_trial_checkpoint(study: optuna.Study, trial_number: int | None, path: Path,
                           artifact_store: str = "") -> Path:
    """Download trial ``trial_number``'s checkpoint (default: the best trial's) to ``path``."""
    trial = _trial(study, trial_number)
    artifact = checkpoint_id(trial)
    if artifact is None:
        raise ConfigError(f"trial {trial.number} of study {study.study_name!r} has no checkpoint "
                          f"(state {trial.state.name}: only completed trials keep one)")
    store, location = _study_store(study, artifact_store)
    try:
        with store.open_reader(artifact) as reader:
            data = reader.read()
    except ArtifactNotFound:
        whose = "given as artifact_store" if artifact_store else "the study's"
        raise ConfigError(f"trial {trial.number}'s checkpoint (artifact {artifact}) is no longer in "
                          f"the artifact store {location!r} ({whose}): only the best "
                          f"keep_checkpoints trials keep theirs; if the store is a folder of "
                          f"another machine, pass artifact_store where it can be read") from None
    return atomic_write(path, data)


def _trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    if number is None:
        try:
            return _best_trial(study)
        except ValueError:
            raise ConfigError(f"study {study.study_name!r} has no completed trial yet") from None
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise ConfigError(f"trial must be a trial number of study {study.study_name!r} "
                          f"(0–{len(trials) - 1}), got {number!r}")
    return trials[number]


def _locked(folder: Path) -> FileLock:
    """An exclusive lock on ``folder`` across processes (workers sharing an output folder);
    ``filelock`` works on Windows too, where ``fcntl`` does not exist."""
    return FileLock(folder / ".best_model.lock")


def _best_trial(study: optuna.Study) -> FrozenTrial:
    from .search.objectives import best_trial       # (the search package imports this module)
    return best_trial(study)


def sync_best_model(study: optuna.Study, store: Any, output_dir: Path) -> int | None:
    """Make ``output_dir/best_model.pt`` the weights of the study's best trial; its number.

    The best trial is read inside a lock on the folder, and the study's best only improves,
    so of two workers finishing together the later writer writes the better weights.
    """
    target = output_dir / "best_model.pt"
    with _locked(output_dir):
        best = _best_with_checkpoint(study)
        if best is None:
            return None
        if target.exists():
            with contextlib.suppress(Exception):
                held = torch.load(target, weights_only=True)
                wanted = _identity(study, best.number, best.datetime_start)
                if all(held.get(k) == v for k, v in wanted.items()):
                    return best.number
        try:
            with store.open_reader(checkpoint_id(best)) as reader:
                atomic_write(target, reader.read())
        except ArtifactNotFound:
            log.warning("trial %d's checkpoint is missing from the artifact store", best.number)
            return None
    return best.number


def _identity(study: optuna.Study, number: int, start) -> dict[str, Any]:
    """What tells one study's trial from another's in a reused folder: every study's defaults
    trial is number 0, and study ids restart with a new database (or an in-memory study), but
    a trial's start time is its own."""
    return {"study": study.study_name, "study_id": study_id(study), "trial": number,
            "trial_start": start.isoformat() if start else None}


def _best_with_checkpoint(study: optuna.Study) -> FrozenTrial | None:
    try:
        best = _best_trial(study)
    except ValueError:
        return None
    return best if checkpoint_id(best) else None


class CheckpointKeeper:
    """After every trial: keep the ``keep`` best trials' checkpoints in the store, remove the
    rest (so disk stays bounded on long studies), and keep ``best_model.pt`` current.

    Each finished trial is looked at once: values never change, and a trial pushed out of the
    best ``keep`` only falls further, so the cost per trial does not grow with the study."""

    def __init__(self, store: Any, output_dir: Path | None, keep: int):
        self.store, self.output_dir, self.keep = store, output_dir, keep
        self.best: list[FrozenTrial] = []   # the best `keep`, best first
        self.upto = 0                       # every trial numbered below this was looked at
        self.looked: set[int] = set()       # and these, finished beyond it
        self.synced: int | None = None      # the trial whose weights best_model.pt holds
        self.to_remove: list[str] = []      # checkpoints out of the best, not yet removed

    def __call__(self, study: optuna.Study, trial: FrozenTrial | None = None) -> None:
        if trial is not None and trial.state != TrialState.COMPLETE:
            return      # a pruned or failed trial has no weights and moves no one out of the best
        trials = study.get_trials(deepcopy=False)
        for t in trials[self.upto:]:
            if t.state.is_finished() and t.number not in self.looked:
                self.looked.add(t.number)
                if t.state == TrialState.COMPLETE:
                    self._rank(t)
        while self.upto < len(trials) and self.upto in self.looked:
            self.looked.discard(self.upto)
            self.upto += 1
        while self.to_remove:               # a store that failed keeps them for the next call
            with contextlib.suppress(ArtifactNotFound):     # another worker removed it first
                self.store.remove(self.to_remove[-1])
            self.to_remove.pop()
        if self.output_dir is not None and self.best and self.best[0].number != self.synced:
            self.synced = sync_best_model(study, self.store, self.output_dir)

    def _rank(self, t: FrozenTrial) -> None:
        """Place ``t`` among the best; the checkpoint of the one it pushes out is to be removed."""
        bisect.insort(self.best, t, key=lambda x: (x.values[0], x.number))   # the loss, however many objectives
        if len(self.best) > self.keep:
            artifact = checkpoint_id(self.best.pop())
            if artifact is not None:
                self.to_remove.append(artifact)
