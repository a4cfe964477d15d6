"""Walking a book for a market order's fill, and the ``costs.fill_model`` option (worked by hand)."""

from __future__ import annotations

import math

import pytest

from executor.paper import PaperBroker
from qt.book_walk import slippage_bps_of, walk_book
from qt.config import CostParams, Params
from qt.errors import ConfigError
from training.trials import decision_digest

ASKS = [(100.0, 1.0), (101.0, 2.0), (103.0, 5.0)]


def test_a_small_order_fills_at_the_best_level():
    assert walk_book(ASKS, 0.5) == (100.0, 0.5, 1)


def test_a_larger_order_walks_levels_and_pays_their_average():
    avg, filled, used = walk_book(ASKS, 4.0)  # 1 @ 100 + 2 @ 101 + 1 @ 103 = 405
    assert (avg, filled, used) == (pytest.approx(405 / 4), 4.0, 3)
    assert slippage_bps_of(avg, 99.5, buying=True) == pytest.approx((405 / 4 - 99.5) / 99.5 * 1e4)
    bids = [(99.0, 1.0), (98.0, 1.0)]
    avg, _, _ = walk_book(bids, 2.0)
    assert slippage_bps_of(avg, 99.5, buying=False) == pytest.approx((99.5 - 98.5) / 99.5 * 1e4)


def test_a_thin_book_fills_partly_and_an_empty_one_not_at_all():
    assert walk_book(ASKS, 10.0) == (pytest.approx((100 + 202 + 515) / 8), 8.0, 3)
    price, filled, used = walk_book([], 1.0)
    assert math.isnan(price) and (filled, used) == (0, 0)
    with pytest.raises(ValueError):
        walk_book(ASKS, 0)


def test_exact_in_the_replays_integer_units():
    asks = [(6_180_030_000_000, 250_000), (6_180_040_000_000, 1_000_000)]  # 61800.30 x 0.0025, 61800.40 x 0.01
    avg, filled, used = walk_book(asks, 500_000)
    assert filled == 500_000 and used == 2
    assert avg * filled == 6_180_030_000_000 * 250_000 + 6_180_040_000_000 * 250_000


def test_fill_model_defaults_to_fixed_and_book_is_refused_where_no_book_exists():
    assert Params().costs.fill_model == "fixed"
    with pytest.raises(ConfigError, match="fill_model: book"):
        PaperBroker(CostParams(fill_model="book"))


def test_the_new_option_leaves_existing_decision_digests_unchanged():
    assert decision_digest(Params()) == "194c0736bad95947"  # main before costs.fill_model existed
    book = Params.model_validate({"costs": {"fill_model": "book"}})
    assert decision_digest(book) != decision_digest(Params())


def test_a_replayed_book_is_walked_on_the_side_an_order_takes_from():
    from data.orderbook.book import Book
    from data.orderbook.units import to_units as u

    book = Book(bids=[(u("99"), u("1")), (u("98"), u("5"))], asks=[(u("101"), u("1")), (u("100"), u("2"))])
    avg, filled, used = book.walk(buying=True, qty=u("2.5"))  # 2 @ 100 + 0.5 @ 101
    assert (filled, used) == (u("2.5"), 2) and avg == pytest.approx(u("100.2"))  # 250.5 / 2.5
    avg, filled, used = book.walk(buying=False, qty=u("2"))  # 1 @ 99 + 1 @ 98
    assert (filled, used) == (u("2"), 2) and avg == pytest.approx(u("98.5"))
