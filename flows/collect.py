"""Prefect collection flow: one task per symbol, on the configured task runner.

``runner.task_runner: local`` maps the symbols over a thread pool of ``collect.concurrency``
workers (the exchange-politeness limit); ``dask`` runs them on a Dask cluster through
prefect-dask - an in-process ``LocalCluster`` by default, or the scheduler at
``runner.dask_address`` for a real cluster (``flows.runner``). The work per symbol is
``data.collector.collect_one``, the same function the plain ``collect_universe`` runs, so both
runners store byte-identical lakes.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, task, unmapped
from prefect.cache_policies import NONE

from data.collector import collect_one
from flows.runner import make_task_runner
from flows.stages import collect
from qt.config import Params, load_params
from qt.paths import PROJECT_ROOT, StatePaths


@task(name="collect-symbol", cache_policy=NONE)
def collect_symbol_task(symbol: str, params: Params, root: str, exchange_url: str | None):
    return collect_one(params, root, exchange_url, symbol)


def _map_over_symbols(params: Params, root: Path, url: str | None, symbols: list[str]) -> list:
    futures = collect_symbol_task.map(symbols, params=unmapped(params), root=unmapped(str(root)),
                                      exchange_url=unmapped(url))
    return [f.result() for f in futures]


@flow(name="collect", log_prints=True)
def _collection_flow(params: Params, home: str) -> dict:
    return collect(params, StatePaths(Path(home)), _map_over_symbols)


def collection_flow(params: Params, home: str) -> dict:
    """Collect the universe into the lake of ``home`` on the configured task runner."""
    runner = make_task_runner(params.runner, threads=params.collect.concurrency)
    return _collection_flow.with_options(task_runner=runner)(params=params, home=home)


def resolve_params_path(params_path: str | None) -> Path | None:
    """``params_path``, else ``QT_PARAMS``, else ./params.yaml, else the project's, else None (the
    embedded defaults) - as the ``qt`` CLI resolves it."""
    if params_path is not None:
        return Path(params_path).resolve()
    env = os.environ.get("QT_PARAMS")
    if env:
        return Path(env).resolve()
    return next((c.resolve() for c in (Path.cwd() / "params.yaml", PROJECT_ROOT / "params.yaml") if c.is_file()), None)


def deployment_context(params_path: str | None, home: str | None, overrides: dict | None = None):
    """(params, paths) for a flow started by a deployment.

    ``params_path`` None means ``QT_PARAMS``, else ``params.yaml`` in the working directory
    (the project root for a deployment), else the project's; ``home`` None means ``QT_HOME``,
    else ``<project>/state`` - the same resolution as the ``qt`` CLI, so a worker started with
    ``QT_HOME``/``QT_PARAMS`` runs every deployment (also the ones a trigger starts, which carry
    no parameters of their own) on that state directory and config.
    """
    params = load_params(resolve_params_path(params_path), overrides)
    paths = (StatePaths(Path(home).expanduser().resolve()) if home else StatePaths.from_env()).ensure()
    # the tools' state goes under ``home``; Prefect's own settings stay the worker's (its API URL)
    os.environ.update({k: v for k, v in paths.tool_env().items() if not k.startswith("PREFECT_")})
    return params, paths


@flow(name="quantum-trader-collect", log_prints=True)
def collect_flow(params_path: str | None = None, home: str | None = None, overrides: dict | None = None) -> dict:
    """The ``collect`` deployment (every bar): newest closed candles into the raw lake.

    Incremental, so an hourly run fetches one new bar per symbol. Its completion is the event
    the ``features`` deployment's trigger waits for (prefect.yaml).
    """
    params, paths = deployment_context(params_path, home, overrides)
    summary = collection_flow(params, str(paths.home))
    print(f"collect: {summary.get('data', {}).get('rows', '?')} rows for {len(params.data.symbols)} symbol(s) "
          f"in {paths.home}")
    return summary
