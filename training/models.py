"""The ensemble's members: seeded, thread-capped, deterministic binary classifiers.

Hyper-parameters come from ``params.train.xgboost`` / ``params.train.lightgbm``;
what is set here is what must not vary between runs: the seed, the thread count
(``params.train.n_jobs``, the machines have 2 cores) and the determinism switches.
Same data + same params => bit-identical predictions (tested).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from xgboost import XGBClassifier

from qt.config import Params, TrainParams

_INT_KEYS = {"n_estimators", "max_depth", "num_leaves", "min_child_samples", "subsample_freq",
             "max_bin"}


def _typed(hparams: dict) -> dict:
    """YAML may give ``200.0``; the libraries want ints for counts."""
    return {k: int(v) if k in _INT_KEYS else v for k, v in hparams.items()}


def make_xgboost(train: TrainParams) -> XGBClassifier:
    """XGBoost with the ``hist`` tree method (deterministic on CPU for a fixed thread count)."""
    hp = {"tree_method": "hist", "eval_metric": "logloss", **_typed(train.xgboost)}
    return XGBClassifier(objective="binary:logistic", random_state=train.seed, n_jobs=train.n_jobs, **hp)


def make_lightgbm(train: TrainParams) -> LGBMClassifier:
    """LightGBM with ``deterministic=True`` + row-wise histograms.

    LightGBM ignores ``subsample`` unless ``subsample_freq`` > 0: we set it to 1 when
    a subsample below 1 is asked for, so the config means what it says.
    """
    hp = _typed(train.lightgbm)
    if float(hp.get("subsample", 1.0)) < 1.0:
        hp.setdefault("subsample_freq", 1)
    return LGBMClassifier(objective="binary", random_state=train.seed, n_jobs=train.n_jobs,
                          deterministic=True, force_row_wise=True, verbose=-1, **hp)


MEMBER_BUILDERS: dict[str, Callable[[TrainParams], object]] = {
    "xgboost": make_xgboost,
    "lightgbm": make_lightgbm,
}


SEQUENCE_MEMBERS = ("nhits", "patchtst")  # neuralforecast nets on the return window (training.deep)


def fit_member(name: str, features: np.ndarray, up: np.ndarray, train: TrainParams):
    """A freshly built, fitted member ``name`` (one of ``MEMBER_BUILDERS``)."""
    model = MEMBER_BUILDERS[name](train)
    model.fit(np.asarray(features, dtype=np.float64), np.asarray(up, dtype=np.int64))
    return model


def fit_any_member(name: str, rows: pd.DataFrame, up: np.ndarray, params: Params, columns: list[str],
                   windows=None):
    """A fitted member of any kind: trees on ``rows[columns]``, sequence nets on the rows' windows.

    A sequence member also needs ``symbol``/``timestamp``/``logret_1`` in ``rows``: it trains its
    network on each symbol's return series, then calibrates P(up) on the rows (``training.deep``),
    whose windows are ``rows[columns]`` or, when given, ``windows(positions in rows)``."""
    if name in SEQUENCE_MEMBERS:
        from training.deep import SequenceForecaster

        tp = params.train
        from training.deep import EXOG_KINDS

        net = SequenceForecaster(name, horizon=params.labels.horizon_bars, input_size=tp.sequence_length,
                                 hparams=dict(getattr(tp, name)), seed=tp.seed, n_jobs=tp.n_jobs,
                                 exog=tuple(tp.sequence_exog) if name in EXOG_KINDS else ())
        return net.fit(rows, np.asarray(up, dtype=np.int64), windows=windows)
    return fit_member(name, rows[columns].to_numpy(dtype=np.float64), up, params.train)


def predict_up_probability(model, features: np.ndarray) -> np.ndarray:
    """P(up) from a fitted member as float64 in [0, 1]."""
    return np.asarray(model.predict_proba(np.asarray(features, dtype=np.float64))[:, 1], dtype=np.float64)


def feature_importance(model, n_features: int) -> np.ndarray:
    """Normalised importances (sum 1) so members are comparable in one table."""
    raw = getattr(model, "feature_importances_", None)
    if raw is None:  # a sequence net has no per-feature importance: NaN, not a fake zero
        return np.full(n_features, np.nan)
    imp = np.asarray(raw, dtype=np.float64)
    total = imp.sum()
    return imp / total if total > 0 else imp
