"""prefect.yaml on a REAL Prefect server and process worker: deploy, trigger, see runs complete.

A server and a worker are started on loopback with their own PREFECT_HOME under tmp_path,
every deployment of prefect.yaml is registered with ``prefect deploy --all`` (as ``make deploy``
does), then a run of ``collect`` is started with its parameters overridden at run time (a tiny
synthetic market, a tmp state directory). The ``features`` deployment must then be started by its
trigger (the automation ``prefect deploy`` created from prefect.yaml) and complete, and a run of
``drift`` must complete too, and the trigger a tripped drift check uses under a deployment
(``run_deployment`` with the check's params file and state directory) must start a run that
completes. Both processes are stopped by PID in a finally.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from qt.procs import ManagedProcess, free_port, live_group_members

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TINY = {"data": {"source": "synthetic:3", "symbols": ["BTC/USDT"]}, "synthetic": {"bars": 400}}
DEADLINE_S = 120.0  # ~40 s on an idle machine; generous for a loaded one


def _prefect_env(prefect_home: Path, api_url: str, qt_home: Path, params: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "QT_", "MLFLOW_"))}
    env.update({"PREFECT_HOME": str(prefect_home), "PREFECT_API_URL": api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_WORKER_PREFETCH_SECONDS": "1",
                # the worker's flow runs resolve parameters left null from these (prefect.yaml)
                "QT_HOME": str(qt_home), "QT_PARAMS": str(params)})
    return env


def _prefect(env: dict, *args: str, timeout: float = 60) -> str:
    exe = str(Path(sys.executable).with_name("prefect"))
    res = subprocess.run([exe, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"prefect {' '.join(args)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res.stdout


async def _runs_of(client, deployment_id) -> list:
    """Every run of the deployment (``features`` has no schedule: any run of it was triggered)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return await client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


async def _wait_final(client, run_id, deadline: float):
    while time.monotonic() < deadline:
        run = await client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        await asyncio.sleep(0.5)
    raise AssertionError(f"flow run {run_id} not finished in time (state {run.state_name})")


async def _exercise(api_url: str, qt_home: Path, params: Path) -> dict:
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + DEADLINE_S
    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            names = {d.name for d in await client.read_deployments()}
            assert {"collect", "features", "retrain", "drift", "tune"} <= names, names
            features_dep = await client.read_deployment_by_name("quantum-trader-features/features")

            collect = await run_deployment("quantum-trader-collect/collect", timeout=0,
                                           parameters={"params_path": str(params), "home": str(qt_home)})
            collect = await _wait_final(client, collect.id, deadline)
            assert collect.state.is_completed(), f"collect ended {collect.state_name}: {collect.state.message}"

            # nobody asked for features: the trigger from prefect.yaml must start it
            features = None
            while features is None and time.monotonic() < deadline:
                started = [r for r in await _runs_of(client, features_dep.id)]
                features = started[0] if started else None
                await asyncio.sleep(0.5)
            assert features is not None, "the features deployment was not triggered by the completed collect run"
            features = await _wait_final(client, features.id, deadline)
            assert features.state.is_completed(), f"features ended {features.state_name}: {features.state.message}"

            drift = await run_deployment("quantum-trader-drift/drift", timeout=0,
                                         parameters={"params_path": str(params), "home": str(qt_home)})
            drift = await _wait_final(client, drift.id, deadline)
            assert drift.state.is_completed(), f"drift ended {drift.state_name}: {drift.state.message}"

            # what a tripped drift check under a deployment does: run_deployment of the named one with
            # the check's params file and state directory (drift stands in for retrain: same
            # parameters, seconds instead of minutes)
            from flows.drift import make_retrain_trigger

            trigger = make_retrain_trigger("deployment", "quantum-trader-drift/drift", params, qt_home)
            started = await asyncio.to_thread(trigger, "test trip")
            assert started["mode"] == "deployment"
            rerun = await _wait_final(client, started["flow_run_id"], deadline)
            assert rerun.state.is_completed(), f"triggered run ended {rerun.state_name}"
            assert rerun.parameters == {"params_path": str(params), "home": str(qt_home)}
            return {"collect": collect, "features": features, "drift": drift}


def test_deployments_from_prefect_yaml_run_on_a_real_server_and_worker(tmp_path):
    qt_home = tmp_path / "qt_home"
    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump(TINY))
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = _prefect_env(tmp_path / "prefect_home", api_url, qt_home, params)
    exe = str(Path(sys.executable).with_name("prefect"))
    server = ManagedProcess("prefect-server", [exe, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, log_path=tmp_path / "server.log", cwd=ROOT)
    worker = ManagedProcess("prefect-worker", [exe, "worker", "start", "--pool", "process", "--type", "process"],
                            env=env, log_path=tmp_path / "worker.log", cwd=ROOT)
    started = []
    try:
        server.start()
        started.append(server.pid)
        server.wait_until(lambda: httpx.get(f"{api_url}/health", timeout=2).json() is True, 60, "healthy")
        _prefect(env, "work-pool", "create", "process", "--type", "process")
        worker.start()
        started.append(worker.pid)
        # 6 s here when warm; CI's fresh machine timed out at 60 s importing the flows' modules (torch,
        # neuralforecast) from a cold disk beside the other test process. A hang guard, not a bar.
        out = _prefect(env, "deploy", "--all", "--no-prompt", timeout=300)
        declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
        assert out.count("successfully created") == len(declared) == 5, out[-2000:]  # collect .. drift, tune
        runs = asyncio.run(_exercise(api_url, qt_home, params))
    finally:
        worker.stop(timeout_s=5)
        server.stop(timeout_s=10)
    assert live_group_members(started) == []
    assert (qt_home / "reports" / "collect.json").is_file()
    assert (qt_home / "reports" / "features.json").is_file(), "the triggered features run wrote nothing"
    assert any((qt_home / "features").rglob("*.parquet"))
    assert (qt_home / "reports" / "drift.json").is_file()
    assert runs["features"].start_time >= runs["collect"].end_time
    print({name: round((r.end_time - r.start_time).total_seconds(), 1) for name, r in runs.items()})
