"""The local exchange's invented depth book (``exchange.depth``), worked out by hand from one candle."""

from __future__ import annotations

import numpy as np

from exchange.datadir import Bars
from exchange.depth import synthetic_book

HOUR = 3_600_000
BARS = Bars(np.array([0, HOUR], dtype=np.int64), np.array([100.0, 61800.0]), np.array([101.0, 61900.0]),
            np.array([99.0, 61700.0]), np.array([100.5, 61800.257]), np.array([3.0, 12.3456]))


def test_the_book_sits_one_tick_around_the_close_of_the_candle_at_the_clock():
    book = synthetic_book(BARS, HOUR + 5, limit=5, perp=False)
    # close 61800.257 -> tick 0.01 (about 7 significant digits): bid 61800.25, ask 61800.26
    assert [b[0] for b in book["bids"]] == ["61800.25", "61800.24", "61800.23", "61800.22", "61800.21"]
    assert [a[0] for a in book["asks"]] == ["61800.26", "61800.27", "61800.28", "61800.29", "61800.30"]
    assert {b[1] for b in book["bids"] + book["asks"]} == {"0.12345"}  # 12.3456 / 100 on the 0.00001 step
    assert book["lastUpdateId"] == HOUR + 5 and "E" not in book


def test_an_earlier_clock_sees_the_earlier_candle_and_a_perp_answer_carries_its_times():
    book = synthetic_book(BARS, HOUR - 1, limit=5, perp=True)
    # close 100.5 -> tick 0.0001, step 0.001; volume 3 / 100 = 0.03 (a whole number of steps)
    assert book["bids"][0] == ["100.5000", "0.03"] and book["asks"][0] == ["100.5001", "0.03"]
    assert (book["E"], book["T"], book["lastUpdateId"]) == (HOUR - 1, HOUR - 1, HOUR - 1)
