"""Real parts for the serving tests: a synthetic lake, a tmp MLflow registry, the toy champion."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from features.compute import feature_columns, feature_set_hash
from qt.config import FeatureParams, SyntheticParams
from data.lake import write_candles
from qt.paths import StatePaths
from data.synthetic import generate_market

TOY_MODEL_FILE = Path(__file__).resolve().parent / "qt_serving_toy_model.py"
EIGHT_SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "ADA/USDT", "DOGE/USDT", "LTC/USDT"]
LAGGING_SYMBOL = "LTC/USDT:USDT"  # a perp whose candles stop LAG_BARS before everyone else's
LAG_BARS = 5


def write_synthetic_lake(paths: StatePaths, timeframe: str = "1h", bars: int = 700, seed: int = 11) -> pd.DataFrame:
    """Eight fresh spot symbols plus one lagging perp, written to ``paths.raw``; returns all candles."""
    candles = generate_market([*EIGHT_SYMBOLS, LAGGING_SYMBOL], timeframe, SyntheticParams(bars=bars), seed)
    for sym, g in candles.groupby("symbol"):
        if sym == LAGGING_SYMBOL:
            g = g.iloc[:-LAG_BARS]
        write_candles(paths.raw, sym, timeframe, g)
    return candles


def init_registry(tracking_uri: str) -> None:
    """Create the sqlite schema before the service opens it (two processes must not migrate at once)."""
    MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).search_registered_models()


def register_toy_champion(paths: StatePaths, model_name: str, k: float, timeframe: str = "1h",
                          feature_params: FeatureParams | None = None, sequence_length: int = 0) -> str:
    """Log the toy model with the contract metadata, register it, point ``champion`` at it.

    ``sequence_length`` > 0 declares a return window (``features.sequence``) among its inputs,
    as an ensemble with sequence members does; the toy model still reads ``logret_4`` only.
    """
    from features.sequence import window_columns

    fp = feature_params or FeatureParams()
    from qt_serving_toy_model import SigmoidMomentumModel

    uri = paths.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("serving-tests")
    exp_id = exp.experiment_id if exp else client.create_experiment(
        "serving-tests", artifact_location=paths.mlflow_artifacts.as_uri())
    metadata = {
        "feature_params": fp.model_dump(mode="json"),
        "feature_columns": feature_columns(fp) + window_columns(sequence_length),
        "sequence_length": sequence_length,
        "feature_set_hash": feature_set_hash(fp),
        "timeframe": timeframe,
        "train_start": "2023-01-01T00:00:00+00:00",
        "train_end": "2023-01-20T00:00:00+00:00",
        "trained_at": "2024-01-01T00:00:00+00:00",
        "data_sha256": "0" * 64,
    }
    with mlflow.start_run(experiment_id=exp_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=SigmoidMomentumModel(k),
                                       code_paths=[str(TOY_MODEL_FILE)], pip_requirements=["mlflow"],
                                       metadata=metadata, registered_model_name=model_name)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(model_name, "champion", version)
    return version


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
