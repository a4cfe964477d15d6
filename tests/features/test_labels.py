"""make_labels: forward log return over h bars, the up flag and the cost dead zone."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.labels import make_labels
from qt.config import CostParams, LabelParams
from qt.errors import DataError

# round trip = 2 * 0.001 + 2 * 2 bps = 0.0024
COSTS = CostParams(fee_rate=0.001, slippage_bps=2.0)


def _candles(symbol: str, closes: list[float], start: str = "2024-01-01") -> pd.DataFrame:
    ts = pd.date_range(start, periods=len(closes), freq="h", tz="UTC").astype("datetime64[ms, UTC]")
    c = np.asarray(closes, dtype=float)
    return pd.DataFrame({"symbol": symbol, "timestamp": ts, "open": c, "high": c, "low": c, "close": c,
                         "volume": 1.0})


def test_fwd_return_up_and_direction_on_a_hand_built_six_bar_frame():
    candles = _candles("BTC/USDT", [100.0, 200.0, 100.1, 190.0, 100.0, 250.0])
    labels = make_labels(candles, LabelParams(horizon_bars=2), COSTS)
    assert list(labels.columns) == ["symbol", "timestamp", "fwd_return", "up", "direction"]
    # bar t's label is ln(close[t+2] / close[t]); the last 2 bars have none
    assert list(labels["timestamp"]) == list(candles["timestamp"].iloc[:4])
    expected = [math.log(100.1 / 100.0),   # +0.0010: up, inside the 0.0024 dead zone
                math.log(190.0 / 200.0),   # -0.0513: down, beyond it
                math.log(100.0 / 100.1),   # -0.0010: down, inside it
                math.log(250.0 / 190.0)]   # +0.2744: up, beyond it
    np.testing.assert_allclose(labels["fwd_return"], expected, rtol=1e-12)
    assert list(labels["up"]) == [1, 0, 0, 1]
    assert list(labels["direction"]) == [0, -1, 0, 1]


def test_dead_zone_edges_follow_fee_and_slippage():
    # moves of +0.3 % and -0.3 % around a 0.24 % round trip, then with costs removed
    candles = _candles("ETH/USDT", [100.0, 100.3, 100.0, 99.7, 100.0])
    with_costs = make_labels(candles, LabelParams(horizon_bars=1), COSTS)
    assert list(with_costs["direction"]) == [1, -1, -1, 1]
    expensive = make_labels(candles, LabelParams(horizon_bars=1), CostParams(fee_rate=0.002, slippage_bps=0.0))
    assert list(expensive["direction"]) == [0, 0, 0, 0]  # 0.4 % round trip swallows every 0.3 % move
    free = make_labels(candles, LabelParams(horizon_bars=1), CostParams(fee_rate=0.0, slippage_bps=0.0))
    assert list(free["direction"]) == list(np.sign(free["fwd_return"]).astype(int))


def test_flat_price_is_not_up():
    labels = make_labels(_candles("BTC/USDT", [100.0, 100.0, 100.0]), LabelParams(horizon_bars=1), COSTS)
    assert list(labels["up"]) == [0, 0] and list(labels["direction"]) == [0, 0]


def test_last_h_bars_of_every_symbol_are_absent_and_never_cross_symbols():
    a = _candles("AAA/USDT", [10.0, 11.0, 12.0, 13.0, 14.0, 15.0])
    b = _candles("BBB/USDT", [1000.0, 900.0, 800.0, 700.0, 600.0, 500.0])
    labels = make_labels(pd.concat([b, a]), LabelParams(horizon_bars=3), COSTS)
    assert labels.groupby("symbol").size().to_dict() == {"AAA/USDT": 3, "BBB/USDT": 3}
    assert not labels.isna().any().any()
    last_a = labels[labels["symbol"] == "AAA/USDT"].iloc[-1]
    assert last_a["timestamp"] == a["timestamp"].iloc[2]
    assert last_a["fwd_return"] == pytest.approx(math.log(15.0 / 12.0), rel=1e-12)  # AAA's own bar 5
    assert (labels[labels["symbol"] == "AAA/USDT"]["up"] == 1).all()
    assert (labels[labels["symbol"] == "BBB/USDT"]["up"] == 0).all()


def test_symbol_shorter_than_horizon_has_no_labels():
    labels = make_labels(_candles("AAA/USDT", [10.0, 11.0]), LabelParams(horizon_bars=4), COSTS)
    assert labels.empty and list(labels.columns) == ["symbol", "timestamp", "fwd_return", "up", "direction"]


def test_non_positive_close_is_refused():
    with pytest.raises(DataError, match="close"):
        make_labels(_candles("AAA/USDT", [10.0, 0.0, 11.0]), LabelParams(horizon_bars=1), COSTS)
