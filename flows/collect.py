"""Prefect collection flow: one task per symbol, on the configured task runner.

``collect.task_runner: local`` maps the symbols over a thread pool of ``collect.concurrency``
workers; ``dask`` runs them on a Dask cluster through prefect-dask - an in-process
``LocalCluster`` by default, or the scheduler at ``collect.dask_address`` for a real cluster.
The work per symbol is ``qt.collector.collect_one``, the same function the plain
``collect_universe`` runs, so both runners store byte-identical lakes.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task, unmapped
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner

from qt.config import CollectParams, Params
from qt.paths import StatePaths


@task(name="collect-symbol", cache_policy=NONE)
def collect_symbol_task(symbol: str, params: Params, root: str, exchange_url: str | None):
    from qt.collector import collect_one

    return collect_one(params, root, exchange_url, symbol)


def make_task_runner(collect: CollectParams):
    """The task runner ``collect.task_runner`` names, sized by ``collect.concurrency``."""
    if collect.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if collect.dask_address:
            return DaskTaskRunner(address=collect.dask_address)
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": min(2, collect.concurrency), "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    return ThreadPoolTaskRunner(max_workers=collect.concurrency)


def _map_over_symbols(params: Params, root: Path, url: str | None, symbols: list[str]) -> list:
    futures = collect_symbol_task.map(symbols, params=unmapped(params), root=unmapped(str(root)),
                                      exchange_url=unmapped(url))
    return [f.result() for f in futures]


@flow(name="collect", log_prints=True)
def _collection_flow(params: Params, home: str) -> dict:
    from qt.pipeline import collect

    return collect(params, StatePaths(Path(home)), _map_over_symbols)


def collection_flow(params: Params, home: str) -> dict:
    """Collect the universe into the lake of ``home`` on the configured task runner."""
    return _collection_flow.with_options(task_runner=make_task_runner(params.collect))(params=params, home=home)
