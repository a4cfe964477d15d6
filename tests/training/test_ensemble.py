"""The ensemble combines members per its documented rules and refuses malformed input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from qt.config import TrainParams
from qt.errors import DataError
from training.ensemble import EnsembleModel, fit_convex_weights, fit_return_map
from training.models import fit_member

COLUMNS = ["f_signal", "f_noise"]


def _toy(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"f_signal": rng.normal(size=n), "f_noise": rng.normal(size=n)})
    up = (x["f_signal"] + 0.5 * rng.normal(size=n) > 0).astype(int).to_numpy()
    return x, up


@pytest.fixture(scope="module")
def ensemble() -> EnsembleModel:
    x, up = _toy()
    train = TrainParams(n_jobs=1, xgboost={"n_estimators": 20, "max_depth": 2},
                        lightgbm={"n_estimators": 20, "num_leaves": 4})
    members = {name: fit_member(name, x.to_numpy(), up, train) for name in ("xgboost", "lightgbm")}
    return EnsembleModel(COLUMNS, members, {"xgboost": 0.25, "lightgbm": 0.75}, 0.001, 0.02)


def test_convex_weights_prefer_the_informative_member_and_sum_to_one():
    rng = np.random.default_rng(1)
    up = rng.integers(0, 2, 4000)
    informative = np.where(up == 1, 0.8, 0.2)
    coin = np.full(4000, 0.5)
    w = fit_convex_weights(np.column_stack([coin, informative]), up)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[1] > 0.99


def test_convex_weights_beat_or_match_every_single_member_in_log_loss():
    rng = np.random.default_rng(2)
    up = rng.integers(0, 2, 3000)
    a = np.clip(0.5 + 0.2 * (up - 0.5) + rng.normal(0, 0.15, 3000), 0.01, 0.99)
    b = np.clip(0.5 + 0.2 * (up - 0.5) + rng.normal(0, 0.15, 3000), 0.01, 0.99)
    w = fit_convex_weights(np.column_stack([a, b]), up)
    blended = np.column_stack([a, b]) @ w
    assert log_loss(up, blended) <= min(log_loss(up, a), log_loss(up, b)) + 1e-9
    assert 0.2 < w[0] < 0.8  # two equally good, independent members are both used


def test_return_map_recovers_a_linear_relation():
    p = np.linspace(0.2, 0.8, 50)
    fwd = 0.003 + 0.04 * (p - 0.5)
    intercept, slope = fit_return_map(p, fwd)
    assert intercept == pytest.approx(0.003)
    assert slope == pytest.approx(0.04)


def test_predict_frame_is_the_weighted_member_average_and_the_linear_map(ensemble):
    x, _ = _toy(30, seed=5)
    out = ensemble.predict_frame(x)
    members = ensemble.member_probabilities(x)
    expected_prob = 0.25 * members["xgboost"] + 0.75 * members["lightgbm"]
    np.testing.assert_allclose(out["prob_up"], expected_prob)
    np.testing.assert_allclose(out["expected_return"], 0.001 + 0.02 * (expected_prob - 0.5))
    assert list(out.columns) == ["prob_up", "expected_return"]
    assert out.index.equals(x.index)


def test_pyfunc_predict_equals_predict_frame_and_ignores_extra_columns(ensemble):
    x, _ = _toy(10, seed=6)
    with_keys = x.assign(symbol="BTC/USDT", timestamp=pd.Timestamp("2023-01-01", tz="UTC"))
    pd.testing.assert_frame_equal(ensemble.predict(None, with_keys), ensemble.predict_frame(x))


def test_missing_feature_column_is_a_clear_error(ensemble):
    x, _ = _toy(5)
    with pytest.raises(DataError, match="lacks feature columns \\['f_noise'\\]"):
        ensemble.predict_frame(x.drop(columns=["f_noise"]))


def test_nan_features_are_refused_not_predicted(ensemble):
    x, _ = _toy(5)
    x.loc[3, "f_signal"] = np.nan
    with pytest.raises(DataError, match="NaN/inf.*row 3.*f_signal"):
        ensemble.predict_frame(x)
