"""The sequence members (training.deep): N-HiTS / PatchTST as deterministic, picklable P(up) models.

The networks are tiny and trained for a few dozen steps: these tests specify the plumbing
(same forecast as neuralforecast's own predict, determinism, pickling, calibration) and that
the model picks up a planted signal and nothing from noise - not the production sizes.
"""

from __future__ import annotations

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression

from features.sequence import SOURCE_COLUMN, add_return_windows, all_window_columns, window_columns
from qt.config import SyntheticParams, TrainParams
from qt.errors import ConfigError, DataError
from data.synthetic import generate_market
from training.deep import SequenceForecaster, fit_logistic

pytestmark = pytest.mark.slow

pytest.importorskip("neuralforecast")

HORIZON = 4
INPUT = 16
TINY = {
    "nhits": {"max_steps": 25, "mlp_units": [[16, 16]] * 3, "windows_batch_size": 128, "batch_size": 2},
    "patchtst": {"max_steps": 25, "hidden_size": 16, "n_heads": 2, "linear_hidden_size": 32, "encoder_layers": 1,
                 "patch_len": 8, "stride": 4, "windows_batch_size": 128, "batch_size": 2},
}
KINDS = list(TINY)


def _rows(bars: int, strength: float, input_size: int, seed: int) -> pd.DataFrame:
    """Feature-like rows of a synthetic market: logret_1, its window, and the label's forward return."""
    candles = generate_market(["BTC/USDT", "ETH/USDT"], "1h", SyntheticParams(bars=bars, signal_strength=strength),
                              seed=seed).sort_values(["symbol", "timestamp"], kind="stable")
    close = candles.groupby("symbol")["close"]
    candles[SOURCE_COLUMN] = np.log(candles["close"] / close.shift(1))
    candles["fwd_return"] = np.log(close.shift(-HORIZON) / candles["close"])
    rows = add_return_windows(candles.dropna(subset=[SOURCE_COLUMN]), input_size)
    return rows.dropna(subset=[*window_columns(input_size), "fwd_return"]).reset_index(drop=True)


def _fit(kind: str, rows: pd.DataFrame, input_size: int = INPUT, hparams: dict | None = None,
         seed: int = 1) -> SequenceForecaster:
    model = SequenceForecaster(kind, HORIZON, input_size, hparams or TINY[kind], seed=seed, n_jobs=2)
    return model.fit(rows, (rows["fwd_return"] > 0).to_numpy())


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return _rows(bars=1200, strength=0.4, input_size=INPUT, seed=5)


