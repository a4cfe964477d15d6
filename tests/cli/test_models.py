"""`qt models` and the manual promotion mode: who moved the champion is recorded, and undone.

One MLflow store on a temp QT_HOME; each test registers its own model name (a tiny logged
pyfunc stands in for a trained ensemble: approval and rollback never look inside the model).
The promote stage runs on hand-written hand-over files whose strategy returns are far beyond
luck, so its gates pass and only ``gates.mode`` decides what happens to the champion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from qt.config import load_params
from qt.paths import StatePaths
from training.gates import GateReport
from training.registry import CHALLENGER, CHAMPION, ModelRegistry

pytestmark = pytest.mark.slow

QT = str(Path(sys.executable).with_name("qt"))
FEATURE_SET = "f" * 64
N_BARS = 1500


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(home, run_id, model_uri): one logged tiny pyfunc every test registers under its own name."""
    import mlflow

    home = tmp_path_factory.mktemp("qt_home")
    paths = StatePaths(home).ensure()
    client = mlflow.MlflowClient(paths.tracking_uri, registry_uri=paths.tracking_uri)
    exp = client.create_experiment("quantum-trader", artifact_location=paths.mlflow_artifacts.as_uri())
    mlflow.set_tracking_uri(paths.tracking_uri)

    class HalfModel(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return pd.DataFrame({"prob_up": np.full(len(model_input), 0.5), "expected_return": 0.0})

    with mlflow.start_run(experiment_id=exp) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=HalfModel(), pip_requirements=[])
        mlflow.log_metrics({"holdout_strategy_sharpe": 2.5, "holdout_strategy_net_return": 0.12,
                            "holdout_strategy_max_drawdown": 0.04, "holdout_strategy_trades": 40})
    return home, run.info.run_id, info.model_uri


@pytest.fixture
def cli(store, tmp_path):
    """``cli(*args)`` -> CliRunner result for a model name of this test only; env restored after."""
    home = store[0]
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"train": {"model_name": f"m-{tmp_path.name}"}}))
    saved = dict(os.environ)

    def run(*args):
        try:
            return CliRunner().invoke(app, [*args, "--params", str(params_file)], env={"QT_HOME": str(home), "COLUMNS": "250"})
        finally:
            os.environ.clear()
            os.environ.update(saved)

    run.params_file = params_file
    run.registry = ModelRegistry(StatePaths(home).tracking_uri, f"m-{tmp_path.name}")
    return run


def _register(store, registry: ModelRegistry, gates_passed: bool) -> str:
    version = registry.register_version(store[1], model_uri=store[2])
    gates = [{"name": "min_trades", "passed": True, "value": 40.0, "threshold": 10.0, "detail": ""},
             {"name": "deflated_sharpe", "passed": gates_passed, "value": 0.99 if gates_passed else 0.4,
              "threshold": 0.95, "detail": ""}]
    registry.set_gate_tags(version, GateReport(passed=gates_passed, gates=gates))
    return version


def _rows(cli) -> dict[str, dict]:
    res = cli("models", "list", "--json")
    assert res.exit_code == 0, res.output
    return {r["version"]: r for r in json.loads(res.output)}


