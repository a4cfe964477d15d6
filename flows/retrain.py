"""Prefect retrain flow: newest data -> validate -> features -> train -> evaluate -> promote.

Scheduled weekly by the ``retrain`` deployment in ``prefect.yaml`` (Mondays 03:00 UTC) and
triggerable by hand (``prefect deployment run quantum-trader-retrain/retrain``, or calling
``retrain_flow`` directly). It is ``qt run`` without serving: the same subflows and stage tasks
as ``flows/pipeline.py`` (``flows/stage_tasks.py``; per-symbol work on the ``runner:`` task runner), so the same gates and
the same ``gates.mode`` decide whether the new version becomes champion; a running service picks
a new champion up by itself.

"Newest data" means collection runs up to now (it is incremental: only new candles are
fetched), so a config with a fixed ``data.end`` is refused rather than silently retrained on
the same period again.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow

from flows.collect import collection_flow
from flows.stage_tasks import evaluate_task, promote_task, symbol_stages_flow, train_task
from qt.atomic import write_json_atomic
from qt.config import Params, load_params
from qt.errors import ConfigError
from qt.paths import StatePaths


def retrain_params(params_path: str | None, overrides: dict | None = None) -> Params:
    """The config a retrain runs with; ConfigError when ``data.end`` pins it to the past."""
    params = load_params(Path(params_path) if params_path else None, overrides)
    if params.data.end is not None:
        raise ConfigError(f"data.end is {params.data.end!r}: a retrain collects the newest candles, so it "
                          f"needs an open end; remove data.end from {params_path or 'params.yaml'}")
    return params


@flow(name="quantum-trader-retrain", log_prints=True)
def retrain_flow(params_path: str | None = "params.yaml", home: str | None = None,
                 overrides: dict | None = None) -> dict:
    """Collect the newest candles, rebuild features, retrain, evaluate, register, gate, promote.

    ``params_path``: the params file (relative to the working directory, which is the project
    root for the deployment); ``home``: the state directory (default ``QT_HOME`` or
    ``<project>/state``); ``overrides``: sections merged over the file (as the CLI does).
    Returns the run's summary (also written to ``reports/retrain.json``).
    """
    t0 = time.perf_counter()
    params = retrain_params(params_path, overrides)
    paths = (StatePaths(Path(home)) if home else StatePaths.from_env()).ensure()
    summary: dict = collection_flow(params, str(paths.home))
    summary.update(symbol_stages_flow(params, str(paths.home)))
    for stage in (train_task, evaluate_task, promote_task):
        summary.update(stage(params, paths))
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(paths.reports / "retrain.json", summary, indent=2, default=str)
    reg = summary.get("registry", {})
    print(f"retrain: version {reg.get('version')} registered; promoted={reg.get('promoted')} "
          f"(champion {reg.get('champion')}); {len(reg.get('reasons') or [])} gate(s) failed")
    return summary
