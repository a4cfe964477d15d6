"""The service computes the cross-venue features from Bybit's series in the same lake, cut as
materialisation cuts them: a served row equals the stored row of the same bar, a new Bybit
candle changes the next answer (the engine's row cache keys on it), and a lake without Bybit's
series is refused with 422 saying to collect it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.lake import write_candles, write_funding
from data.synthetic import generate_market
from features.compute import warmup_bars
from features.materialise import materialise
from features.store import read_features
from qt.config import FeatureParams, Params, ServingParams, SignalParams, SyntheticParams
from qt.timeframes import timeframe_ms
from serving.candles import CandleCache, FundingCache
from serving.champion import LoadedModel
from serving.engine import SignalEngine
from serving.inference import (RequestRejected, latest_feature_rows, min_history_bars, select_inputs,
                               select_other_venue, select_windows)
from tests.recording_model import recording_model

PERP = "ETH/USDT:USDT"
XV = FeatureParams(xv=True, xv_z=[24])
CANDLES = generate_market([PERP, "ETH/USDT"], "1h", SyntheticParams(bars=1200, start="2023-12-20"), seed=5)
BYBIT = CANDLES[CANDLES["symbol"] == PERP].assign(
    close=lambda f: f["close"] * np.exp(np.random.default_rng(6).normal(0, 4e-4, len(f)))).iloc[:-1]
_EVENTS = pd.date_range("2023-12-20", periods=1200 // 8, freq="8h", tz="UTC").astype("datetime64[ms, UTC]")
FUNDING = pd.DataFrame({"timestamp": _EVENTS, "funding_rate": np.random.default_rng(9).normal(1e-4, 2e-4, len(_EVENTS))})
AS_OF = pd.Timestamp("2024-02-05T13:00:00Z")


def _lake(root: Path, bybit: bool = True) -> Path:
    for sym, part in CANDLES.groupby("symbol"):
        write_candles(root, str(sym), "1h", part.drop(columns="symbol"))
    write_funding(root, PERP, FUNDING)
    if bybit:
        write_candles(root, PERP, "1h", BYBIT.drop(columns="symbol"), venue="bybit")
        write_funding(root, PERP, FUNDING.assign(funding_rate=FUNDING["funding_rate"] * 2), venue="bybit")
    return root


def _serve_rows(lake: Path, symbols: list[str], model: LoadedModel) -> pd.DataFrame:
    cache = CandleCache(lake, "1h")
    warmup = warmup_bars(model.feature_params)
    windows, _ = select_windows(cache, symbols, AS_OF, bars=max(400, min_history_bars(warmup)), warmup_bars=warmup,
                                timeframe_ms=timeframe_ms("1h"), max_staleness_bars=2)
    funding, reference = select_inputs(cache, FundingCache(lake), windows, model.feature_params)
    other = select_other_venue(CandleCache(lake, "1h", venue="bybit"), FundingCache(lake, venue="bybit"), windows,
                               model.feature_params)
    return latest_feature_rows(windows, model, funding, reference, other_venue=other)


def test_served_xv_row_equals_the_materialised_row(tmp_path):
    lake = _lake(tmp_path / "lake")
    materialise(lake, [PERP, "ETH/USDT"], "1h", Params(features=XV.model_dump()), tmp_path / "store",
                bybit_root=lake)
    stored = read_features(tmp_path / "store").set_index(["symbol", "timestamp"])
    served = _serve_rows(lake, [PERP, "ETH/USDT"], recording_model(XV))
    for _, row in served.iterrows():
        want = stored.loc[(row["symbol"], AS_OF)]
        for col in ("xv_basis_log", "xv_funding_spread"):
            assert row[col] == want[col], (row["symbol"], col)
        assert row["xv_basis_z_24"] == pytest.approx(want["xv_basis_z_24"], rel=1e-9, abs=1e-9)
    assert served.set_index("symbol").loc["ETH/USDT", "xv_basis_log"] == 0.0


def test_the_engine_serves_xv_and_a_new_bybit_candle_changes_the_answer(tmp_path):
    lake = _lake(tmp_path)
    engine, model = SignalEngine(tmp_path, ServingParams(history_bars=350, max_staleness_bars=2),
                                 SignalParams()), recording_model(XV)
    last = CANDLES["timestamp"].max()
    engine.signals(model, [PERP], last.strftime("%Y-%m-%dT%H:%M:%SZ"))
    stale = model.pyfunc.inputs[-1]["xv_basis_log"].iat[0]  # Bybit's last bar is missing: carried
    write_candles(lake, PERP, "1h", CANDLES[CANDLES["symbol"] == PERP].drop(columns="symbol").iloc[-1:],
                  venue="bybit")
    engine.signals(model, [PERP], last.strftime("%Y-%m-%dT%H:%M:%SZ"))
    fresh = model.pyfunc.inputs[-1]["xv_basis_log"].iat[0]
    assert fresh == 0.0 and stale != 0.0  # now Bybit's close of that bar equals Binance's


def test_a_lake_without_bybit_series_is_refused_with_422(tmp_path):
    lake = _lake(tmp_path / "lake", bybit=False)
    with pytest.raises(RequestRejected) as err:
        _serve_rows(lake, [PERP], recording_model(XV))
    assert err.value.status == 422 and "qt collect --exchange bybit" in err.value.message