def _write_handover(home: Path, run_id: str, model_uri: str) -> StatePaths:
    """train/evaluate/features records of a strategy far beyond luck (per-bar Sharpe 0.3)."""
    paths = StatePaths(home)
    index = pd.date_range("2024-01-01", periods=N_BARS, freq="h", tz="UTC")
    rng = np.random.default_rng(3)
    returns = pd.DataFrame({"strategy": rng.normal(0.003, 0.01, N_BARS), "flat": np.zeros(N_BARS),
                            "buy_and_hold": rng.normal(0.0, 0.01, N_BARS),
                            "rule_rsi_macd": rng.normal(-0.0002, 0.01, N_BARS)}, index=index)
    returns.to_parquet(paths.evaluation / "holdout_returns.parquet")
    evaluation = {name: {"trades": 120, "max_drawdown": 0.05, "sharpe": 1.0} for name in returns}
    (paths.evaluation / "evaluation.json").write_text(json.dumps(evaluation))
    (paths.models / "train.json").write_text(json.dumps({
        "run_id": run_id, "model_uri": model_uri, "feature_set_hash": FEATURE_SET,
        "holdout_start": str(index[0]), "holdout_end": str(index[-1])}))
    (paths.reports / "features.json").write_text(json.dumps({"features": {
        "feature_set_hash": FEATURE_SET, "point_in_time": {"rows_checked": 9000, "lookahead_cuts": 20,
                                                           "lookahead_violations": 0, "recursive_violations": 0}}}))
    return paths


def test_manual_mode_leaves_the_champion_and_marks_the_passing_version_pending(store, cli):
    from training.stages import promote_stage

    paths = _write_handover(store[0], store[1], store[2])
    params = load_params(cli.params_file, {"gates": {"mode": "manual", "bootstrap_samples": 200}})
    out = promote_stage(params, paths)["registry"]
    assert out["reasons"] == [] and all(g["passed"] for g in out["gates"])  # the gates passed ...
    assert not out["promoted"] and out["alias"] == "challenger"             # ... and nothing moved
    assert out["approval"] == "pending" and out["next_step"] == f"qt models approve {out['version']} --by NAME"
    assert cli.registry.champion_version() is None
    assert cli.registry.challenger_version() == out["version"]
    assert cli.registry.version_tags(out["version"])["approval"] == "pending"
    assert cli.registry.client.get_run(store[1]).data.tags["stage"] == "awaiting_approval"

    res = cli("models", "approve", out["version"], "--by", "alice")
    assert res.exit_code == 0, res.output
    assert cli.registry.champion_version() == out["version"]
    row = _rows(cli)[out["version"]]
    assert row["approval"].startswith("approved by alice") and row["gates"] == "passed"


def test_auto_mode_promotes_and_records_the_champion_it_replaced(store, cli, monkeypatch):
    import training.stages as stages

    first = _register(store, cli.registry, gates_passed=True)
    cli.registry.set_champion(first, {"approval": "auto"})
    paths = _write_handover(store[0], store[1], store[2])
    params = load_params(cli.params_file, {"gates": {"mode": "auto", "bootstrap_samples": 200}})
    # re-evaluating the champion needs a trained model and candles (tests/cli/test_backtest.py
    # covers model_predictions); here only the alias and its history matter
    monkeypatch.setattr(stages, "_reevaluate_champion", lambda *a, **k: ({"version": first}, None))
    out = stages.promote_stage(params, paths)["registry"]
    assert out["promoted"] and out["approval"] == "auto"
    assert cli.registry.champion_version() == out["version"]
    assert cli.registry.version_tags(out["version"])["previous_champion"] == first


def test_approving_a_version_with_failed_gates_is_refused_in_one_line(store, cli):
    passed = _register(store, cli.registry, gates_passed=True)
    cli.registry.set_champion(passed, {"approval": "auto"})
    failed = _register(store, cli.registry, gates_passed=False)
    e = {**os.environ, "QT_HOME": str(store[0])}
    e.pop("QT_PARAMS", None)
    res = subprocess.run([QT, "models", "approve", failed, "--by", "bob", "--params", str(cli.params_file)],
                         capture_output=True, text=True, env=e, timeout=120)
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "deflated_sharpe" in errors[0] and "--force" in errors[0], res.stderr
    assert "Traceback" not in res.stderr
    assert cli.registry.champion_version() == passed
    assert "approved_by" not in cli.registry.version_tags(failed)