@pytest.fixture(scope="module")
def fitted(rows) -> dict:
    """Each kind fitted once; the NeuralForecast object its fit used is captured for comparison."""
    from neuralforecast import NeuralForecast

    captured: dict = {}
    original_fit = NeuralForecast.fit

    def spy(self, *args, **kwargs):
        captured["nf"] = self
        return original_fit(self, *args, **kwargs)

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(NeuralForecast, "fit", spy)
        for kind in KINDS:
            model = _fit(kind, rows.sample(frac=1.0, random_state=2))  # order must not matter
            out[kind] = (model, captured.pop("nf"))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_forecast_sum_equals_neuralforecast_predict(kind, rows, fitted):
    """A row's window through the module = NeuralForecast.predict's h-step forecast, summed."""
    model, nf = fitted[kind]
    library = nf.predict()  # forecasts after each symbol's last training row, standardised units
    column = [c for c in library.columns if c not in ("unique_id", "ds")][0]
    expected = library.groupby("unique_id")[column].apply(lambda s: s.to_numpy(np.float64).sum()) * model.scale_
    last = rows.sort_values("timestamp").groupby("symbol").tail(1).set_index("symbol")
    got = model.forecast_sum(last[window_columns(INPUT)].to_numpy())
    np.testing.assert_allclose(got, expected.loc[last.index].to_numpy(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_two_fits_give_bit_identical_predictions(kind, rows, fitted):
    x = rows[window_columns(INPUT)].to_numpy()
    again = _fit(kind, rows)
    assert np.array_equal(again.predict_proba(x), fitted[kind][0].predict_proba(x))


@pytest.mark.parametrize("kind", KINDS)
def test_pickled_member_predicts_identically(kind, rows, fitted):
    model = fitted[kind][0]
    x = rows[window_columns(INPUT)].to_numpy()
    restored = cloudpickle.loads(cloudpickle.dumps(model))
    assert np.array_equal(restored.predict_proba(x), model.predict_proba(x))


@pytest.mark.parametrize("kind", KINDS)
def test_predict_proba_is_a_calibrated_map_of_the_forecast(kind, rows, fitted):
    model = fitted[kind][0]
    x = rows[window_columns(INPUT)].to_numpy()
    proba = model.predict_proba(x)
    assert proba.shape == (len(x), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    a, b = model.calibration_
    np.testing.assert_allclose(proba[:, 1], 1.0 / (1.0 + np.exp(-(a + b * model.forecast_sum(x)))), rtol=1e-12)
    assert model.feature_importances_ is None  # the ensemble's importance table skips it


@pytest.mark.parametrize("kind", KINDS)
def test_learns_a_planted_signal_and_nothing_from_noise(kind):
    """Spearman IC of the forecast sum with the realised forward return, on later unseen bars."""
    hparams = {**dict(getattr(TrainParams(), kind)), "max_steps": 60, "batch_size": 2}
    ics = {}
    for strength in (0.4, 0.0):
        data = _rows(bars=3000, strength=strength, input_size=32, seed=3)
        cut = data["timestamp"].quantile(0.7)
        train, test = data[data["timestamp"] < cut], data[data["timestamp"] >= cut]
        model = _fit(kind, train, input_size=32, hparams=hparams)
        z = model.forecast_sum(test[window_columns(32)].to_numpy())
        ics[strength] = spearmanr(z, test["fwd_return"]).statistic
    assert ics[0.4] > 0.2, ics
    assert abs(ics[0.0]) < 0.12, ics  # measured: |IC| <= 0.07 on noise, >= 0.35 with the signal


EXOG = ("vol_8",)


@pytest.fixture(scope="module")
def exog_fitted():
    """N-HiTS with a historic exogenous series (a rolling volatility), fitted once, with the
    NeuralForecast object its fit used."""
    from neuralforecast import NeuralForecast

    data = _rows(bars=1200, strength=0.4, input_size=1, seed=5).drop(columns=window_columns(1))
    data["vol_8"] = data.groupby("symbol")[SOURCE_COLUMN].transform(lambda r: r.rolling(8).std())
    data = add_return_windows(data.dropna(subset=["vol_8"]), INPUT, exog=EXOG)
    data = data.dropna(subset=all_window_columns(INPUT, EXOG)).reset_index(drop=True)
    captured: dict = {}
    original_fit = NeuralForecast.fit

    def spy(self, *args, **kwargs):
        captured["nf"] = self
        return original_fit(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(NeuralForecast, "fit", spy)
        model = SequenceForecaster("nhits", HORIZON, INPUT, TINY["nhits"], seed=1, n_jobs=2, exog=EXOG)
        model.fit(data, (data["fwd_return"] > 0).to_numpy())
    return model, captured["nf"], data


def test_nhits_with_exogenous_input_equals_neuralforecast_predict(exog_fitted):
    model, nf, data = exog_fitted
    assert list(nf.models[0].hist_exog_list) == list(EXOG)
    library = nf.predict()
    column = [c for c in library.columns if c not in ("unique_id", "ds")][0]
    expected = library.groupby("unique_id")[column].apply(lambda s: s.to_numpy(np.float64).sum()) * model.scale_
    last = data.sort_values("timestamp").groupby("symbol").tail(1).set_index("symbol")
    got = model.forecast_sum(last[model.input_columns].to_numpy())
    np.testing.assert_allclose(got, expected.loc[last.index].to_numpy(), rtol=1e-5, atol=1e-9)


def test_the_exogenous_window_changes_the_forecast_and_survives_pickling(exog_fitted):
    model, _, data = exog_fitted
    x = data[model.input_columns].to_numpy()[:500]
    shifted = x.copy()
    shifted[:, INPUT:] *= 3.0  # a different volatility regime, same returns
    assert not np.allclose(model.forecast_sum(x), model.forecast_sum(shifted))
    restored = cloudpickle.loads(cloudpickle.dumps(model))
    assert np.array_equal(restored.predict_proba(x), model.predict_proba(x))
    with pytest.raises(DataError, match="windows must be"):
        model.forecast_sum(x[:, :INPUT])  # the return window alone is not this model's input


def test_patchtst_refuses_exogenous_inputs():
    with pytest.raises(ConfigError, match="no exogenous"):
        SequenceForecaster("patchtst", HORIZON, INPUT, TINY["patchtst"], seed=1, n_jobs=2, exog=("vol_8",))


def test_logistic_calibration_matches_an_unpenalised_logistic_regression():
    rng = np.random.default_rng(0)
    z = rng.normal(0.001, 0.01, 20_000)
    y = (rng.random(len(z)) < 1.0 / (1.0 + np.exp(-(0.2 + 60.0 * z)))).astype(int)
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=1000).fit(z[:, None], y)
    a, b = fit_logistic(z, y)
    np.testing.assert_allclose([a, b], [reference.intercept_[0], reference.coef_[0, 0]], rtol=1e-5)


def test_constant_forecast_gives_the_base_rate():
    a, b = fit_logistic(np.zeros(8), np.array([1, 1, 1, 0, 0, 0, 0, 0]))
    assert b == 0.0
    assert a == pytest.approx(np.log(3 / 5))


def test_bad_windows_are_refused_with_one_line(fitted):
    model = fitted["nhits"][0]
    window = np.zeros((2, INPUT))
    window[1, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        model.predict_proba(window)
    with pytest.raises(DataError, match=rf"\[rows, {INPUT}\]"):
        model.predict_proba(np.zeros((2, INPUT + 1)))


def test_unknown_kind_or_hyper_parameter_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown"):
        SequenceForecaster("lstm", HORIZON, INPUT, {}, seed=1, n_jobs=1)
    with pytest.raises(ConfigError, match="hidden_sise"):
        SequenceForecaster("patchtst", HORIZON, INPUT, {"hidden_sise": 8}, seed=1, n_jobs=1)
    with pytest.raises(ValidationError, match="train.nhits has unknown hyper-parameter"):
        TrainParams(nhits={"mlp_unit": [[8, 8]]})
    with pytest.raises(ValidationError, match="twice"):
        TrainParams(members=["nhits", "nhits"])
