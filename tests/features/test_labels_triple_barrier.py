"""Triple-barrier labels: the executor's own long trade (next open entry, stop, take-profit,
max holding) replayed on candles, by hand and against the real PaperBroker."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from executor.paper import MarketOrder, PaperBroker
from executor.portfolio import Bar
from features.labels import make_labels
from qt.config import CostParams, LabelParams, RiskParams, SyntheticParams
from data.synthetic import generate_market

NO_COSTS = CostParams(fee_rate=0.0, slippage_bps=0.0)
# entry at 100 -> stop 95, take-profit 110, exit at the open of bar 4 at the latest
RISK = RiskParams(stop_loss_pct=0.05, take_profit_pct=0.10, max_holding_bars=3)
H1 = LabelParams(horizon_bars=1)


def _frame(bars: list[tuple[float, float, float, float]], symbol: str = "AAA/USDT") -> pd.DataFrame:
    ts = pd.date_range("2024-01-01", periods=len(bars), freq="h", tz="UTC").astype("datetime64[ms, UTC]")
    o, h, lo, c = (np.array(col, dtype=float) for col in zip(*bars))
    return pd.DataFrame({"symbol": symbol, "timestamp": ts, "open": o, "high": h, "low": lo, "close": c,
                         "volume": 1.0})


def _first_label(bars, costs=NO_COSTS) -> tuple[int, float, int]:
    """Label of bar 0 (signal at its close, entry at the open of bar 1 = 100)."""
    row = make_labels(_frame([(100.0, 100.0, 100.0, 100.0), *bars]), H1, costs, RISK).iloc[0]
    return int(row["tb_label"]), float(row["tb_return"]), int(row["tb_bars"])


CALM = (101.0, 102.0, 99.0, 101.0)
ENTRY = (100.0, 102.0, 99.0, 101.0)  # opens at 100: the entry price
EXIT_BAR = (103.0, 104.0, 102.0, 103.0)


@pytest.mark.parametrize("name, bars, expected", [
    ("take-profit in the second bar", [(100.0, 105.0, 99.0, 104.0), (104.0, 111.0, 103.0, 108.0), CALM, EXIT_BAR],
     (1, math.log(1.10), 1)),
    ("stop in the second bar", [(100.0, 101.0, 96.0, 97.0), (97.0, 98.0, 94.0, 95.0), CALM, EXIT_BAR],
     (-1, math.log(0.95), 1)),
    ("stop and take-profit in the entry bar: stop first", [(100.0, 112.0, 94.0, 100.0), CALM, CALM, EXIT_BAR],
     (-1, math.log(0.95), 0)),
    ("gap through the stop fills at the open", [(100.0, 101.0, 98.0, 99.0), (90.0, 92.0, 89.0, 91.0), CALM, EXIT_BAR],
     (-1, math.log(0.90), 1)),
    ("gap through the take-profit fills at the open", [ENTRY, (115.0, 116.0, 114.0, 115.0), CALM, EXIT_BAR],
     (1, math.log(1.15), 1)),
    ("no touch: max-holding exit at the open after 3 bars", [ENTRY, (101.0, 109.0, 96.0, 105.0), CALM, EXIT_BAR],
     (0, math.log(1.03), 3)),
])
def test_triple_barrier_by_hand(name, bars, expected):
    label, ret, held = _first_label(bars)
    assert (label, held) == (expected[0], expected[2]), name
    assert ret == pytest.approx(expected[1], rel=1e-12), name


def test_levels_sit_on_the_slipped_entry_fill_like_the_broker():
    # 10 bps slippage: fill 100.1, stop 95.095. A low of 95.05 touches it (it would not touch 95).
    costs = CostParams(fee_rate=0.001, slippage_bps=10.0)
    label, ret, held = _first_label([(100.0, 101.0, 95.05, 96.0), CALM, CALM, EXIT_BAR], costs)
    assert (label, held) == (-1, 0)
    assert ret == pytest.approx(math.log(100.1 * 0.95 / 100.0), rel=1e-12)  # before slippage and fees


def test_rows_without_a_full_holding_window_are_absent_and_forward_labels_are_unchanged():
    candles = generate_market(["AAA/USDT", "BBB/USDT"], "1h", SyntheticParams(bars=300), seed=2)
    plain = make_labels(candles, LabelParams(horizon_bars=2), NO_COSTS)
    with_tb = make_labels(candles, LabelParams(horizon_bars=2), NO_COSTS, RISK)
    assert list(with_tb.columns) == [*plain.columns, "tb_label", "tb_return", "tb_bars"]
    # horizon 2 loses 2 bars per symbol, the barrier window (3 bars + the exit open) loses 4
    assert with_tb.groupby("symbol").size().to_dict() == {"AAA/USDT": 296, "BBB/USDT": 296}
    assert not with_tb.isna().any().any()
    keep = plain.merge(with_tb[["symbol", "timestamp"]], on=["symbol", "timestamp"])
    pd.testing.assert_frame_equal(with_tb[plain.columns], keep, check_exact=True)


def _broker_trade(candles: pd.DataFrame, t: int, risk: RiskParams, costs: CostParams) -> tuple[str, float, int]:
    """The real PaperBroker trading a buy decided at the close of bar t: (reason, exit fill price, bars held)."""
    sym = candles["symbol"].iat[0]

    def bar(i: int) -> dict[str, Bar]:
        r = candles.iloc[i]
        return {sym: Bar(sym, r["timestamp"], r["open"], r["high"], r["low"], r["close"])}

    broker = PaperBroker(costs)
    broker.submit(MarketOrder(1, sym, "buy", "entry", "signal_buy", notional_usdt=1000.0,
                              stop_loss_pct=risk.stop_loss_pct, take_profit_pct=risk.take_profit_pct))
    qty = None
    for k in range(1, risk.max_holding_bars + 1):
        for fill in broker.process_bar(bar(t + k)).fills:
            if fill.purpose == "entry":
                qty = fill.qty
            else:
                return fill.reason, fill.price, k - 1
    broker.submit(MarketOrder(2, sym, "sell", "exit", "max_holding", qty=qty))
    (fill,) = broker.process_bar(bar(t + risk.max_holding_bars + 1)).fills
    return fill.reason, fill.price, risk.max_holding_bars


def test_every_label_matches_the_paper_brokers_exit_reason_price_and_holding():
    candles = generate_market(["AAA/USDT"], "1h", SyntheticParams(bars=400, base_volatility=0.012), seed=7)
    risk = RiskParams(stop_loss_pct=0.03, take_profit_pct=0.04, max_holding_bars=12)
    costs = CostParams(fee_rate=0.001, slippage_bps=5.0)
    labels = make_labels(candles, LabelParams(horizon_bars=4), costs, risk)
    reasons = {1: "take_profit", -1: "stop_loss", 0: "max_holding"}
    seen = set()
    for t in range(0, len(labels), 3):
        row = labels.iloc[t]
        assert row["timestamp"] == candles["timestamp"].iat[t]
        reason, price, held = _broker_trade(candles, t, risk, costs)
        exit_before_slippage = candles["open"].iat[t + 1] * math.exp(row["tb_return"])
        assert (reasons[int(row["tb_label"])], int(row["tb_bars"])) == (reason, held), f"bar {t}"
        assert exit_before_slippage * (1 - 5e-4) == pytest.approx(price, rel=1e-12), f"bar {t}"
        seen.add(reason)
    assert seen == set(reasons.values())  # the sample exercised every kind of exit
