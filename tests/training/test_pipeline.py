"""Train -> evaluate -> promote over a real state directory and a real MLflow sqlite store.

Positive control: a market with a strong planted momentum drift must be learned (holdout
AUC clearly above 0.5) and promoted. Negative control: a pure-noise market must be refused,
the report naming the failing gates, and the champion alias must not move.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from features.sequence import add_return_windows
from features.store import read_features, read_labels
from training.registry import ModelRegistry, champion_version
from training.stages import evaluate_stage, promote_stage, train_stage
from training.train import train_models

from tests.training.support import STRONG_SIGNAL, build_state, make_params

pytestmark = pytest.mark.slow

REQUIRED_METRICS = {"net_return", "sharpe", "max_drawdown", "trades", "fees"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Strong-signal run (expected champion), then a noise run into the same store."""
    home = tmp_path_factory.mktemp("state")
    out = {}
    for label, strength, seed in (("strong", STRONG_SIGNAL, 7), ("noise", 0.0, 11)):
        params = make_params(strength, data={"source": f"synthetic:{seed}"})
        paths = build_state(home, params, seed)
        train = train_stage(params, paths)
        evaluation = evaluate_stage(params, paths)
        promotion = promote_stage(params, paths)
        out[label] = {
            "params": params, "paths": paths, "train": train, "evaluation": evaluation["evaluation"],
            "registry": promotion["registry"], "train_json": json.loads((paths.models / "train.json").read_text()),
            "predictions": pd.read_parquet(paths.models / "holdout_predictions.parquet"),
            "features": read_features(paths.features), "labels": read_labels(paths.features),
            "champion_after": champion_version(paths.tracking_uri, params.train.model_name),
        }
    return out


def _model(train: dict, name: str) -> dict:
    return next(m for m in train["models"] if m["name"] == name)


def test_positive_control_learns_the_planted_drift(runs):
    strong = runs["strong"]["train"]
    for name in ("xgboost", "lightgbm", "ensemble"):
        m = _model(strong, name)
        assert m["oos"]["auc"] > 0.65, (name, m["oos"])
        assert m["oos"]["ic"] > 0.2
        assert m["cv"]["auc"] > 0.65 and len(m["cv"]["folds"]) == 3
    assert _model(runs["noise"]["train"], "ensemble")["oos"]["auc"] < 0.58


def test_all_four_members_are_trained_scored_and_weighted(runs):
    strong = runs["strong"]["train"]
    for name in ("xgboost", "lightgbm", "nhits", "patchtst"):
        m = _model(strong, name)
        assert len(m["cv"]["folds"]) == 3 and 0.0 <= m["oos"]["auc"] <= 1.0, (name, m)
        assert m["fit_seconds"] > 0
    weights = runs["strong"]["train_json"]["weights"]
    assert set(weights) == {"xgboost", "lightgbm", "nhits", "patchtst"}
    assert sum(weights.values()) == pytest.approx(1.0)


def test_positive_control_passes_every_gate_and_becomes_champion(runs):
    reg = runs["strong"]["registry"]
    assert reg["promoted"], reg["reasons"]
    assert reg["alias"] == "champion" and reg["reasons"] == []
    assert reg["version"] == "1" and reg["previous_champion"] is None
    evaluation = runs["strong"]["evaluation"]
    assert evaluation["strategy"]["sharpe"] > max(evaluation[b]["sharpe"] for b in ("flat", "buy_and_hold",
                                                                                     "rule_rsi_macd"))
    for name in ("strategy", "flat", "buy_and_hold", "rule_rsi_macd"):
        assert REQUIRED_METRICS <= set(evaluation[name])


def test_negative_control_is_refused_and_the_champion_stays(runs):
    reg = runs["noise"]["registry"]
    assert not reg["promoted"]
    assert reg["alias"] == "challenger" and reg["version"] == "2"
    failed = {g["name"] for g in reg["gates"] if not g["passed"]}
    assert failed & {"bootstrap_vs_best_baseline", "deflated_sharpe"}
    assert reg["reasons"] and all(any(r.startswith(name) for name in failed) for r in reg["reasons"])
    # the champion was re-evaluated on the noise holdout and compared too
    assert {"sharpe_vs_champion", "bootstrap_vs_champion"} <= {g["name"] for g in reg["gates"]}
    assert reg["champion_evaluation"]["version"] == "1"
    assert runs["noise"]["champion_after"] == "1"


