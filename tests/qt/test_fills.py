"""The one fill rule of a resting level against an OHLC bar (``qt.fills``), shared by the paper
broker, the local exchange's matching engine and its OCO lists.

Every expected price is worked out by hand from the bar below: a sell stop fills at the stop when
the low reaches it, at the open when the bar opened at or below it (a gap), not at all otherwise;
a buy stop (or a long's take-profit, reached rising) is the mirror image.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

import pytest

from qt.fills import EMERGENCY_EXIT, EMERGENCY_EXIT_REASON, step_trail, stop_crossed, stop_fill


class Bar(NamedTuple):
    open: float
    high: float
    low: float


def test_sell_stop_reached_intrabar_fills_at_the_stop():
    assert stop_fill(95.0, Bar(open=100.0, high=101.0, low=94.0)) == 95.0


def test_sell_stop_touched_exactly_fills_at_the_stop():
    assert stop_fill(95.0, Bar(open=100.0, high=101.0, low=95.0)) == 95.0


def test_sell_stop_gapped_through_fills_at_the_open():
    assert stop_fill(95.0, Bar(open=93.0, high=96.0, low=90.0)) == 93.0
    assert stop_fill(95.0, Bar(open=95.0, high=96.0, low=94.0)) == 95.0  # opened exactly at the stop


def test_sell_stop_not_reached_does_not_fill():
    assert stop_fill(95.0, Bar(open=100.0, high=102.0, low=95.01)) is None


def test_buy_side_is_the_mirror_image():
    assert stop_fill(105.0, Bar(open=100.0, high=106.0, low=99.0), selling=False) == 105.0
    assert stop_fill(105.0, Bar(open=107.0, high=108.0, low=104.0), selling=False) == 107.0  # gap up
    assert stop_fill(105.0, Bar(open=100.0, high=104.9, low=99.0), selling=False) is None


def test_decimal_input_gives_decimal_prices():
    stop = Decimal("29100")
    intrabar = stop_fill(stop, Bar(open=Decimal("30000"), high=Decimal("30100"), low=Decimal("29000")))
    gap = stop_fill(stop, Bar(open=Decimal("28500"), high=Decimal("29200"), low=Decimal("28000")))
    above = stop_fill(Decimal("31800"), Bar(open=Decimal("30000"), high=Decimal("31900"), low=Decimal("29900")),
                      selling=False)
    assert (intrabar, gap, above) == (Decimal("29100"), Decimal("28500"), Decimal("31800"))
    assert all(isinstance(x, Decimal) for x in (intrabar, gap, above))


def test_trailing_stop_fills_by_the_same_rule():
    # peak 100, 10 % trail: level 90; the bar's own high (101) does not raise it during the bar
    assert step_trail(100.0, 0.1, Bar(open=95.0, high=101.0, low=89.0)) == (pytest.approx(90.0), 100.0)
    assert step_trail(100.0, 0.1, Bar(open=85.0, high=88.0, low=80.0)) == (85.0, 100.0)  # gap: the open
    assert step_trail(100.0, 0.1, Bar(open=95.0, high=104.0, low=91.0)) == (None, 104.0)  # untouched: peak moves
    # a short's trail: trough 100, level 110
    short_stop = step_trail(100.0, 0.1, Bar(open=105.0, high=111.0, low=99.0), selling=False)
    assert short_stop == (pytest.approx(110.0), 100.0)
    assert step_trail(100.0, 0.1, Bar(open=105.0, high=109.0, low=96.0), selling=False) == (None, 96.0)


def test_stop_crossed_means_at_or_below_the_stop():
    assert stop_crossed(95.0, 94.0)
    assert stop_crossed(95.0, 95.0)
    assert not stop_crossed(95.0, 95.01)
    assert (EMERGENCY_EXIT, EMERGENCY_EXIT_REASON) == ("EMERGENCY_EXIT", "emergency_exit")