def test_force_approves_and_records_the_override_then_rollback_restores(store, cli):
    first = _register(store, cli.registry, gates_passed=True)
    assert cli("models", "approve", first, "--by", "alice").exit_code == 0
    failed = _register(store, cli.registry, gates_passed=False)

    res = cli("models", "approve", failed, "--by", "bob", "--force")
    assert res.exit_code == 0, res.output
    tags = cli.registry.version_tags(failed)
    assert cli.registry.champion_version() == failed
    assert tags["approved_by"] == "bob" and tags["approval"] == "forced"
    assert "deflated_sharpe" in tags["approval_override"] and tags["previous_champion"] == first
    assert "FORCED" in _rows(cli)[failed]["approval"]

    res = cli("models", "rollback", "--by", "carol")
    assert res.exit_code == 0, res.output
    assert cli.registry.champion_version() == first
    assert cli.registry.version_tags(first)["restored_by"] == "carol"
    assert cli.registry.version_tags(failed)["rolled_back_by"] == "carol"


def test_rollback_walks_the_history_back_and_stops_when_none_is_recorded(store, cli):
    versions = [_register(store, cli.registry, gates_passed=True) for _ in range(3)]
    for v in versions:
        assert cli("models", "approve", v, "--by", "alice").exit_code == 0
    assert cli("models", "rollback", "--by", "dan").exit_code == 0
    assert cli.registry.champion_version() == versions[1]
    assert cli("models", "rollback", "--by", "dan").exit_code == 0
    assert cli.registry.champion_version() == versions[0]

    res = cli("models", "rollback", "--by", "dan")  # the first champion replaced nothing
    assert res.exit_code != 0 and "no previous champion is recorded" in str(res.exception)
    assert cli.registry.champion_version() == versions[0]


def test_list_shows_aliases_gates_approval_and_holdout_metrics(store, cli):
    good = _register(store, cli.registry, gates_passed=True)
    bad = _register(store, cli.registry, gates_passed=False)
    cli.registry.set_version_tags(bad, {"approval": "pending"})
    rows = _rows(cli)
    assert list(rows) == [good, bad]
    assert rows[good]["gates"] == "passed" and rows[bad]["gates"] == "FAILED: deflated_sharpe"
    assert rows[bad]["aliases"] == [CHALLENGER] and rows[good]["aliases"] == []
    assert rows[good]["sharpe"] == 2.5 and rows[good]["trades"] == 40 and rows[good]["max_dd"] == 0.04
    table = cli("models", "list")
    assert table.exit_code == 0 and "FAILED: deflated_sharpe" in table.output.replace("\n", "")


def test_champion_set_in_the_mlflow_ui_is_shown_as_such(store, cli):
    version = _register(store, cli.registry, gates_passed=True)
    cli.registry.client.set_registered_model_alias(cli.registry.model_name, CHAMPION, version)  # the UI's call
    row = _rows(cli)[version]
    assert CHAMPION in row["aliases"]
    assert row["approval"] == "approved in MLflow UI (no tag)"


def test_approving_an_unknown_version_names_the_registered_ones(store, cli):
    version = _register(store, cli.registry, gates_passed=True)
    res = cli("models", "approve", "99", "--by", "alice")
    assert res.exit_code != 0
    assert "no version '99'" in str(res.exception) and version in str(res.exception)


def test_list_shows_the_deflated_sharpe_trials_and_where_they_come_from(store, cli):
    from training.stages import promote_stage

    paths = _write_handover(store[0], store[1], store[2])
    params = load_params(cli.params_file, {"gates": {"bootstrap_samples": 200}})
    out = promote_stage(params, paths)["registry"]
    n = out["n_trials"]
    assert out["trials"]["ledger"] == str(paths.trials_ledger) and out["trials"]["by_origin"].get("promote")
    table = cli("models", "list")
    assert table.exit_code == 0, table.output
    text = table.output.replace("\n", "")
    assert f"trials N={n}" in text and str(paths.trials_ledger) in text
    assert f"{out['trials']['by_origin']['promote']} promote" in text