def test_registry_aliases_and_gate_tags(runs):
    paths, params = runs["noise"]["paths"], runs["noise"]["params"]
    registry = ModelRegistry(paths.tracking_uri, params.train.model_name)
    assert registry.champion_version() == "1"
    assert registry.challenger_version() == "2"
    tags_1, tags_2 = registry.version_tags("1"), registry.version_tags("2")
    assert tags_1["gates_passed"] == "true" and "promoted_at" in tags_1
    assert tags_2["gates_passed"] == "false" and "promoted_at" not in tags_2
    for g in runs["noise"]["registry"]["gates"]:
        assert tags_2[f"gate.{g['name']}"].startswith("pass" if g["passed"] else "FAIL")
    assert registry.count_trials() == 2  # two distinct configurations (signal strengths) trained


def test_training_is_deterministic_for_a_seed(runs):
    strong = runs["strong"]
    again = train_models(strong["features"], strong["labels"], strong["params"])
    pd.testing.assert_frame_equal(again.holdout_predictions.reset_index(drop=True),
                                  strong["predictions"].reset_index(drop=True), check_exact=True)


def test_handover_files_describe_the_run(runs):
    info = runs["strong"]["train_json"]
    for key in ("run_id", "model_uri", "holdout_start", "holdout_end", "train_start", "train_end",
                "feature_set_hash", "data_sha256"):
        assert info[key]
    assert pd.Timestamp(info["train_end"]) < pd.Timestamp(info["holdout_start"])
    pred = runs["strong"]["predictions"]
    assert list(pred.columns)[:4] == ["symbol", "timestamp", "prob_up", "expected_return"]
    assert {"fwd_return", "up"} <= set(pred.columns)  # the calibration plot and the IC read these
    assert pred["timestamp"].min() == pd.Timestamp(info["holdout_start"])
    assert ((pred["prob_up"] >= 0) & (pred["prob_up"] <= 1)).all()
    assert (runs["strong"]["paths"].reports / "holdout_equity.png").stat().st_size > 10_000


def test_registered_challenger_loads_in_a_new_process_and_predicts_identically(runs, tmp_path):
    noise = runs["noise"]
    paths, params = noise["paths"], noise["params"]
    info = noise["train_json"]
    # the sequence members read a window of past returns, built from each symbol's history
    features = add_return_windows(noise["features"], params.train.sequence_length, exog=params.train.sequence_exog)
    columns = [c for c in features.columns if c not in ("symbol", "timestamp")]
    rows = features[features["timestamp"] >= pd.Timestamp(info["holdout_start"])].head(200)
    rows[columns].reset_index(drop=True).to_parquet(tmp_path / "rows.parquet")
    script = textwrap.dedent(f"""
        import sys, mlflow, pandas as pd
        mlflow.set_tracking_uri({paths.tracking_uri!r})
        m = mlflow.pyfunc.load_model("models:/{params.train.model_name}@challenger")
        m.predict(pd.read_parquet({str(tmp_path / 'rows.parquet')!r})).to_parquet({str(tmp_path / 'out.parquet')!r})
        print(m.metadata.metadata["feature_set_hash"])
    """)
    env = {**os.environ, "MLFLOW_TRACKING_URI": "sqlite:////nonexistent/elsewhere.db"}  # the script sets its own
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == info["feature_set_hash"]
    loaded = pd.read_parquet(tmp_path / "out.parquet")
    # the in-memory ensemble of the same run (same seed, same data: deterministic) predicts the same
    again = train_models(noise["features"], noise["labels"], params)
    expected = again.ensemble.predict_frame(rows[columns]).reset_index(drop=True)
    np.testing.assert_array_equal(loaded[["prob_up", "expected_return"]].to_numpy(), expected.to_numpy())


def test_mlflow_run_holds_params_metrics_and_artefacts_a_person_reads(runs):
    from mlflow import MlflowClient

    strong = runs["strong"]
    client = MlflowClient(tracking_uri=strong["paths"].tracking_uri)
    run = client.get_run(strong["train_json"]["run_id"])
    params = run.data.params
    assert params["feature_set_hash"] == strong["train_json"]["feature_set_hash"]
    assert params["config_digest"] == strong["params"].digest()
    assert params["git_sha"] and params["train.folds"] == "3"
    metrics = run.data.metrics
    ensemble_oos = _model(strong["train"], "ensemble")["oos"]
    assert metrics["ensemble_oos_auc"] == pytest.approx(ensemble_oos["auc"])
    assert metrics["holdout_strategy_sharpe"] == pytest.approx(strong["evaluation"]["strategy"]["sharpe"])
    assert "holdout_buy_and_hold_sharpe" in metrics and "holdout_rule_rsi_macd_trades" in metrics
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"feature_importance.csv", "model_card.md", "holdout_equity.png", "promotion.json",
            "feature_importance.png", "calibration.png"} <= artefacts
    card = client.download_artifacts(run.info.run_id, "model_card.md")
    text = open(card).read()
    assert "PROMOTED to champion" in text and "deflated_sharpe" in text and "buy_and_hold" in text
