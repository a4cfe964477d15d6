"""The Dask cluster of ``runner:``: one way to reach it for every stage that scales out.

Why here, on the ground floor: the flows' per-symbol tasks (through prefect-dask) and the search's
trial workers (``training.tune_run``) use the same cluster, configured once (``runner.task_runner:
dask``, ``runner.dask_address``). A missing scheduler is a one-line ``ConfigError`` before any work
starts, not a 30-second retry and a traceback deep in ``distributed``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from qt.config import RunnerParams
from qt.errors import ConfigError


def require_scheduler(address: str, timeout_s: float = 5.0) -> None:
    """ConfigError (one line) when nothing listens at the scheduler address."""
    where = urlsplit(address)
    try:
        with socket.create_connection((where.hostname, where.port or 8786), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(f"runner.dask_address {address}: no Dask scheduler answers there "
                          f"({exc.strerror or type(exc).__name__}); start `dask scheduler` on that host "
                          f"or fix the address (runner.task_runner: local runs without a cluster)") from None


@contextmanager
def dask_client(runner: RunnerParams, n_workers: int | None = None) -> Iterator:
    """A ``distributed.Client`` on the scheduler at ``runner.dask_address``, or on a ``LocalCluster``
    of ``n_workers`` (default ``runner.workers``) single-threaded worker processes started here and
    stopped on exit, also on failure (closing the cluster ends its worker processes)."""
    from distributed import (  # optional and heavy: only for runner dask
        Client,
        LocalCluster,
    )

    if runner.dask_address:
        require_scheduler(runner.dask_address)
        with Client(runner.dask_address) as client:
            yield client
        return
    with LocalCluster(n_workers=n_workers or runner.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client
