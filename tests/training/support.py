"""Small synthetic state directories for the training tests and `qt backtest` (real lake, real feature store)."""

from __future__ import annotations

from pathlib import Path

from qt.config import Params, load_params
from qt.paths import StatePaths

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
STRONG_SIGNAL = 0.4  # planted momentum drift: a model that learns it must pass the gates
# Small trees, tiny sequence networks and few folds keep the suite fast; all four members are
# trained, through the same code as the defaults'.
FAST_TRAIN = {
    "folds": 3,
    "n_jobs": 2,
    "members": ["xgboost", "lightgbm", "nhits", "patchtst"],
    "sequence_length": 16,
    "xgboost": {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.8},
    "lightgbm": {"n_estimators": 60, "num_leaves": 7, "learning_rate": 0.1, "subsample": 0.8},
    "nhits": {"max_steps": 20, "mlp_units": [[16, 16]] * 3, "windows_batch_size": 128, "batch_size": 2},
    "patchtst": {"max_steps": 20, "hidden_size": 16, "n_heads": 2, "linear_hidden_size": 32, "encoder_layers": 1,
                 "patch_len": 8, "stride": 4, "windows_batch_size": 128, "batch_size": 2},
}


def make_params(signal_strength: float, bars: int = 2000, **sections) -> Params:
    overrides = {"data": {"symbols": SYMBOLS}, "synthetic": {"bars": bars, "signal_strength": signal_strength},
                 "train": dict(FAST_TRAIN), "gates": {"bootstrap_samples": 300}}
    for key, value in sections.items():
        overrides[key] = {**overrides.get(key, {}), **value}
    return load_params(overrides=overrides)


def build_state(home: Path, params: Params, seed: int) -> StatePaths:
    """Synthetic candles -> raw lake -> validation -> features + labels, through the real stages."""
    from flows import stages as pipeline

    paths = StatePaths(Path(home)).ensure()
    assert params.data.source == f"synthetic:{seed}", "make_params(..., data={'source': 'synthetic:SEED'})"
    for stage in (pipeline.collect, pipeline.validate, pipeline.features):
        stage(params, paths)
    return paths
