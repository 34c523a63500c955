"""Optuna's gRPC storage proxy in front of one database, for studies with hundreds of workers:
``python -m chromasonic_lib.proxy --storage postgresql://... [--host 0.0.0.0] [--port 13000]``.

Workers then use ``storage: grpc://<this machine>:13000``: they hold one connection to the
proxy each, and the proxy holds a few to the database and caches finished trials, so the
database sees one client instead of hundreds. The proxy waits out a database outage for up to
``--patience`` seconds, as a worker would (see :mod:`chromasonic_lib.search.storage`).
Ctrl-C or SIGTERM stops it.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import warnings

import optuna

from .config.checks import check_storage
from .errors import ChromasonicError, ConfigError
from .paths import mask_url

# What the proxy can stand in front of: Optuna's proxy serves RDB storages only (not a journal).
PROXIED_SCHEMES = ("postgresql", "mysql", "sqlite:///")


def open_database(url: str, patience: float = 600) -> optuna.storages.BaseStorage:
    """The storage the proxy serves: ``url`` opened as a worker opens it (cached, retrying)."""
    from .search.study import open_storage
    url = check_storage("storage", url)
    if not url.startswith(PROXIED_SCHEMES):
        raise ConfigError(f"storage {mask_url(url)!r} cannot be served by the gRPC proxy: it serves "
                          f"a database URL (postgresql://, mysql:// or sqlite:///), not a journal "
                          f"file, an in-memory study or another proxy")
    storage = open_storage(url, patience=patience)
    storage.keep_tokens = True      # a trial's creation token is its client's, to read back
    return storage


def serve(url: str, host: str = "0.0.0.0", port: int = 13000, patience: float = 600) -> None:
    """Serve the database at ``url`` on ``host:port`` until Ctrl-C or SIGTERM."""
    storage = open_database(url, patience)
    print(f"storage proxy listening on {host}:{port}, serving {mask_url(url)}; "
          f"workers use storage: grpc://<this host>:{port}", flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.run_grpc_proxy_server(storage, host=host, port=port)
    except KeyboardInterrupt:
        print("storage proxy stopped", flush=True)
    except RuntimeError as e:       # grpc: "Failed to bind to address"
        raise ConfigError(f"port {port} on {host}: the storage proxy cannot listen there ({e})") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        storage.remove_session()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chromasonic_lib.proxy", description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", required=True,
                   help="the database URL, or env (the CHROMASONIC_STORAGE variable: keeps a password "
                        "out of the shell history)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=13000, help="port to listen on")
    p.add_argument("--patience", type=float, default=600,
                   help="seconds one call waits for the database to come back (as storage_patience)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        serve(args.storage, args.host, args.port, args.patience)
    except ChromasonicError as e:
        print(f"error: {mask_url(str(e))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
