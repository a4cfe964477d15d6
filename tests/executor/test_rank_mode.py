"""The cross-sectional portfolio (``signal.mode: rank``, issue 17): who is held, when it trades,
and that the paper daemon trades it exactly as the backtest does."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from executor.backtest import run_backtest
from executor.daemon import run_paper_replay
from executor.rank import books, is_rebalance_bar
from executor.signals import HttpSignalSource, Signal

from tests.executor.exec_support import FakeSignalService, candles_from_rows, params, ts

PERPS = [f"{b}/USDT:USDT" for b in ("AAA", "BBB", "CCC", "DDD", "EEE")]
HOUR_MS = 3_600_000


def _sig(sym: str, er: float) -> Signal:
    return Signal(sym, ts(0), "hold", 0.5, er, "1")


def test_books_hold_the_top_and_bottom_k_with_hysteresis():
    sigs = [_sig(s, er) for s, er in zip(PERPS, [0.05, 0.04, 0.03, 0.02, 0.01])]  # AAA best .. EEE worst
    anyone = lambda s: True  # noqa: E731
    assert books(sigs, set(), set(), 2, 1, anyone) == (["AAA/USDT:USDT", "BBB/USDT:USDT"],
                                                        ["EEE/USDT:USDT", "DDD/USDT:USDT"])
    # CCC is held long at rank 3 = top_k + buffer: kept, and only one new long joins
    assert books(sigs, {"CCC/USDT:USDT"}, set(), 2, 1, anyone)[0] == ["CCC/USDT:USDT", "AAA/USDT:USDT"]
    # DDD held long at rank 4 > top_k + buffer: dropped
    assert books(sigs, {"DDD/USDT:USDT"}, set(), 2, 1, anyone)[0] == ["AAA/USDT:USDT", "BBB/USDT:USDT"]
    # no shorts where shorting is not allowed
    assert books(sigs, set(), set(), 2, 1, lambda s: False)[1] == []


def test_rebalance_bars_are_counted_from_the_epoch_so_every_runner_agrees():
    every = 6
    hits = [i for i in range(24) if is_rebalance_bar(ts(i), HOUR_MS, every)]
    assert hits == [i for i in range(24) if (ts(i).value // 1_000_000 // HOUR_MS) % every == 0]
    assert len(hits) == 4 and all(b - a == every for a, b in zip(hits, hits[1:]))


def _market(n: int = 48) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Flat-ish candles; expected returns that reorder the universe every 12 bars."""
    rng = np.random.default_rng(3)
    rows = {s: [(100.0, 100.4, 99.6, 100.0 + 0.1 * rng.standard_normal()) for _ in range(n)] for s in PERPS}
    candles = candles_from_rows(rows)
    rec = []
    for i in range(n - 1):
        order = np.roll(np.arange(len(PERPS)), i // 12)  # who is best changes every 12 bars
        for rank, j in enumerate(order):
            rec.append((PERPS[j], ts(i), "hold", 0.5, 0.01 * (len(PERPS) - rank), "9"))
    signals = pd.DataFrame(rec, columns=["symbol", "timestamp", "action", "confidence", "expected_return",
                                         "model_version"])
    funding = pd.DataFrame([(s, ts(i), 0.0001) for s in PERPS for i in range(0, n + 8, 8)],
                           columns=["symbol", "timestamp", "funding_rate"])
    return candles, signals, funding


def _params():
    return params(data={"symbols": PERPS},
                  signal={"mode": "rank", "rebalance_bars": 6, "top_k": 1, "rank_buffer": 0},
                  risk={"allow_short": True, "position_fraction": 0.2, "max_open_positions": 4,
                        "stop_loss_pct": 0.2, "take_profit_pct": 0.5, "max_holding_bars": 48})


def test_rank_mode_holds_the_best_long_and_the_worst_short_and_trades_only_on_rebalance_bars():
    candles, signals, funding = _market()
    bt = run_backtest(candles, signals, _params(), funding=funding, close_at_end=False)
    entries = bt.fills[bt.fills["purpose"] == "entry"]
    decided = entries["timestamp"] - pd.Timedelta(hours=1)  # orders fill at the open after the decision
    assert all(is_rebalance_bar(t, HOUR_MS, 6) for t in decided)
    best = signals.loc[signals.groupby("timestamp")["expected_return"].idxmax()].set_index("timestamp")["symbol"]
    worst = signals.loc[signals.groupby("timestamp")["expected_return"].idxmin()].set_index("timestamp")["symbol"]
    for row, t in zip(entries.itertuples(), decided):
        assert row.symbol == (best[t] if row.side == "buy" else worst[t]), (row.symbol, t)
    assert set(entries["reason"]) == {"rank_long", "rank_short"}
    # a position that leaves its book is closed at the next rebalance, never in between
    exits = bt.fills[(bt.fills["purpose"] == "exit") & (bt.fills["reason"] == "rank_exit")]
    assert len(exits) > 0
    assert all(is_rebalance_bar(t - pd.Timedelta(hours=1), HOUR_MS, 6) for t in exits["timestamp"])


def test_rank_mode_paper_daemon_and_backtest_agree_fill_for_fill(tmp_path):
    candles, signals, funding = _market()
    p = _params()
    bt = run_backtest(candles, signals, p, funding=funding, close_at_end=False)
    with FakeSignalService(signals) as svc:
        source = HttpSignalSource(svc.url, timeout_s=5)
        try:
            run_paper_replay(candles, source, p, tmp_path / "s.sqlite", None, start=ts(0), funding=funding)
        finally:
            source.close()
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        fills = pd.read_sql_query("SELECT symbol, side, purpose, reason, qty, price FROM fills ORDER BY rowid", db)
    assert len(fills) >= 6
    assert fills.values.tolist() == bt.fills[["symbol", "side", "purpose", "reason", "qty", "price"]].values.tolist()
