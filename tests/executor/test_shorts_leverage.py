"""Shorts and leverage through the one loop (issue 16), worked out by hand from the candles.

Hand-made perpetual candles and signals go through ``run_backtest`` (the paper broker, the core,
the RiskEngine). Every expected number is computed here from the candles and the declared costs.
"""

from __future__ import annotations

import pandas as pd
import pytest

from executor.backtest import run_backtest
from executor.core import SELL_WHILE_FLAT
from qt.errors import ConfigError

from tests.executor.exec_support import candles_from_rows, params, signals_frame, ts

SLIP = 5 / 10_000
FEE = 0.001
PERP = "BTC/USDT:USDT"
FLAT = (100.0, 100.5, 99.5, 100.0)


def _funding(symbols, bars: int, rate: float = 0.0) -> pd.DataFrame:
    """A funding event every 8 hours from T0 (the schedule every perp backtest needs)."""
    rows = [(s, ts(i), rate) for s in symbols for i in range(0, bars + 8, 8)]
    return pd.DataFrame(rows, columns=["symbol", "timestamp", "funding_rate"])


def _params(**risk):
    base = {"stop_loss_pct": 0.02, "take_profit_pct": 0.04, "position_fraction": 0.1, "max_holding_bars": 24,
            "exit_on_signal_flip": False, "allow_short": True, "max_gross_exposure": 10.0,
            "max_position_notional_usdt": 1e9}
    return params(data={"symbols": [PERP]}, costs={"slippage_bps": SLIP * 10_000, "fee_rate": FEE},
                  risk={**base, **risk})


def test_short_opens_on_sell_and_its_stop_loss_above_fires_with_pnl_by_hand():
    rows = {PERP: [FLAT, FLAT, (100.5, 102.5, 100.2, 102.0), FLAT]}  # bar 2's high 102.5 crosses the stop
    bt = run_backtest(candles_from_rows(rows), signals_frame({PERP: ["sell", "hold", "hold"]}), _params(),
                      funding=_funding([PERP], 4), close_at_end=False)
    entry, exit_ = bt.fills.iloc[0], bt.fills.iloc[1]
    price_in = 100.0 * (1 - SLIP)  # a sell fills below the open
    assert (entry["side"], entry["purpose"], entry["reason"]) == ("sell", "entry", "signal_sell")
    assert entry["price"] == pytest.approx(price_in) and entry["notional_usdt"] == pytest.approx(1_000.0)
    stop = price_in * 1.02  # above the entry for a short
    assert (exit_["side"], exit_["reason"], exit_["timestamp"]) == ("buy", "stop_loss", ts(2))
    assert exit_["price"] == pytest.approx(stop * (1 + SLIP))  # a buy pays the slippage upwards
    qty = 1_000.0 / price_in
    pnl = qty * (price_in - exit_["price"]) - 1_000.0 * FEE - qty * exit_["price"] * FEE
    trade = bt.trades.iloc[0]
    assert trade["exit_reason"] == "stop_loss"
    assert trade["pnl_usdt"] == pytest.approx(pnl, rel=1e-9)
    assert bt.equity.iloc[-1] == pytest.approx(10_000.0 + pnl, rel=1e-9)


def test_short_take_profit_is_reached_falling():
    rows = {PERP: [FLAT, FLAT, (99.0, 99.5, 95.0, 95.5), FLAT]}  # low 95 reaches 100 x (1 - slip) x 0.96
    bt = run_backtest(candles_from_rows(rows), signals_frame({PERP: ["sell", "hold", "hold"]}), _params(),
                      funding=_funding([PERP], 4), close_at_end=False)
    exit_ = bt.fills.iloc[1]
    take = 100.0 * (1 - SLIP) * 0.96
    assert (exit_["side"], exit_["reason"]) == ("buy", "take_profit")
    assert exit_["price"] == pytest.approx(take * (1 + SLIP))
    assert bt.trades.iloc[0]["pnl_usdt"] > 0


def test_short_is_never_opened_on_spot_and_allow_short_with_a_spot_symbol_is_a_config_error():
    spot = "BTC/USDT"
    p = params(risk={"allow_short": False})
    bt = run_backtest(candles_from_rows({spot: [FLAT] * 4}), signals_frame({spot: ["sell"] * 3}), p)
    assert bt.fills.empty
    assert set(bt.decisions["reason"]) == {SELL_WHILE_FLAT}
    with pytest.raises(ConfigError, match="spot cannot be shorted"):
        params(data={"symbols": [spot]}, risk={"allow_short": True})


def test_short_receives_funding_when_the_rate_is_positive_and_a_long_pays_it():
    rows = {PERP: [FLAT] * 12, "ETH/USDT:USDT": [FLAT] * 12}
    sigs = signals_frame({PERP: ["sell"] + ["hold"] * 10, "ETH/USDT:USDT": ["buy"] + ["hold"] * 10})
    p = params(data={"symbols": [PERP, "ETH/USDT:USDT"]}, costs={"slippage_bps": 0.0, "fee_rate": 0.0},
               risk={"allow_short": True, "position_fraction": 0.1, "exit_on_signal_flip": False,
                     "stop_loss_pct": 0.02, "take_profit_pct": 0.04})
    bt = run_backtest(candles_from_rows(rows), sigs, p, funding=_funding([PERP, "ETH/USDT:USDT"], 12, 0.001),
                      close_at_end=True)
    paid = bt.funding.groupby("symbol")["amount_usdt"].sum()
    # one event at 08:00 while both are open (entered at the 01:00 open), on 1 000 USDT of notional
    assert paid[PERP] == pytest.approx(-0.001 * 1_000.0)  # the short receives
    assert paid["ETH/USDT:USDT"] == pytest.approx(0.001 * 1_000.0)  # the long pays
    trades = bt.trades.set_index("symbol")
    assert trades.loc[PERP, "pnl_usdt"] == pytest.approx(1.0) and trades.loc["ETH/USDT:USDT", "pnl_usdt"] == \
        pytest.approx(-1.0)


def test_leverage_makes_the_notional_margin_times_leverage_and_overrides_per_symbol():
    rows = {PERP: [FLAT] * 4, "ETH/USDT:USDT": [FLAT] * 4}
    sigs = signals_frame({PERP: ["buy", "hold", "hold"], "ETH/USDT:USDT": ["sell", "hold", "hold"]})
    p = params(data={"symbols": [PERP, "ETH/USDT:USDT"]}, costs={"slippage_bps": 0.0, "fee_rate": FEE},
               risk={"allow_short": True, "position_fraction": 0.1, "leverage": 5,
                     "leverage_by_symbol": {"ETH/USDT:USDT": 3}, "max_gross_exposure": 10.0,
                     "max_position_notional_usdt": 1e9, "stop_loss_pct": 0.02, "take_profit_pct": 0.04})
    bt = run_backtest(candles_from_rows(rows), sigs, p, funding=_funding([PERP, "ETH/USDT:USDT"], 4),
                      close_at_end=False)
    entries = bt.fills[bt.fills["purpose"] == "entry"].set_index("symbol")
    assert entries.loc[PERP, "notional_usdt"] == pytest.approx(0.1 * 10_000 * 5)
    # both decided at the same close, from the same equity
    assert entries.loc["ETH/USDT:USDT", "notional_usdt"] == pytest.approx(0.1 * 10_000 * 3)
    assert (entries.loc[PERP, "side"], entries.loc["ETH/USDT:USDT", "side"]) == ("buy", "sell")
