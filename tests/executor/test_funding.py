"""Funding of perpetuals in backtests and paper replays: by hand, refused when missing, parity, real data."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from executor.backtest import buy_and_hold, run_backtest
from executor.daemon import run_paper_replay
from executor.signals import HttpSignalSource
from executor.signals import FrameSignalSource, signals_from_predictions
from qt.config import SyntheticParams
from qt.errors import DataError
from data.synthetic import generate_market

from tests.support import require_shared_data
from tests.executor.exec_support import FakeSignalService, candles_from_rows, params, signals_frame, ts

F = 0.001  # fee rate
S = 0.001  # slippage (10 bps)
PERP = "AAA/USDT:USDT"
SPOT = "AAA/USDT"
# 26 hourly bars from 2024-01-01 00:00; distinct closes so a wrong mark shows
BARS = [(100.0 + i, 100.0 + i + 0.5, 100.0 + i - 0.5, 100.0 + i + 0.25) for i in range(26)]
RATES = {0: 0.01, 8: 0.01, 16: 0.0003, 24: -0.0001}  # hour -> rate; the 0.01s must never be charged


def _params():
    return params(costs={"fee_rate": F, "slippage_bps": 10.0}, labels={"horizon_bars": 1},
                  risk={"starting_equity_usdt": 10_000.0, "position_fraction": 0.4, "stop_loss_pct": 0.5,
                        "take_profit_pct": 0.5, "max_holding_bars": 16, "cooldown_bars": 0})


def _funding(symbol=PERP, rates=RATES):
    return pd.DataFrame({"symbol": symbol, "timestamp": [ts(h) for h in rates], "funding_rate": list(rates.values())})


def _one_trade(symbol):
    """buy decided at the close of bar 7 -> entry at the 08:00 open; 16 bars later the
    max-holding exit fills at the open of bar 24 (00:00 next day)."""
    return candles_from_rows({symbol: BARS}), signals_frame({symbol: ["hold"] * 7 + ["buy"] + ["hold"] * 17})


def _open(i):
    return BARS[i][0]


def _close(i):
    return BARS[i][3]


def test_long_perp_pays_funding_at_16h_and_receives_at_midnight_by_hand():
    candles, signals = _one_trade(PERP)
    res = run_backtest(candles, signals, _params(), funding=_funding())
    qty = 4_000.0 / (_open(8) * (1 + S))
    paid_16 = qty * _close(15) * 0.0003  # mark: close of the last bar opening before 16:00
    paid_24 = qty * _close(23) * -0.0001  # negative rate: the long receives
    cash_end = 10_000.0 - 4_000.0 * (1 + F) - paid_16 - paid_24 + qty * _open(24) * (1 - S) * (1 - F)
    assert res.fills["timestamp"].tolist() == [ts(8), ts(24)]
    assert res.metrics["funding"] == pytest.approx(paid_16 + paid_24, rel=1e-12)
    assert res.metrics["net_pnl"] == pytest.approx(cash_end - 10_000.0, rel=1e-12)
    assert res.funding["funding_ts"].tolist() == [ts(16), ts(24)]  # 08:00 entry fill is after that funding
    assert res.funding["amount_usdt"].tolist() == pytest.approx([paid_16, paid_24], rel=1e-12)
    # the cash change shows in equity at the bar it is booked in
    step = res.equity[ts(16)] - res.equity[ts(15)]
    assert step == pytest.approx(qty * (_close(16) - _close(15)) - paid_16, rel=1e-9)
    trade = res.trades.iloc[0]
    assert trade["funding_usdt"] == pytest.approx(paid_16 + paid_24, rel=1e-12)
    assert trade["pnl_usdt"] == pytest.approx(cash_end - 10_000.0, rel=1e-12)


def test_spot_symbol_never_pays_funding():
    candles, signals = _one_trade(SPOT)
    res = run_backtest(candles, signals, _params())
    qty = 4_000.0 / (_open(8) * (1 + S))
    cash_end = 10_000.0 - 4_000.0 * (1 + F) + qty * _open(24) * (1 - S) * (1 - F)
    assert res.metrics["funding"] == 0.0 and res.funding.empty
    assert res.metrics["net_pnl"] == pytest.approx(cash_end - 10_000.0, rel=1e-12)


def test_spot_rows_in_the_funding_frame_are_refused():
    candles, signals = _one_trade(SPOT)
    with pytest.raises(DataError, match="spot symbols"):
        run_backtest(candles, signals, _params(), funding=_funding(symbol=SPOT))


def test_perp_without_funding_is_refused_in_backtest_and_replay(tmp_path):
    candles, signals = _one_trade(PERP)
    with pytest.raises(DataError, match=r"funding history missing for AAA/USDT:USDT.*collect funding"):
        run_backtest(candles, signals, _params())
    with pytest.raises(DataError, match="funding history missing for AAA/USDT:USDT"):
        run_paper_replay(candles, FrameSignalSource(signals), _params(), tmp_path / "s.sqlite", None)
    with pytest.raises(DataError, match="funding history missing for AAA/USDT:USDT"):
        buy_and_hold(candles, _params())
    other = _funding(symbol="BBB/USDT:USDT")  # funding of another perp does not count
    with pytest.raises(DataError, match="funding history missing for AAA/USDT:USDT"):
        run_backtest(candles, signals, _params(), funding=other)


def test_hole_in_funding_history_is_refused_not_charged_zero():
    candles, signals = _one_trade(PERP)
    holed = {h: r for h, r in RATES.items() if h != 16}
    with pytest.raises(DataError, match="no event between"):
        run_backtest(candles, signals, _params(), funding=_funding(rates=holed))


def test_buy_and_hold_of_a_perp_pays_funding_on_its_quantity():
    candles = candles_from_rows({PERP: BARS})
    res = buy_and_hold(candles, _params(), funding=_funding())
    qty = 10_000.0 / (1 + F) / (_open(0) * (1 + S))
    # held from the 00:00 open (that funding is before the entry) to the close of bar 25
    paid = qty * (_close(7) * 0.01 + _close(15) * 0.0003 + _close(23) * -0.0001)
    final = qty * _close(25) * (1 - S) * (1 - F) - paid
    assert res.metrics["funding"] == pytest.approx(paid, rel=1e-12)
    assert res.metrics["net_pnl"] == pytest.approx(final - 10_000.0, rel=1e-12)
    assert res.equity[ts(8)] == pytest.approx(qty * _close(8) - qty * _close(7) * 0.01, rel=1e-12)


# ---- parity: the same loop code charges funding in the backtest and the HTTP paper replay ------
SYMS = ["BTC/USDT:USDT", "ETH/USDT"]  # one perp, one spot


def _market():
    full = generate_market(SYMS, "1h", SyntheticParams(bars=300, signal_strength=0.5), seed=11)
    return full.reset_index(drop=True)


def _momentum_signals(candles):
    rows = []
    for sym, g in candles.groupby("symbol"):
        mom = np.log(g["close"]).diff(6).to_numpy()
        for t, m in zip(g["timestamp"].iloc[6:-1], mom[6:-1]):
            p = 0.5 + float(np.clip(m * 8, -0.4, 0.4))
            rows.append((sym, t, "buy" if p >= 0.55 else "sell" if p <= 0.45 else "hold", p, m, "5"))
    return pd.DataFrame(rows, columns=["symbol", "timestamp", "action", "confidence", "expected_return",
                                       "model_version"])


def _synthetic_funding(candles):
    ts0 = candles["timestamp"].min().floor("8h")
    times = pd.date_range(ts0, candles["timestamp"].max() + pd.Timedelta(hours=8), freq="8h")
    rates = np.random.default_rng(5).normal(0.0002, 0.0004, len(times))
    return pd.DataFrame({"symbol": "BTC/USDT:USDT", "timestamp": times, "funding_rate": rates})


def test_backtest_and_http_paper_replay_charge_identical_funding(tmp_path):
    candles = _market()
    funding = _synthetic_funding(candles)
    signals = _momentum_signals(candles)
    p = params(risk={"max_holding_bars": 12, "position_fraction": 0.3, "stop_loss_pct": 0.03,
                     "take_profit_pct": 0.05})
    bt = run_backtest(candles, signals, p, close_at_end=False, funding=funding)
    with FakeSignalService(signals) as svc:
        source = HttpSignalSource(svc.url, timeout_s=5)
        try:
            report = run_paper_replay(candles, source, p, tmp_path / "s.sqlite", None,
                                      start=signals["timestamp"].min(), funding=funding)
        finally:
            source.close()
    assert len(bt.funding) >= 3, "the scenario must hold the perp over funding times to prove anything"
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        paid = pd.read_sql_query("SELECT symbol, funding_ts, amount_usdt FROM funding ORDER BY rowid", db)
        equity = pd.read_sql_query("SELECT equity_usdt FROM equity ORDER BY ts", db)
    assert paid["amount_usdt"].tolist() == bt.funding["amount_usdt"].tolist()
    assert paid["funding_ts"].tolist() == [t.isoformat() for t in bt.funding["funding_ts"]]
    assert set(paid["symbol"]) == {"BTC/USDT:USDT"}
    assert equity["equity_usdt"].tolist() == bt.equity.tolist()
    assert report.metrics == bt.metrics and report.metrics["funding"] != 0.0


# ---- real Binance perpetual candles and funding --------------------------------------------
def test_real_perp_trades_pay_the_funding_of_the_hours_they_held():
    root = require_shared_data()
    lo, hi = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")
    c = pd.read_parquet(root / "ohlcv" / "binanceusdm" / "BTC_USDT-1h.parquet")
    c = c[(c["timestamp"] >= lo) & (c["timestamp"] < hi)].assign(symbol="BTC/USDT:USDT")
    f = pd.read_parquet(root / "funding" / "binanceusdm" / "BTC_USDT-funding.parquet")
    f = f[(f["timestamp"] >= lo - pd.Timedelta(hours=8)) & (f["timestamp"] < hi)].assign(symbol="BTC/USDT:USDT")
    p = params(risk={"max_holding_bars": 24})
    pred = c[["symbol", "timestamp"]].copy()
    mom = np.log(c["close"]).diff(12).fillna(0.0).to_numpy()
    pred["prob_up"] = 0.5 + np.clip(mom * 5, -0.4, 0.4)
    pred["expected_return"] = mom
    res = run_backtest(c, signals_from_predictions(pred, p.signal, "rule"), p, funding=f)
    assert len(res.trades) > 3 and len(res.funding) > 3
    # independently: a trade pays rate * qty * (close of the last bar opening before F) for entry < F <= exit
    closes = c.set_index("timestamp")["close"]
    for t in res.trades.itertuples():
        due = f[(f["timestamp"] > t.entry_ts) & (f["timestamp"] <= t.exit_ts)]
        expect = sum(r.funding_rate * t.qty * closes[closes.index < r.timestamp].iloc[-1] for r in due.itertuples())
        assert t.funding_usdt == pytest.approx(expect, rel=1e-9, abs=1e-12)
    assert res.metrics["funding"] == pytest.approx(res.trades["funding_usdt"].sum(), rel=1e-9)
