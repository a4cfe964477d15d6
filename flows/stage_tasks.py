"""The pipeline's stages as Prefect tasks, and the per-symbol subflow (validate, features).

Why a module of its own: ``qt run`` (``flows/pipeline.py``), the weekly retrain
(``flows/retrain.py``) and the ``features`` deployment (``flows/features_flow.py``) compose the
same stage tasks and the same per-symbol subflow; they import them from here, so no flow depends
on another flow's file. Each task wraps a plain stage function of ``flows/stages.py``
(``cache_policy=NONE``: stages hand data over through the state directory, never through task
return values, so nothing is cached by accident).

The per-symbol work runs as one task per symbol on the ``runner:`` task runner (threads, or a
Dask cluster; ``flows/runner.py``): ``symbol_stages_flow`` runs validation and features that way
(the validation suites and the feature/label materialisation per symbol).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NONE

from flows import stages as stage_functions
from flows.runner import make_task_runner, symbol_map
from qt.config import Params
from qt.paths import StatePaths

SYMBOL_STAGES = ("validate", "features")


def _task(fn, name: str, retries: int = 0):
    return task(fn, name=name, cache_policy=NONE, retries=retries, retry_delay_seconds=5)


train_task = _task(stage_functions.train, "train")
evaluate_task = _task(stage_functions.evaluate, "evaluate")
promote_task = _task(stage_functions.promote, "promote")
serve_and_execute_task = _task(stage_functions.serve_and_execute, "serve-and-execute")


@flow(name="quantum-trader-symbol-stages", log_prints=True)
def _symbol_stages_flow(params: Params, home: str, stages: list[str]) -> dict:
    paths = StatePaths(Path(home))
    summary: dict = {}
    for name in stages:  # validate then features: features read the validation record
        summary.update(getattr(stage_functions, name)(params, paths, map_symbols=symbol_map(name)))
    return summary


def symbol_stages_flow(params: Params, home: str, stages: Sequence[str] = SYMBOL_STAGES) -> dict:
    """``stages`` (validate, features) of the state directory ``home`` as a subflow whose per-symbol
    tasks run on the configured runner; returns the stages' summary parts."""
    unknown = [s for s in stages if s not in SYMBOL_STAGES]
    if unknown:
        raise ValueError(f"not per-symbol stages: {unknown}; choose from {SYMBOL_STAGES}")
    runner = make_task_runner(params.runner)
    return _symbol_stages_flow.with_options(task_runner=runner)(params=params, home=home, stages=list(stages))
