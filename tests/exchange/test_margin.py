"""qt.margin: Binance's maintenance-margin brackets and isolated liquidation price, checked
against Binance's published numbers and against hand computations written out here."""

from __future__ import annotations

import numpy as np
import pytest

from qt.margin import (BINANCE_BTCUSDT_BRACKETS, bracket_for, liquidation_price, maintenance_margin,
                       max_notional)


def test_cum_is_computed_by_binances_rule_and_matches_the_published_maintenance_amounts():
    cums = [b.cum for b in BINANCE_BTCUSDT_BRACKETS]
    assert cums[:5] == pytest.approx([0, 50, 950, 11_450, 131_450])  # Binance's BTCUSDT table
    floors = [b.floor for b in BINANCE_BTCUSDT_BRACKETS]
    assert floors == sorted(floors) and all(a.cap == b.floor for a, b in zip(BINANCE_BTCUSDT_BRACKETS,
                                                                             BINANCE_BTCUSDT_BRACKETS[1:]))
    # continuity: at each floor both neighbouring tiers ask the same maintenance margin
    for lower, upper in zip(BINANCE_BTCUSDT_BRACKETS, BINANCE_BTCUSDT_BRACKETS[1:]):
        at = upper.floor
        assert at * lower.mmr - lower.cum == pytest.approx(at * upper.mmr - upper.cum, rel=1e-12)


@pytest.mark.parametrize("notional, floor, lev", [(0, 0, 125), (49_999.99, 0, 125), (50_000, 50_000, 100),
                                                  (-700_000, 600_000, 75), (2e9, 1.2e9, 1)])
def test_bracket_for_picks_the_tier_holding_the_notional(notional, floor, lev):
    b = bracket_for(notional)
    assert (b.floor, b.max_leverage) == (floor, lev)


def test_maintenance_margin_and_max_notional():
    assert maintenance_margin(100_000) == pytest.approx(100_000 * 0.005 - 50)
    assert max_notional(125) == 50_000 and max_notional(100) == 600_000 and max_notional(20) == 100_000_000
    assert max_notional(1) == 1_800_000_000


def test_long_liquidation_price_by_hand():
    # long 1 BTC at 50 000 with 10x: margin 5 000; notional 50 000 -> second tier (mmr 0.005, cum 50)
    #   LP = (5000 + 50 - 1 x 50000) / (1 x 0.005 - 1) = -44950 / -0.995
    assert liquidation_price("long", 50_000, 1, 5_000) == pytest.approx(44_950 / 0.995, rel=1e-12)
    # 0.5 BTC at 50 000 (notional 25 000, first tier: mmr 0.004, cum 0), 10x: margin 2 500
    #   LP = (2500 - 25000) / (0.5 x 0.004 - 0.5) = (50000 - 5000) / (1 - 0.004) per BTC
    assert liquidation_price("long", 50_000, 0.5, 2_500) == pytest.approx((50_000 - 5_000) / (1 - 0.004), rel=1e-12)


def test_short_liquidation_price_by_hand():
    # short 0.5 BTC at 50 000, 10x: margin 2 500, first tier
    #   LP = (2500 + 0 + 25000) / (0.5 x 0.004 + 0.5) = (50000 + 5000) / (1 + 0.004) per BTC
    assert liquidation_price("short", 50_000, 0.5, 2_500) == pytest.approx(55_000 / 1.004, rel=1e-12)


def test_a_long_with_margin_beyond_its_notional_cannot_be_liquidated():
    assert liquidation_price("long", 100, 1, 150) == 0.0  # 1x with extra margin: no price reaches it
    with pytest.raises(ValueError):
        liquidation_price("flat", 100, 1, 10)


@pytest.mark.parametrize("seed", range(20))
def test_at_the_liquidation_price_margin_plus_unrealised_pnl_equals_the_maintenance_margin(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        side = ("long", "short")[int(rng.integers(2))]
        entry = float(rng.uniform(10, 200_000))
        qty = float(rng.uniform(0.001, 200))
        leverage = int(rng.integers(1, bracket_for(qty * entry).max_leverage + 1))  # one Binance allows
        margin = qty * entry / leverage
        lp = liquidation_price(side, entry, qty, margin)
        if lp == 0.0:
            continue
        s = 1 if side == "long" else -1
        b = bracket_for(qty * entry)  # the bracket of the entry notional, as Binance's formula takes it
        equity = margin + s * qty * (lp - entry)
        assert equity == pytest.approx(qty * lp * b.mmr - b.cum, rel=1e-9, abs=1e-6 * qty * entry)
        assert (lp < entry) if side == "long" else (lp > entry)
