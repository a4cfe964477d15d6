"""Prefect flow for ``qt run``: a thin wrapper over the plain stage functions.

Each stage is a plain function ``stage(params, paths) -> dict`` that tests call
directly; here they become tasks so the Prefect UI shows each step, its timing and
its failure. Stages hand data to each other through the state directory, never
through task return values, so task inputs stay tiny and nothing is cached by
accident (``cache_policy=NONE``). Collection is a subflow (``flows/collect.py``) that
maps one task per symbol on its own task runner; its retries are per request, inside the
collector, so a task is never re-run over symbols that already succeeded.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NONE

from qt import pipeline
from qt.config import Params
from qt.paths import StatePaths


def _task(fn, name: str, retries: int = 0):
    return task(fn, name=name, cache_policy=NONE, retries=retries, retry_delay_seconds=5)


validate_task = _task(pipeline.validate, "validate")
features_task = _task(pipeline.features, "features")
train_task = _task(pipeline.train, "train")
evaluate_task = _task(pipeline.evaluate, "evaluate")
promote_task = _task(pipeline.promote, "promote")
serve_and_execute_task = _task(pipeline.serve_and_execute, "serve-and-execute")


@flow(name="quantum-trader-pipeline", log_prints=True)
def pipeline_flow(params: Params, home: str, redis_url: str | None = None) -> dict:
    """collect -> validate -> features -> train -> evaluate -> promote -> serve -> execute."""
    from flows.collect import collection_flow

    paths = StatePaths(Path(home))
    summary: dict = collection_flow(params, home)  # a subflow: one task per symbol
    for stage in (validate_task, features_task, train_task, evaluate_task, promote_task):
        summary.update(stage(params, paths))
    summary.update(serve_and_execute_task(params, paths, redis_url))
    return summary
