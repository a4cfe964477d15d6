"""Prefect flow for ``qt run``: a thin wrapper over the plain stage functions.

Each stage is a plain function ``stage(params, paths) -> dict`` that tests call
directly; here they become tasks so the Prefect UI shows each step, its timing and
its failure. Stages hand data to each other through the state directory, never
through task return values, so task inputs stay tiny and nothing is cached by
accident (``cache_policy=NONE``).

The per-symbol work runs as one task per symbol on the ``runner:`` task runner (threads, or
a Dask cluster; ``flows/runner.py``): collection is a subflow (``flows/collect.py``; its
retries are per request, inside the collector, so a task is never re-run over symbols that
already succeeded), and so are validation and features (``symbol_stages_flow``: the validation
suites and the feature/label materialisation per symbol). Training, evaluation and promotion
are cross-symbol - one model on every symbol's rows, one portfolio backtest with one equity
curve and shared risk limits - so they are single tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NONE

from flows.runner import make_task_runner, symbol_map
from flows import stages as pipeline
from qt.config import Params
from qt.paths import StatePaths

SYMBOL_STAGES = ("validate", "features")


def _task(fn, name: str, retries: int = 0):
    return task(fn, name=name, cache_policy=NONE, retries=retries, retry_delay_seconds=5)


train_task = _task(pipeline.train, "train")
evaluate_task = _task(pipeline.evaluate, "evaluate")
promote_task = _task(pipeline.promote, "promote")
serve_and_execute_task = _task(pipeline.serve_and_execute, "serve-and-execute")


@flow(name="quantum-trader-symbol-stages", log_prints=True)
def _symbol_stages_flow(params: Params, home: str, stages: list[str]) -> dict:
    paths = StatePaths(Path(home))
    summary: dict = {}
    for name in stages:  # validate then features: features read the validation record
        summary.update(getattr(pipeline, name)(params, paths, map_symbols=symbol_map(name)))
    return summary


def symbol_stages_flow(params: Params, home: str, stages: Sequence[str] = SYMBOL_STAGES) -> dict:
    """``stages`` (validate, features) of the state directory ``home`` as a subflow whose per-symbol
    tasks run on the configured runner; returns the stages' summary parts."""
    unknown = [s for s in stages if s not in SYMBOL_STAGES]
    if unknown:
        raise ValueError(f"not per-symbol stages: {unknown}; choose from {SYMBOL_STAGES}")
    runner = make_task_runner(params.runner)
    return _symbol_stages_flow.with_options(task_runner=runner)(params=params, home=home, stages=list(stages))


@flow(name="quantum-trader-pipeline", log_prints=True)
def pipeline_flow(params: Params, home: str, redis_url: str | None = None) -> dict:
    """collect -> validate -> features -> train -> evaluate -> promote -> serve -> execute."""
    from flows.collect import collection_flow

    paths = StatePaths(Path(home))
    summary: dict = collection_flow(params, home)  # a subflow: one task per symbol
    summary.update(symbol_stages_flow(params, home))  # a subflow: one task per symbol and stage
    for stage in (train_task, evaluate_task, promote_task):
        summary.update(stage(params, paths))
    summary.update(serve_and_execute_task(params, paths, redis_url))
    return summary
