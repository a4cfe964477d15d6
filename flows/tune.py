"""Prefect flow for ``qt tune``: a thin wrapper over plain functions, like ``flows/pipeline.py``.

collect -> validate -> features (the base params) -> the search (``training.tune_run.run_search``:
inner folds of the pre-holdout data only) -> features again with the selected params (a searched
label horizon changes the labels) -> train -> evaluate (the holdout, once) -> promote, whose
deflated Sharpe uses the study's N and the variance of its trials' Sharpes. Writes
``reports/summary.json`` (the schema of ``qt run``, without the serve/execute parts, plus a
``tune`` block) and ``reports/tuned-params.yaml``. The ``tune`` deployment in ``prefect.yaml``
runs ``tune_deployment_flow``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NONE

from data.sources import lake_root, with_collected_universe
from flows import stages
from flows.collect import collection_flow
from flows.stage_tasks import symbol_stages_flow
from qt.atomic import write_json_atomic
from qt.config import Params, load_params
from qt.errors import DataError
from qt.paths import StatePaths


@task(name="search", cache_policy=NONE)
def search_task(params: Params, home: str, lake: str, study: str, trials: int, timeout: float | None,
                workers: int) -> dict:
    from training.tune_run import run_search

    return run_search(params, StatePaths(Path(home)), Path(lake), study, trials, timeout, workers)


@flow(name="quantum-trader-tune", log_prints=True)
def tune_flow(params: Params, home: str, study: str, trials: int | None = None, timeout: float | None = None,
              workers: int = 1) -> dict:
    """Search, then train/evaluate/promote the selected configuration; returns summary.json's content."""
    t0 = time.perf_counter()
    paths = StatePaths(Path(home)).ensure()
    summary: dict = collection_flow(params, home)
    summary.update(symbol_stages_flow(params, home))
    lake = lake_root(with_collected_universe(params, paths), paths)  # before the universe is cut
    base = stages.only_validated(params, paths)
    found = search_task(base, home, str(lake), study, trials or params.tune.trials,
                        timeout if timeout is not None else params.tune.timeout_seconds, workers)
    tuned: Params = found.pop("params")
    summary.update(symbol_stages_flow(tuned, home, stages=["features"]))
    summary.update(stages.train(tuned, paths))
    if pd.Timestamp(summary["train"]["holdout_start"]) < pd.Timestamp(found["trials_cut"]):
        raise DataError(f"the selected configuration's holdout starts at {summary['train']['holdout_start']}, "
                        f"before the last bar the trials read ({found['trials_data_end']}): its holdout would not "
                        f"be unseen; keep labels.horizon_bars out of the space or raise train.embargo_bars")
    summary.update(stages.evaluate(tuned, paths))
    stats = found["statistics"]
    summary.update(stages.promote(tuned, paths, search=stats))
    from training.tune_run import holdout_against_study

    against = holdout_against_study(paths, found["best"], tuned.data.timeframe)
    summary["tune"] = {"study": study, "trials_completed": stats["completed"], "trials_pruned": stats["pruned"],
                       "trials_failed": stats["failed"], "n_trials": stats["n_trials"],
                       "trial_sharpe_variance": stats["sharpe_variance"],
                       "best_inner_fold_sharpe": found["best"]["value"], "best_trial": found["best"]["trial"],
                       "holdout_vs_study": against,
                       "selected_params": found["best"]["params"], "tuned_params_file": found["tuned_params"],
                       "parent_run_id": found["parent_run_id"], "trials_data_end": found["trials_data_end"],
                       "holdout_start": summary["train"]["holdout_start"], "search_seconds": found["seconds"],
                       "seconds": round(time.perf_counter() - t0, 1)}
    summary["seconds"] = summary["tune"]["seconds"]
    write_json_atomic(paths.reports / "summary.json", summary, indent=2, default=str)
    return summary


@flow(name="quantum-trader-tune-deployment", log_prints=True)
def tune_deployment_flow(params_path: str | None = "params.yaml", home: str | None = None,
                         study: str = "default", trials: int | None = None, workers: int = 1) -> dict:
    """The ``tune`` deployment: the params file and state directory resolve like the CLI's."""
    params = load_params(Path(params_path) if params_path else None)
    paths = (StatePaths(Path(home)) if home else StatePaths.from_env()).ensure()
    return tune_flow(params, str(paths.home), study, trials, None, workers)
