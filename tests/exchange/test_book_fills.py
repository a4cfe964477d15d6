"""Market fills that walk a recorded book (``exchange.book_fills``, ``--book``): by hand on a tiny
levels table, through the real server with real ccxt, the refusal outside the book's time span,
and on the shared recording (a larger order pays more slippage than a small one)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import ccxt
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from data.orderbook.levels import SCHEMA, sample_levels, write_levels
from exchange import LocalExchange, make_ccxt
from exchange.book_fills import BookLevels
from exchange.ledger import Rejected
from exchange.orders import PERP, Bar, Order
from qt.book_walk import slippage_bps_of
from tests.exchange.support import API_KEY, API_SECRET, NOW, NOW_MS, ts_ms

ASKS = [(100.0, 1.0), (101.0, 1.0)]
BIDS = [(99.0, 1.0), (98.0, 2.0)]


def _levels_file(path: Path, times: list[int], scale: float = 1.0) -> Path:
    rows = [(t, t, side, rank, p, q * scale) for t in times
            for side, levels in ((1, BIDS), (-1, ASKS)) for rank, (p, q) in enumerate(levels)]
    table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(zip(*rows), SCHEMA)], schema=SCHEMA)
    return write_levels(path, table, "BTC/USDT:USDT", "binanceusdm")


def _order(side: str, qty: str) -> Order:
    return Order(1, PERP, "BTCUSDT", "c", side, "MARKET", Decimal(qty), Decimal(0), Decimal(0), "GTC",
                 False, False, False, 0, 0)


def _bar(close: str) -> Bar:
    c = Decimal(close)
    return Bar(0, c, c, c, c)


def test_a_buy_of_1_5_over_two_ask_levels_pays_its_walked_slippage_vs_the_mid(tmp_path):
    book = BookLevels.read(_levels_file(tmp_path / "levels.parquet", [1_000]))
    # walked average (100*1 + 101*0.5)/1.5 = 100.333..; mid (99+100)/2 = 99.5
    slip = ((100 + 101 * 0.5) / 1.5 - 99.5) / 99.5
    assert slippage_bps_of((100 + 101 * 0.5) / 1.5, 99.5, True) == pytest.approx(slip * 1e4)
    price = book.fill_price(_order("BUY", "1.5"), _bar("20000"), 1_500)
    assert float(price) == pytest.approx(20000 * (1 + slip), abs=1e-8)
    # a sell of 2 takes 99 x1 and 98 x1: 98.5 avg, 1 below the mid -> 100.5 bps under the close
    sell = book.fill_price(_order("SELL", "2"), _bar("20000"), 1_500)
    assert float(sell) == pytest.approx(20000 * (1 - 1 / 99.5), abs=1e-8)


def test_no_sample_within_the_max_age_or_a_thinner_book_is_refused_by_name(tmp_path):
    book = BookLevels.read(_levels_file(tmp_path / "levels.parquet", [1_000, 2_000]))
    for now in (999, 2_000 + 5_001):
        with pytest.raises(Rejected) as err:
            book.fill_price(_order("BUY", "0.1"), _bar("100"), now)
        assert err.value.code == -2010 and "no book of BTCUSDT" in err.value.msg
        assert "1970-01-01T00:00:01.000Z..1970-01-01T00:00:02.000Z" in err.value.msg
    book.fill_price(_order("BUY", "0.1"), _bar("100"), 2_000 + 5_000)  # exactly the max age: fine
    with pytest.raises(Rejected, match="more than the 2 sampled ask levels"):
        book.fill_price(_order("BUY", "2.5"), _bar("100"), 2_000)


@pytest.fixture(scope="module")
def book_server(datadir, tmp_path_factory):
    path = _levels_file(tmp_path_factory.mktemp("book") / "levels.parquet", [NOW_MS - 1_000], scale=0.01)
    with LocalExchange(datadir, now=NOW, api_keys={API_KEY: API_SECRET}, book=path) as ex:
        yield ex


def _close_at(datadir, market_dir: str, at_ms: int) -> float:
    df = pd.read_parquet(datadir / "ohlcv" / market_dir / "BTC_USDT-1h.parquet")
    i = int(np.searchsorted(np.asarray(ts_ms(df["timestamp"])), at_ms, side="right")) - 1
    return float(df["close"].iloc[i])


@pytest.mark.slow
def test_through_the_server_a_market_buy_walks_the_book_and_an_old_book_refuses(book_server, datadir):
    perp = make_ccxt("perp", book_server.url, api_key=API_KEY, secret=API_SECRET)
    perp.load_markets()
    close = _close_at(datadir, "binanceusdm", NOW_MS)
    order = perp.create_order("BTC/USDT:USDT", "market", "buy", 0.02)  # 0.01 @100 + 0.01 @101: 100.5
    assert order["status"] == "closed" and order["filled"] == 0.02
    assert order["average"] == pytest.approx(close * (1 + 1 / 99.5), rel=1e-9)
    spot = make_ccxt("spot", book_server.url, api_key=API_KEY, secret=API_SECRET)
    spot.load_markets()  # spot BTCUSDT has no book: the bar close, unchanged
    assert spot.create_order("BTC/USDT", "market", "buy", 0.01)["average"] == pytest.approx(
        _close_at(datadir, "binance", NOW_MS), rel=1e-12)
    book_server.move_clock_to(NOW_MS + 10_000)  # the only sample is now 11 s old
    with pytest.raises(ccxt.InvalidOrder, match="no book of BTCUSDT within 5 s"):
        perp.create_order("BTC/USDT:USDT", "market", "sell", 0.02)
    assert perp.fetch_positions(["BTC/USDT:USDT"])[0]["contracts"] == pytest.approx(0.02)


@pytest.mark.shared_data
def test_on_the_shared_recording_a_larger_order_pays_more_slippage(tmp_path):
    from data.orderbook.messages import read_raw
    from tests.support import require_orderbook_recording

    raw = require_orderbook_recording("binanceusdm")
    table = sample_levels(read_raw(raw, {"BTCUSDT"}), "binanceusdm", every_ms=1000, depth=50)
    book = BookLevels.read(write_levels(tmp_path / "levels.parquet", table, "BTC/USDT:USDT", "binanceusdm"))
    now = int(pd.Timestamp("2024-08-08T23:57:00", tz="UTC").value // 1_000_000)
    close = Decimal("61800")
    for side in ("BUY", "SELL"):
        small, large = (book.fill_price(_order(side, q), _bar("61800"), now) for q in ("0.01", "20"))
        sign = 1 if side == "BUY" else -1
        assert 0 < sign * (small - close) < sign * (large - close), (side, small, large)


def test_a_levels_table_without_samples_is_refused_at_start(tmp_path):
    from qt.errors import DataError

    empty = pa.Table.from_arrays([pa.array([], type=f.type) for f in SCHEMA], schema=SCHEMA)
    write_levels(tmp_path / "levels.parquet", empty, "BTC/USDT:USDT", "binanceusdm")
    with pytest.raises(DataError, match="no two-sided sample of perp BTCUSDT"):
        BookLevels.read(tmp_path)
