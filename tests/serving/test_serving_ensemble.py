"""The served champion is the real trained ensemble, and it decides as the backtest did.

Trains a small ensemble (``training.train.train_models``) on a synthetic lake, logs,
registers and promotes it through ``training.registry.ModelRegistry``, serves it
with the real ``bentoml serve``, and checks that ``/signals`` at holdout bars
gives the same prob_up/expected_return as the training run's own holdout
predictions (principle 5: the code that decides live is the code that was tested).
Service features use a ``history_bars`` window instead of the full history; the
warm-up makes that difference negligible (< 1e-6), which this test also pins. The ensemble
holds a (tiny) N-HiTS member, so the service must also build its return window.
"""

from __future__ import annotations

import httpx
import pandas as pd
import pytest
import yaml

from executor.signals import action_from_probability
from features.compute import compute_features, feature_set_hash
from features.labels import make_labels
from qt.config import SyntheticParams, load_params
from data.lake import write_candles
from qt.paths import StatePaths
from data.synthetic import generate_market
from serving.launcher import ServiceProcess

pytestmark = pytest.mark.slow

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


@pytest.fixture(scope="module")
def served_ensemble(tmp_path_factory):
    from training.registry import ModelRegistry
    from training.train import train_models

    home = tmp_path_factory.mktemp("qt_home_ensemble")
    paths = StatePaths(home).ensure()
    # a tiny N-HiTS member too: the served ensemble then needs its return window (seq_ret_*) built
    # by the service exactly as training built it
    overrides = {"data": {"symbols": SYMBOLS, "timeframe": "1h"},
                 "train": {"folds": 2, "xgboost": {"n_estimators": 30, "max_depth": 3, "learning_rate": 0.1},
                           "lightgbm": {"n_estimators": 30, "num_leaves": 7, "learning_rate": 0.1},
                           "members": ["xgboost", "lightgbm", "nhits"], "sequence_length": 16,
                           "nhits": {"max_steps": 5, "batch_size": 8, "windows_batch_size": 64,
                                     "mlp_units": [[16, 16], [16, 16], [16, 16]]}}}
    params_file = home / "params.yaml"
    params_file.write_text(yaml.safe_dump(overrides))
    params = load_params(params_file)
    candles = generate_market(SYMBOLS, "1h", SyntheticParams(bars=1500, signal_strength=0.3), seed=5)
    for sym, g in candles.groupby("symbol"):
        write_candles(paths.raw, sym, "1h", g)
    result = train_models(compute_features(candles, params.features),
                          make_labels(candles, params.labels, params.costs), params)
    registry = ModelRegistry(paths.tracking_uri, params.train.model_name, artifact_location=paths.mlflow_artifacts)
    logged = registry.log_training_run(result, params, feature_set_hash=feature_set_hash(params.features),
                                       symbols=SYMBOLS)
    version = registry.register_version(logged["run_id"], model_uri=logged["model_uri"])
    registry.promote(version)
    with ServiceProcess(paths, params_path=params_file, extra_env={"QT_LAKE": str(paths.raw)}) as svc:
        svc.wait_ready(120)
        yield svc, params, result, version


def test_served_ensemble_reproduces_the_training_holdout_predictions(served_ensemble):
    svc, params, result, version = served_ensemble
    preds = result.holdout_predictions.set_index(["symbol", "timestamp"])
    bars = sorted(result.holdout_predictions["timestamp"].unique())
    for bar in (bars[0], bars[len(bars) // 2], bars[-1]):
        as_of = pd.Timestamp(bar).strftime("%Y-%m-%dT%H:%M:%SZ")
        resp = httpx.post(svc.url + "/signals", json={"symbols": SYMBOLS, "as_of": as_of}, timeout=30)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["model_version"] == version
        for sig in body["signals"]:
            want = preds.loc[(sig["symbol"], pd.Timestamp(bar))]
            assert sig["feature_timestamp"] == as_of
            assert sig["confidence"] == pytest.approx(want["prob_up"], abs=1e-6)
            assert sig["expected_return"] == pytest.approx(want["expected_return"], abs=1e-6)
            assert sig["action"] == action_from_probability(sig["confidence"], params.signal)


def test_metadata_reports_the_trained_range_and_feature_set(served_ensemble):
    svc, params, result, version = served_ensemble
    md = httpx.get(svc.url + "/metadata", timeout=10).json()
    assert md["model_version"] == version
    assert md["sequence_length"] == 16
    # the return window, then N-HiTS's exogenous windows (train.sequence_exog), each newest first
    windows = [f"seq_ret_{k}" for k in range(16)] + [f"seq_{c}_{k}" for c in md["sequence_exog"] for k in range(16)]
    assert md["sequence_exog"] == list(params.train.sequence_exog)
    assert md["feature_columns"][-len(windows):] == windows
    assert md["feature_set_hash"] == feature_set_hash(params.features)
    assert pd.Timestamp(md["train_start"]) == result.train_range[0]
    assert pd.Timestamp(md["train_end"]) == result.train_range[1]
    assert md["trained_at"] == result.trained_at
