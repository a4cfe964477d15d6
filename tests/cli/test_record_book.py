"""``qt record-book``: imports a raw order-book recording into the lake and prints the replay's check;
a user's mistake (bad venue or symbol, live recording, missing or wrong file) is one line on stderr,
exit 2, and nothing is written."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.cli.support import assert_one_line_error, run_qt
from tests.data.orderbook_support import depth, snapshot, ticker, trade

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
    day = tmp_path / "home" / "raw" / "orderbook" / "binanceusdm" / "BTC_USDT" / "2024-08-08"
    assert sorted(p.name for p in day.iterdir()) == ["book_ticker.parquet", "depth.parquet", "manifest.json",
                                                     "snapshots.parquet", "trades.parquet"]


@pytest.mark.parametrize("args,fragment", [
    (["--venue", "kraken", "--symbols", "BTC/USDT", "--from-file", "X"], "--venue 'kraken' is not one of"),
    (["--venue", "binance", "--symbols", "BTC/USDT"], "live order-book recording needs"),
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
    assert not (tmp_path / "home" / "raw" / "orderbook").exists()


def test_a_file_that_is_not_gzip_is_one_line(tmp_path):
    raw = tmp_path / "plain.gz"
    raw.write_text("1 {}\n")
    res = run_qt(["record-book", "--from-file", str(raw), "--venue", "binance", "--symbols", "BTC/USDT"],
                 tmp_path / "home")
    assert_one_line_error(res, "is not readable gzip text")
