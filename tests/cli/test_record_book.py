"""``qt record-book``: imports a raw order-book recording into the lake and prints the replay's check,
or polls REST depth snapshots from the local exchange (whose book is invented from the candle:
``exchange.depth``); a user's mistake (bad venue or symbol, missing or wrong file, a limit Binance
does not allow) is one line on stderr, exit 2, and nothing is written."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from exchange import LocalExchange

from tests.cli.support import assert_one_line_error, run_qt
from tests.data.orderbook_support import depth, snapshot, ticker, trade

pytestmark = pytest.mark.slow  # runs the qt command and a local exchange as processes

NS = 1_723_161_255_000_000_000  # 2024-08-08 UTC
PERP = [depth(NS, 96, 104, bids=[("100.0", "1")], prev=95),
        snapshot(NS + 1, 100, bids=[("100.0", "2"), ("99.9", "1")], asks=[("100.1", "3")]),
        ticker(NS + 2, 104, "100.0", "1", "100.1", "3"),  # the book after 96..104 (bid qty 1 from the diff)
        trade(NS + 3, 1, "100.1", "0.5", False),
        depth(NS + 4, 105, 106, asks=[("100.1", "0")], prev=104)]


def _recording(path, lines):
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_a_recording_lands_in_the_lake_and_its_replay_is_checked(tmp_path):
    raw = _recording(tmp_path / "perp.gz", PERP)
    res = run_qt(["record-book", "--from-file", str(raw), "--venue", "binanceusdm", "--symbols", "BTC/USDT"],
                 tmp_path / "home")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["symbol"] == "BTC/USDT:USDT"
    assert out["replay"]["messages"] == {"depth": 2, "snapshot": 1, "bookTicker": 1, "trade": 1}
    assert out["replay"]["diffs_applied"] == 2 and out["replay"]["gaps"] == 0
    assert (out["book_ticker"]["compared"], out["book_ticker"]["equal"]) == (1, 1)
    day = tmp_path / "home" / "orderbook" / "binanceusdm" / "BTC_USDT" / "2024-08-08"
    assert sorted(p.name for p in day.iterdir()) == ["book_ticker.parquet", "depth.parquet", "levels.parquet",
                                                     "manifest.json", "snapshots.parquet", "trades.parquet"]
    assert out["levels"]["2024-08-08"]["path"] == str(day / "levels.parquet")  # the book for qt exchange serve --book


@pytest.mark.parametrize("args,fragment", [
    (["--venue", "kraken", "--symbols", "BTC/USDT", "--from-file", "X"], "--venue 'kraken' is not one of"),
    (["--venue", "binance", "--symbols", "BTC/USDT", "--from-file", "X", "--seconds", "3"], "are for recording"),
    (["--venue", "binance", "--symbols", "BTC/USDT", "--exchange-url", "ftp://x", "--rest-only"], "must be an http(s) URL"),
    (["--venue", "binance", "--symbols", "BTC/USDT:USDT", "--from-file", "X"], "is a perpetual"),
    (["--venue", "binance", "--symbols", "BTC/USDT,ETH/USDT", "--from-file", "X"], "pass one symbol"),
    (["--venue", "binance", "--symbols", "BTC/USDT", "--from-file", "nowhere.gz"], "does not exist"),
])
def test_mistakes_are_one_line_exit_2(tmp_path, args, fragment):
    assert_one_line_error(run_qt(["record-book", *args], tmp_path / "home"), fragment)


@pytest.mark.parametrize("venue,symbol,lines,fragment", [
    ("binance", "BTC/USDT", PERP, "the recording is USDT-M"),
    ("binanceusdm", "ETH/USDT", PERP, "is about BTCUSDT, not ETHUSDT"),
    ("binanceusdm", "BTC/USDT", ["not a recording"], "is not '<receive ns> <JSON>'"),
])
def test_a_wrong_recording_is_refused_and_nothing_is_written(tmp_path, venue, symbol, lines, fragment):
    raw = _recording(tmp_path / "rec.gz", lines)
    res = run_qt(["record-book", "--from-file", str(raw), "--venue", venue, "--symbols", symbol], tmp_path / "home")
    assert_one_line_error(res, fragment)
    assert not (tmp_path / "home" / "orderbook").exists()


def test_a_file_that_is_not_gzip_is_one_line(tmp_path):
    raw = tmp_path / "plain.gz"
    raw.write_text("1 {}\n")
    res = run_qt(["record-book", "--from-file", str(raw), "--venue", "binance", "--symbols", "BTC/USDT"],
                 tmp_path / "home")
    assert_one_line_error(res, "is not readable gzip text")


# -- REST snapshots from the local exchange -------------------------------------------------------

CLOSE, VOLUME = "61800.25", "12.3456"  # tick 0.01 and step 0.00001 at this price (exchangeInfo's filters)


@pytest.fixture(scope="module")
def local_exchange(tmp_path_factory):
    src = tmp_path_factory.mktemp("candles")
    ts = pd.date_range("2024-08-08", periods=48, freq="1h", tz="UTC").astype("datetime64[ms, UTC]")
    bars = pd.DataFrame({"timestamp": ts, "open": 61800.0, "high": 61900.0, "low": 61700.0,
                         "close": float(CLOSE), "volume": float(VOLUME)})
    for market in ("binance", "binanceusdm"):
        (src / "ohlcv" / market).mkdir(parents=True)
        bars.to_parquet(src / "ohlcv" / market / "BTC_USDT-1h.parquet", index=False)
    with LocalExchange(src, now="2024-08-09T12:00:00") as ex:
        yield ex


def _poll(ex, home, venue, *extra):
    return run_qt(["record-book", "--rest-only", "--venue", venue, "--symbols", "BTC/USDT", "--exchange-url", ex.url,
                   "--seconds", "0.5", "--interval", "0.25", "--limit", "5", *extra], home)


@pytest.mark.parametrize("venue", ["binance", "binanceusdm"])
def test_rest_snapshots_of_the_local_exchange_land_in_the_snapshots_table(local_exchange, tmp_path, venue):
    res = _poll(local_exchange, tmp_path / "home", venue)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    (symbol, result), = out["symbols"].items()
    assert result["snapshots_polled"] == 2  # rounds at 0 and 0.25 s
    # the exchange's clock stands still (--now): the same update id twice, so the second adds nothing new
    assert (result["replay"]["snapshots_used"], result["replay"]["snapshots_ignored"]) == (1, 1)
    (day,) = result["stored"]
    table = pq.read_table(tmp_path / "home" / "orderbook" / venue / "BTC_USDT" / day / "snapshots.parquet")
    rows = table.to_pandas()
    assert set(rows["last_update_id"]) == {int(pd.Timestamp("2024-08-09T12:00:00Z").value // 1_000_000)}
    first = rows[rows["seq"] == 0]
    bids, asks = first[first["side"] == 1], first[first["side"] == -1]
    # best bid = the close on the 0.01 tick, best ask one tick up, 5 levels a side, each volume/100 on the step
    assert bids["price"].tolist() == [6_180_025_000_000 - k * 1_000_000 for k in range(5)]
    assert asks["price"].tolist() == [6_180_026_000_000 + k * 1_000_000 for k in range(5)]
    assert set(first["qty"]) == {12_345_000}  # 0.12345 (12.3456 / 100 = 0.123456, floored to 0.00001)
    again = _poll(local_exchange, tmp_path / "home", venue)  # a second run appends to the same day
    assert json.loads(again.stdout)["symbols"][symbol]["stored"][day]["tables"]["snapshots"] == 2 * len(rows)


def test_a_depth_limit_binance_does_not_allow_is_one_line(local_exchange, tmp_path):
    res = run_qt(["record-book", "--rest-only", "--venue", "binance", "--symbols", "BTC/USDT", "--exchange-url",
                  local_exchange.url, "--seconds", "0", "--limit", "7"], tmp_path / "home")
    assert_one_line_error(res, "the exchange refused the request")
    assert not (tmp_path / "home" / "orderbook").exists()


def test_a_symbol_the_exchange_does_not_list_is_one_line(local_exchange, tmp_path):
    res = run_qt(["record-book", "--rest-only", "--venue", "binance", "--symbols", "DOGE/USDT", "--exchange-url",
                  local_exchange.url, "--seconds", "0"], tmp_path / "home")
    assert_one_line_error(res, "does not list that symbol")
