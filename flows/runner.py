"""Where the flows' per-symbol tasks run: the ``runner:`` section, by configuration alone.

``runner.task_runner: local`` maps the symbols over a thread pool in the flow's process;
``dask`` maps them over a Dask cluster through prefect-dask - an in-process ``LocalCluster`` of
``runner.workers`` processes by default, or the scheduler at ``runner.dask_address`` for a real
cluster. ``symbol_map`` turns a stage's per-symbol function into one Prefect task per symbol
(``validate-ETH/USDT``, ``features-ETH/USDT`` in the UI) on whichever runner the enclosing flow
has, following the ``qt.fanout`` contract (every symbol finishes, then the first failure is
raised). The functions are the plain ones the CLI runs, so both runners write the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prefect import task, unmapped
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner

from qt.cluster import require_scheduler
from qt.config import RunnerParams
from qt.fanout import SymbolMap, raise_first


def make_task_runner(runner: RunnerParams, threads: int | None = None):
    """The task runner ``runner.task_runner`` names. ``threads`` sizes the local pool (default
    ``runner.workers``; collection passes ``collect.concurrency``, its exchange-politeness limit)."""
    if runner.task_runner == "dask":
        from prefect_dask import DaskTaskRunner  # optional and heavy (distributed): only for runner dask

        if runner.dask_address:
            require_scheduler(runner.dask_address)
            return DaskTaskRunner(address=runner.dask_address)
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": runner.workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    return ThreadPoolTaskRunner(max_workers=threads or runner.workers)


@task(name="per-symbol", cache_policy=NONE, task_run_name="{stage}-{symbol}")
def symbol_task(stage: str, fn: Callable, symbol: str, kwargs: dict):
    """``fn(symbol, **kwargs)`` as one task run; retries belong inside ``fn``'s I/O, not here."""
    return fn(symbol, **kwargs)


def symbol_map(stage: str) -> SymbolMap:
    """A ``qt.fanout`` fan-out running each symbol as a ``symbol_task`` on the current flow's runner."""

    def map_symbols(fn: Callable, symbols: Sequence[str], **kwargs) -> list:
        symbols = list(symbols)
        futures = symbol_task.map(stage=unmapped(stage), fn=unmapped(fn), symbol=symbols, kwargs=unmapped(kwargs))
        results, failures = [], []
        for sym, fut in zip(symbols, futures, strict=True):
            try:
                results.append(fut.result())
            except Exception as exc:  # noqa: BLE001 - raised below, after every symbol finished
                failures.append((sym, exc))
        raise_first(failures)
        return results

    return map_symbols
