"""Prefect ``features`` flow: validate the newest candles, then materialise features and labels.

Deployed as ``features`` in ``prefect.yaml``, chained after collection by a deployment
trigger: every ``prefect.flow-run.Completed`` event of a run of the ``collect`` deployment
starts one run of this flow (a Prefect automation the server creates at ``prefect deploy``).
The trigger passes no parameters, so the run resolves its config and state directory the way
the worker's environment says (``QT_PARAMS``, ``QT_HOME``; see ``flows.collect.deployment_context``).

The two stages are the plain ``flows.stages`` functions (the same ones ``qt run`` uses), their
per-symbol work mapped as one task per symbol on the ``runner:`` task runner (threads or a Dask
cluster; ``flows.stage_tasks.symbol_stages_flow``), so validation errors quarantine a symbol and
the features stage refuses candles that changed since they were validated.
"""

from __future__ import annotations

from prefect import flow

from flows.collect import deployment_context
from flows.stage_tasks import symbol_stages_flow


@flow(name="quantum-trader-features", log_prints=True)
def features_flow(params_path: str | None = None, home: str | None = None, overrides: dict | None = None) -> dict:
    """validate -> features on the stored lake; returns both stages' summary parts."""
    params, paths = deployment_context(params_path, home, overrides)
    summary = symbol_stages_flow(params, str(paths.home))
    feats = summary.get("features", {})
    print(f"features: {feats.get('rows')} rows ({feats.get('rows_computed')} recomputed) in {paths.features}")
    return summary
