"""The one door to a study's storage: every call waits out a transient outage (a database
restart or failover, a dropped connection, a stalled journal lock) for up to ``storage_patience``
seconds, so that no caller needs a retry loop of its own.

Beyond the patience the call raises :class:`StorageUnreachable`, which names the (masked)
storage. Optuna's ``_run_trial`` may then hide it behind an ``UnboundLocalError`` of its own
(it reads the storage again after a failed tell); :func:`storage_error_in` finds ours in the
chain either way, so nothing here depends on that bug being fixed.
"""
from __future__ import annotations

import abc
import copy
import errno
import logging
import re
import time
import uuid
from typing import Any, Callable

import sqlalchemy

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState, create_trial
from ..optuna_private import STALE_TRIAL_IDS, BaseHeartbeat, CachedStorage, backend_of, trial_id

log = logging.getLogger(__name__)

# Exception classes, by name, that mean "the server is away", whichever driver raised them:
# SQLAlchemy's and the DBAPI drivers' (psycopg, psycopg2, PyMySQL, sqlite3 "database is
# locked"), redis's, and Python's own (an OSError of a refused, reset or timed-out connection
# is a ConnectionError or a TimeoutError). Optuna's proxy names its database's error by one of
# them too (see _away). gRPC's own errors are told by status code below.
_TRANSIENT_NAMES = ("OperationalError", "InterfaceError", "DisconnectionError", "ConnectionError",
                    "TimeoutError", "BusyLoadingError")
# gRPC status codes (grpc.StatusCode names) that mean the storage proxy is away or overloaded
# for now: restarting (a proxy that stops cancels the calls it was serving), unreachable, out of
# threads. Its other codes are answers (NOT_FOUND...). No call of ours is cancelled by us.
_TRANSIENT_GRPC = {"UNAVAILABLE", "CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
# An OSError with one of these is a network file system or a lock that stalls, not a bad path.
_TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ESTALE, errno.EHOSTUNREACH,
                     errno.ENETUNREACH}
# What a server or file says when it is there and refuses (a read-only file or transaction, a
# full disk, no permission): an OperationalError too, but no wait makes it go away, so it is
# reported at once, not waited out for the whole patience as "unreachable". SQLite's words,
# PostgreSQL's (and their SQLSTATEs: 25006 read-only transaction, 53100 disk full, 42501
# insufficient privilege), MySQL's.
_REFUSED = re.compile(r"readonly database|read-only|disk is full|no space left on device|"
                      r"could not extend file|permission denied|unable to open database file|"
                      r"insufficient privilege|access denied|\b(?:25006|53100|42501)\b", re.IGNORECASE)
# Writes a finished trial makes on its way to its tell (its metrics, its checkpoint's link):
# beyond the patience they are held, so that the trial is saved whole (see faults.optimize)
# and its tell, when the storage is back, writes them first.
_HELD = ("set_trial_user_attr", "set_trial_system_attr")
# A trial's system attribute: the token of the call that created it (see create_new_trial).
CREATED = "chromasonic:created_by"


