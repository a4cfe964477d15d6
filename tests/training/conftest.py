"""Small synthetic state directories for the training tests (real lake, real feature store)."""

from __future__ import annotations

from pathlib import Path

from features.compute import compute_features
from features.labels import make_labels
from features.store import write_features, write_labels
from qt.config import Params, load_params
from qt.lake import write_candles
from qt.paths import StatePaths
from qt.synthetic import generate_market

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
STRONG_SIGNAL = 0.4  # planted momentum drift: a model that learns it must pass the gates
# Small trees and few folds keep the suite fast; the logic under test is the same as the defaults'.
FAST_TRAIN = {
    "folds": 3,
    "n_jobs": 2,
    "xgboost": {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.8},
    "lightgbm": {"n_estimators": 60, "num_leaves": 7, "learning_rate": 0.1, "subsample": 0.8},
}


def make_params(signal_strength: float, bars: int = 2000, **sections) -> Params:
    overrides = {"data": {"symbols": SYMBOLS}, "synthetic": {"bars": bars, "signal_strength": signal_strength},
                 "train": dict(FAST_TRAIN), "gates": {"bootstrap_samples": 300}}
    for key, value in sections.items():
        overrides[key] = {**overrides.get(key, {}), **value}
    return load_params(overrides=overrides)


def build_state(home: Path, params: Params, seed: int) -> StatePaths:
    """Synthetic candles -> raw lake -> features + labels in the store, as the features stage does."""
    paths = StatePaths(Path(home)).ensure()
    candles = generate_market(params.data.symbols, params.data.timeframe, params.synthetic, seed)
    for symbol, part in candles.groupby("symbol"):
        write_candles(paths.raw, symbol, params.data.timeframe, part)
    write_features(compute_features(candles, params.features), paths.features)
    write_labels(make_labels(candles, params.labels, params.costs), paths.features)
    return paths
