"""Prefect flow for ``qt run``: the path of one candle, stage by stage, as one flow.

collect (``data/``) -> validate (``data/``) -> features (``features/``) -> train, evaluate,
promote (``training/``) -> serve (``serving/``) -> execute (``executor/``). Each stage is a plain
function ``stage(params, paths) -> dict`` of ``flows/stages.py`` that tests and the CLI call
directly; here they are composed as tasks and subflows so the Prefect UI shows each step, its
timing and its failure. Stages hand data to each other through the state directory, never
through task return values, so task inputs stay tiny and nothing is cached by accident.

The per-symbol work runs as one task per symbol on the ``runner:`` task runner (threads, or
a Dask cluster; ``flows/runner.py``): collection is a subflow (``flows/collect.py``; its
retries are per request, inside the collector, so a task is never re-run over symbols that
already succeeded), and so are validation and features (``flows/stage_tasks.py``
``symbol_stages_flow``). Training, evaluation and promotion are cross-symbol - one model on
every symbol's rows, one portfolio backtest with one equity curve and shared risk limits - so
they are single tasks. Only the CLI imports this module (``run_all``).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

from prefect import flow

from flows.collect import collection_flow
from flows.stage_tasks import evaluate_task, promote_task, serve_and_execute_task, symbol_stages_flow, train_task
from qt.atomic import write_json_atomic
from qt.config import Params
from qt.paths import StatePaths
from qt.procs import start_redis


@flow(name="quantum-trader-pipeline", log_prints=True)
def pipeline_flow(params: Params, home: str, redis_url: str | None = None) -> dict:
    """collect -> validate -> features -> train -> evaluate -> promote -> serve -> execute."""
    paths = StatePaths(Path(home))
    summary: dict = collection_flow(params, home)  # a subflow: one task per symbol
    summary.update(symbol_stages_flow(params, home))  # a subflow: one task per symbol and stage
    for stage in (train_task, evaluate_task, promote_task):
        summary.update(stage(params, paths))
    summary.update(serve_and_execute_task(params, paths, redis_url))
    return summary


def run_all(params: Params, paths: StatePaths, redis_url: str | None = None) -> dict:
    """``qt run``: start Redis if needed, run the Prefect flow, write ``reports/summary.json``.

    Every process started here is stopped before returning, also on failure.
    """
    t0 = time.perf_counter()
    paths.ensure()
    with ExitStack() as stack:
        if redis_url is None:
            proc, redis_url = start_redis(paths.logs)
            stack.callback(proc.stop)
        summary = pipeline_flow(params=params, home=str(paths.home), redis_url=redis_url)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    write_summary(summary, paths)
    return summary


def write_summary(summary: dict, paths: StatePaths) -> Path:
    paths.reports.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(paths.reports / "summary.json", summary, indent=2, default=str)
