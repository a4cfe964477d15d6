"""Prefect ``drift`` flow: the daily drift and decay check of the champion (``drift`` deployment).

The check itself is ``training.drift_monitor.monitor`` (plain functions, tested without Prefect);
this flow resolves the config, and decides what a trip starts (``drift.retrain``):

* ``deployment`` - ``run_deployment`` of ``drift.retrain_deployment`` (the ``retrain``
  deployment) on the same params file and state directory, returning at once: the retrain runs
  on the worker like any other run, visible in the UI as a child of this one;
* ``direct`` - the retrain flow in this process (no server needed: ``qt drift``);
* ``auto`` - ``deployment`` when this flow itself runs under a deployment, else ``direct``;
* ``off`` - alert only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prefect import flow
from prefect.deployments import run_deployment
from prefect.runtime import deployment as this_deployment

from flows.collect import deployment_context, resolve_params_path
from flows.retrain import retrain_flow
from training.drift_monitor import monitor


def retrain_mode(configured: str, under_deployment: bool) -> str:
    """What ``auto`` means here: the retrain deployment when a deployment runs us, else in-process."""
    if configured == "auto":
        return "deployment" if under_deployment else "direct"
    return configured


def make_retrain_trigger(mode: str, deployment: str, params_path: Path | None, home: Path,
                         overrides: dict | None = None) -> Callable[[str], dict] | None:
    """The callable a tripped monitor calls with its reason (None for ``off``); the retrain gets the
    same params file, overrides and state directory as the check."""
    if mode == "off":
        return None
    parameters = {"params_path": str(params_path) if params_path else None, "home": str(home)}
    if overrides:
        parameters["overrides"] = overrides
    if mode == "deployment":
        def _run_deployment(reason: str) -> dict:
            run = run_deployment(deployment, parameters=parameters, timeout=0)
            print(f"drift: started {deployment} (flow run {run.id}) because {reason}")
            return {"mode": "deployment", "deployment": deployment, "flow_run_id": str(run.id),
                    "state": run.state_name, "reason": reason}

        return _run_deployment

    def _run_direct(reason: str) -> dict:
        print(f"drift: retraining in-process because {reason}")
        summary = retrain_flow(**parameters)
        reg = summary.get("registry", {})
        return {"mode": "direct", "reason": reason, "version": reg.get("version"),
                "promoted": reg.get("promoted"), "champion": reg.get("champion")}

    return _run_direct


def run_drift(params_path: str | None = None, home: str | None = None, overrides: dict | None = None,
              retrain: str | None = None, under_deployment: bool = False, notifier=None) -> dict:
    """One check with the configured (or ``retrain``-overridden) reaction; plain function."""
    params, paths = deployment_context(params_path, home, overrides)
    mode = retrain_mode(retrain or params.drift.retrain, under_deployment)
    trigger = make_retrain_trigger(mode, params.drift.retrain_deployment, resolve_params_path(params_path),
                                   paths.home, overrides)
    result = monitor(params, paths, notifier=notifier, trigger_retrain=trigger)
    result["retrain_mode"] = mode
    return result


@flow(name="quantum-trader-drift", log_prints=True)
def drift_flow(params_path: str | None = None, home: str | None = None, overrides: dict | None = None,
               retrain: str | None = None) -> dict:
    """Daily: PSI of the champion's features and predictions, live vs backtest; alert and retrain past
    ``drift:`` thresholds. Writes ``reports/drift.json`` and a run in the MLflow ``drift`` experiment."""
    result = run_drift(params_path, home, overrides, retrain, under_deployment=this_deployment.id is not None)
    print(f"drift: {result['status']}; " + ("; ".join(b["message"] for b in result.get("breaches", []))
                                           or "; ".join(result.get("notes", []))))
    return result
