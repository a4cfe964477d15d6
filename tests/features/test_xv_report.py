"""The arbitrage report's figures on planted two-venue series: a basis excursion above the
round-trip cost is found with its start, end, bars and capturable bps; one just below the cost
is not; a sign flip or a missing bar splits a run; the funding spread compares each Bybit
settlement with Binance's last settled rate, and the monthly rows add up."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.xv_report import (basis_bps, find_opportunities, funding_spread_bps, round_trip_cost_bps,
                                symbol_report)
from qt.config import CostParams

HOUR_MS = 3_600_000
T0 = pd.Timestamp("2024-01-31T18:00:00Z")
COSTS = CostParams(fee_rate=0.0005, slippage_bps=1.0)  # 6 bps a fill -> 24 bps round trip


def _candles(close: np.ndarray, skip: tuple[int, ...] = ()) -> pd.DataFrame:
    ts = pd.date_range(T0, periods=len(close), freq="1h").astype("datetime64[ms, UTC]")
    keep = np.setdiff1d(np.arange(len(close)), skip)
    return pd.DataFrame({"timestamp": ts[keep], "close": close[keep]}).reset_index(drop=True)


def _planted(bps: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    binance = np.full(len(bps), 40_000.0)
    return _candles(binance), _candles(binance * np.exp(np.asarray(bps) / 1e4))


def test_round_trip_cost_is_four_taker_fills():
    assert round_trip_cost_bps(COSTS) == pytest.approx(24.0)
    assert round_trip_cost_bps(CostParams()) == pytest.approx(48.0)  # 10 bps fee + 2 bps slippage, x4


def test_a_planted_excursion_above_cost_is_found_and_one_below_is_not():
    #        0    1    2     3     4     5    6    7     8     9    10
    bps = [1.0, 2.0, 30.0, 41.0, 26.0, 3.0, 0.0, 23.9, 23.0, -1.0, 0.5]
    binance, bybit = _planted(bps)
    basis = basis_bps(binance, bybit)
    np.testing.assert_allclose(basis["basis_bps"], bps, atol=1e-9)
    found = find_opportunities(basis, round_trip_cost_bps(COSTS), HOUR_MS)
    assert found == [{"start": "2024-01-31T20:00:00Z", "end": "2024-01-31T22:00:00Z", "bars": 3,
                      "peak_bps": pytest.approx(41.0), "side": "bybit_rich", "capturable_bps": pytest.approx(17.0)}]


def test_a_sign_flip_or_a_missing_bar_splits_a_run():
    bps = np.array([30.0, -30.0, -35.0, 0.0, 28.0, 29.0, 27.0])
    binance = np.full(len(bps), 100.0)
    # Bybit lacks bar 5: the basis exists only where both venues have the bar
    basis = basis_bps(_candles(binance), _candles(binance * np.exp(bps / 1e4), skip=(5,)))
    assert len(basis) == 6
    runs = find_opportunities(basis, 24.0, HOUR_MS)
    assert [(r["bars"], r["side"]) for r in runs] == [(1, "bybit_rich"), (2, "binance_rich"), (1, "bybit_rich"),
                                                      (1, "bybit_rich")]
    assert runs[1]["peak_bps"] == pytest.approx(35.0) and runs[1]["end"] == "2024-01-31T20:00:00Z"


def test_funding_spread_uses_binances_last_settled_rate():
    ts = lambda hours: pd.DatetimeIndex([T0 + pd.Timedelta(hours=h) for h in hours]).astype("datetime64[ms, UTC]")
    binance = pd.DataFrame({"timestamp": ts([0, 8, 16]), "funding_rate": [1e-4, 2e-4, 3e-4]})
    bybit = pd.DataFrame({"timestamp": ts([-8, 0, 8, 12]), "funding_rate": [9e-4, 1.5e-4, 1e-4, 4e-4]})
    spread = funding_spread_bps(binance, bybit)  # -8 h precedes Binance's first: left out
    np.testing.assert_allclose(spread["spread_bps"], [0.5, -1.0, 2.0])
    assert spread["timestamp"].iloc[0] == T0


def test_symbol_report_months_and_totals():
    bps = [0.0] * 6 + [50.0, 60.0] + [0.0] * 4  # 18:00 Jan 31 .. 05:00 Feb 1; excursion 00:00-01:00 Feb 1
    binance, bybit = _planted(bps)
    events = pd.DataFrame({"timestamp": pd.DatetimeIndex([T0 + pd.Timedelta(hours=h) for h in (-2, 6)])
                           .astype("datetime64[ms, UTC]"), "funding_rate": [1e-4, 1e-4]})
    block = symbol_report(binance, bybit, events, events.assign(funding_rate=2e-4), 24.0, HOUR_MS)
    assert [m["month"] for m in block["months"]] == ["2024-01", "2024-02"]
    jan, feb = block["months"]
    assert jan["basis_bps"]["bars"] == 6 and jan["opportunities"] == 0 and jan["basis_bps"]["max_abs"] < 1e-9
    assert feb["opportunities"] == 1 and feb["capturable_bps"] == pytest.approx(36.0)
    assert feb["basis_bps"]["share_above_cost"] == pytest.approx(2 / 6)
    assert block["opportunity_count"] == 1 and block["capturable_bps_total"] == pytest.approx(36.0)
    assert block["funding_spread"]["mean_bps_per_8h"] == pytest.approx(1.0)
    assert block["funding_spread"]["annualised_pct"] == pytest.approx(1.0 * 3 * 365 / 100)
    assert math.isclose(block["basis_bps"]["median"], 0.0, abs_tol=1e-9)