def fail_with_reason(storage: BaseStorage, trial: int, reason: str) -> bool:
    """Mark the trial with id ``trial`` (another worker's, or one nobody runs) FAIL, saying why
    in its user attribute ``fail_reason``; False when it had finished first (or another worker
    failed it first)."""
    try:
        # The reason first: a finished trial takes no more attributes.
        storage.set_trial_user_attr(trial, "fail_reason", reason)
        return bool(storage.set_trial_state_values(trial, TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


class StorageRefused(RuntimeError):
    """The storage is there and refuses the call (read-only, full, no permission): not an
    outage, so it is not waited out."""

    def __init__(self, storage: str, method: str, cause: BaseException):
        super().__init__(f"storage {storage!r} refused {method}: {type(cause).__name__}: "
                         f"{describe(cause)[:300]} (a read-only file or database, a full disk or "
                         f"no permission: not an outage, so it is not waited out)")


class StorageUnreachable(RuntimeError):
    """The storage stayed unreachable for longer than ``storage_patience``."""

    def __init__(self, storage: str, patience: float, cause: BaseException):
        self.storage, self.patience = storage, patience
        super().__init__(f"storage {storage!r} unreachable for longer than storage_patience "
                         f"({patience:.0f} s): {type(cause).__name__}: {describe(cause)}")


def _grpc_status(e: BaseException) -> tuple[str, str] | None:
    """A ``grpc.RpcError``'s status name and details (the storage proxy's client raises them);
    None for any other error."""
    if not callable(getattr(e, "code", None)) or not any(c.__name__ == "RpcError" for c in type(e).__mro__):
        return None
    return getattr(e.code(), "name", str(e.code())), e.details() or ""


def describe(e: BaseException) -> str:
    """The first line of an error; an OSError's words and file ("No space left on device
    (/runs/x)"), without its errno; a gRPC error's status and details (its first line says
    only "<_InactiveRpcError of RPC that terminated with:"); for an error with no words of its
    own (SQLAlchemy's InvalidatePoolError reads "()"), the error behind it."""
    status, text = _grpc_status(e), str(e).strip()
    behind = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    if not text.strip("()[]', ") and behind is not None and behind is not e:
        return describe(behind)         # no words of its own ("()"): the error it was raised for
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f" ({e.filename})" if e.filename else "")
    return ": ".join(status) if status else text.splitlines()[0] if text else type(e).__name__


def chain(e: BaseException | None):
    """``e`` and the errors behind it, each once."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _away(e: BaseException) -> bool:
    """Whether ``e`` itself says the storage is away for now. A gRPC status says so by its
    name, or, from Optuna's proxy (UNKNOWN, "Exception calling application: ..."), by naming
    its database's error or our patience spent there."""
    status = _grpc_status(e)
    if status is not None:
        return status[0] in _TRANSIENT_GRPC or status[0] == "UNKNOWN" and any(
            words in status[1] for words in (*_TRANSIENT_NAMES, "longer than storage_patience"))
    return any(c.__name__ in _TRANSIENT_NAMES for c in type(e).__mro__) or \
        getattr(e, "connection_invalidated", False) or (isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS)


def transient_cause(e: BaseException) -> BaseException | None:
    """The error behind ``e`` (Optuna wraps the driver's) that says the storage is away for
    now, rather than that the request was wrong; None if there is none, or if our patience
    was spent below us already. The deepest says it best ("connection refused")."""
    found = None
    for x in chain(e):
        if isinstance(x, StorageUnreachable):
            return None
        found = x if _away(x) else found
    return found


def storage_error_in(e: BaseException) -> StorageUnreachable | None:
    """The :class:`StorageUnreachable` behind ``e``, if the storage is why it was raised."""
    return next((x for x in chain(e) if isinstance(x, StorageUnreachable)), None)


class RetryingStorage(BaseStorage, BaseHeartbeat):
    """An Optuna storage that retries the transient errors of the storage it wraps.

    Parameters
    ----------
    inner : BaseStorage
        The storage (for an RDB URL: Optuna's ``_CachedStorage`` around its ``RDBStorage``,
        as ``optuna.create_study`` would have wrapped it).
    name : str
        The storage URL as logs may show it (password masked).
    patience : float
        Seconds one call may wait for the storage to come back, over all its attempts.
    """

    def __init__(self, inner: BaseStorage, name: str, patience: float = 600,
                 sleep: Callable[[float], None] = time.sleep):
        self.inner, self.name, self.patience, self._sleep = inner, name, patience, sleep
        # Set when a call ran out of patience: later calls try once, so that Optuna's
        # clean-up after a failed tell doesn't wait the whole patience again for each read.
        self.gave_up: StorageUnreachable | None = None
        # trial id -> {(method, key): value}: attribute writes that found the storage gone.
        # No lock: trials beside each other touch only their own entries; a trial's heartbeat
        # thread (through the gRPC proxy, a held write too) may race its tell, and a beat held
        # then is dropped with the entry, which costs nothing (the trial is told).
        self.held: dict[int, dict[tuple[str, str], Any]] = {}
        # Errors the database driver raised, Optuna's own retries included (a failed commit
        # of a trial's creation is retried inside Optuna's RDB storage, unseen by us).
        self.engine_errors = 0
        self.keep_tokens = False        # True behind the gRPC proxy: the client's token stands
        engine = getattr(backend_of(inner), "engine", None)
        if engine is not None:
            sqlalchemy.event.listen(engine, "handle_error", self._count_error)

    def _count_error(self, context: Any) -> None:
        self.engine_errors += 1

    def __getattr__(self, name: str) -> Any:
        # Anything else the wrapped storage has (RDBStorage.url and .engine behind Optuna's
        # cache, say), read through.
        if name == "inner":
            raise AttributeError(name)
        backend = backend_of(self.inner)
        return getattr(self.inner if backend is None or hasattr(self.inner, name) else backend, name)

    def call(self, method: str | Callable, *args, read_back: Callable[[], Any] | None = None, **kwargs) -> Any:
        """``inner.method(*args, **kwargs)``, retried with backoff while the storage is away
        (``method`` may also be a function of ours, retried alike).

        A write that is not safe to repeat passes ``read_back``: before each retry it looks for
        what the earlier attempt may have written (its reply lost after the commit), and its
        answer, when not None, is the call's."""
        fn, name = (getattr(self.inner, method), method) if isinstance(method, str) else (method, method.__name__)
        start, attempt, delay = time.monotonic(), 0, 0.5
        while True:
            try:
                found = read_back() if attempt and read_back is not None else None
                if found is not None:
                    log.info("%s: the attempt whose reply was lost had been written; not repeated", name)
                    return found
                result = fn(*args, **kwargs)
            except Exception as e:
                waited, cause = time.monotonic() - start, transient_cause(e)
                refused = next((x for x in chain(e) if _REFUSED.search(str(x))), None)
                if refused is not None:
                    raise StorageRefused(self.name, name, refused) from e
                if cause is None:
                    raise
                if waited >= self.patience or self.gave_up is not None:
                    self.gave_up = StorageUnreachable(self.name, self.patience, cause)
                    if method not in _HELD:
                        raise self.gave_up from cause
                    self._hold(method, *args, **kwargs)
                    return None
                attempt += 1
                log.warning("storage unreachable, retrying (attempt %d, waited %.0f s of %.0f s "
                            "patience): %s in %s: %s", attempt, waited, self.patience,
                            type(cause).__name__, name, describe(cause)[:200])
                self._sleep(min(delay, max(0.0, self.patience - waited)))
                delay = min(delay * 2, 15.0)
                continue
            self.gave_up = None
            if attempt:
                log.info("storage reachable again after %.0f s (%s)", time.monotonic() - start, name)
            return result

    def _hold(self, method: str, trial_id: int, key: str, value: Any) -> None:
        if trial_id not in self.held:
            log.warning("storage %r away beyond its patience: trial attributes are held for the "
                        "trial's tell (and saved with it if the tell fails too)", self.name)
        self.held.setdefault(trial_id, {})[(method, key)] = value

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        """Write the attributes held for the trial, then its state. A retry that finds the
        trial finished as asked takes it as its own write (its commit landed before the
        connection dropped); anything else finished is a real refusal."""
        def set_trial_state_values() -> bool:
            for (method, key), value in list(self.held.get(trial_id, {}).items()):
                getattr(self.inner, method)(trial_id, key, value)     # safe to repeat on a retry
            self.held.pop(trial_id, None)
            return self.inner.set_trial_state_values(trial_id, state, values)
        # Not for RUNNING (a worker taking a WAITING trial): another worker may have taken it
        # meanwhile, and a False then says so, as Optuna expects.
        return self.call(set_trial_state_values, read_back=(
            lambda: self.inner.get_trial(trial_id).state == state or None) if state.is_finished() else None)

    # Creates: a retry after a reply lost past the commit would create a second one.
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        """Create a trial once, however often the call is retried: the trial carries a token
        (a system attribute), and a retry, by us or by Optuna's RDB storage (which retries a
        failed commit itself), is reconciled by reading it back. A second trial created
        that way is failed, so that nobody waits for it."""
        # Ours, unless this storage serves Optuna's gRPC proxy: then the client's (see proxy.py).
        token = (template_trial.system_attrs.get(CREATED) if self.keep_tokens and template_trial
                 else None) or uuid.uuid4().hex
        template = copy.copy(template_trial or create_trial(state=TrialState.RUNNING))
        template.system_attrs = {**template.system_attrs, CREATED: token}
        errors = self.engine_errors
        trial = self.call("create_new_trial", study_id, template,
                          read_back=lambda: (self._created(study_id, token) or [None])[0])
        if self.engine_errors != errors:        # the database failed under the call: look
            for twin in set(self.call(self._created, study_id, token)) - {trial}:
                # The first copy is failed so that nobody waits for it; a finished one (an
                # added trial) can't be, and stays.
                failed = fail_with_reason(self.inner, twin, f"created twice: a retry after a lost "
                                          f"reply created trial id {trial}, which ran instead")
                log.warning("a trial's creation was retried after its reply was lost: trial ids %d and "
                            "%d; the first %s", twin, trial, "is failed" if failed else "stays (finished)")
        return trial

    def _created(self, study_id: int, token: str) -> list[int]:
        """The ids of the trials created with ``token``, oldest first, read past any cache."""
        source = backend_of(self.inner) if isinstance(self.inner, CachedStorage) else self.inner
        return [trial_id(t) for t in source.get_all_trials(study_id, deepcopy=False)
                if t.system_attrs.get(CREATED) == token]

    def create_new_study(self, directions, study_name: str | None = None) -> int:
        """Create a study once: a retry after a lost reply finds the study the first attempt
        created, with nothing in it yet, and takes it as its own."""
        def read_back() -> int | None:
            try:
                sid = self.inner.get_study_id_from_name(study_name)
            except KeyError:
                return None
            fresh = not self.inner.get_study_user_attrs(sid) and not self.inner.get_all_trials(sid, deepcopy=False)
            return sid if fresh else None
        return self.call("create_new_study", directions, study_name,
                         read_back=read_back if study_name else None)

    # BaseHeartbeat: only when the wrapped storage has heartbeats (Optuna asks
    # get_heartbeat_interval() to find out).
    def get_heartbeat_interval(self) -> int | None:
        return self.inner.get_heartbeat_interval() if isinstance(self.inner, BaseHeartbeat) else None

    def get_heartbeat_stale_trial_callback(self):
        return self.inner.get_heartbeat_stale_trial_callback() if isinstance(self.inner, BaseHeartbeat) else None

    def remove_session(self) -> None:
        # Only gives a connection back to the pool: nothing to wait for when the server is away.
        try:
            self.inner.remove_session()
        except Exception as e:
            if transient_cause(e) is None:
                raise


def _retried(method: str) -> Callable:
    def call(self, *args, **kwargs):
        return self.call(method, *args, **kwargs)
    call.__name__ = method
    call.__doc__ = getattr(BaseStorage, method, getattr(BaseHeartbeat, method, None)).__doc__
    return call


# Every storage method Optuna and this workbench call, reads and writes alike.
for _method in [m for m in vars(BaseStorage) if not m.startswith("__")
                and callable(vars(BaseStorage)[m])
                and m not in vars(RetryingStorage)] + \
        ["record_heartbeat", STALE_TRIAL_IDS]:
    setattr(RetryingStorage, _method, _retried(_method))
abc.update_abstractmethods(RetryingStorage)
