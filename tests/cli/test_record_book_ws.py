"""``qt record-book`` recording Binance's websocket streams live, from a loopback server.

The server (``tests.data.binance_stream_server``) speaks Binance's combined-stream websocket and REST
depth protocols and replays the first lines of a shipped recording (``../shared/data/orderbook``),
10x faster than recorded; the ``qt`` process is started and stopped by its PID. What the lake then
holds is compared message for message with what the server sent, and the replay of the lake must
match every comparable bookTicker exactly."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from exchange import LocalExchange
from tests.cli.support import QT, assert_one_line_error, run_qt
from tests.data.binance_stream_server import BinanceStreamServer
from tests.data.orderbook_support import depth, snapshot, ticker, trade
from tests.support import require_orderbook_recording

pytestmark = pytest.mark.slow  # runs qt as a process

LINES = 2500  # about 26 s of spot (2.6 s at 10x), 9 s of USDT-M
NS = 1_723_161_255_000_000_000  # 2024-08-08 UTC


def _lines(market: str) -> list[str]:
    """The first ``LINES`` lines, cut just before a depth message: the bookTickers of the last depth
    message sent arrive before the next one, so every book state sent has its ticker."""
    lines = []
    with gzip.open(require_orderbook_recording(market), "rt") as fh:
        for line in fh:
            if len(lines) >= LINES and "@depth" in line[:80]:
                return lines
            lines.append(line.rstrip("\n"))
    return lines


def _qt(args, home, timeout=60, until=None):
    """Run qt by PID: ``until`` (a callable) is polled and SIGTERM sent once it holds; the process
    is killed if it outlives ``timeout``, also when the test fails."""
    env = {**os.environ, "QT_HOME": str(home)}
    env.pop("QT_PARAMS", None)
    proc = subprocess.Popen([QT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        if until is not None:
            deadline = time.monotonic() + timeout
            while not until() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _record(server, home, market, seconds="6", symbol="BTC/USDT", **kw):
    return _qt(["record-book", "--venue", market, "--symbols", symbol, "--seconds", seconds,
                "--ws-url", server.ws_url, "--rest-url", server.rest_url], home, **kw)


def _table(home, market, name, stem="BTC_USDT"):
    (day,) = (home / "orderbook" / market / stem).glob("20*")
    return pq.read_table(day / f"{name}.parquet").to_pandas()


def _assert_lake_holds_what_was_sent(server, home, market, symbol="BTCUSDT"):
    sent = pd.DataFrame(server.sent)
    sent = sent[sent.s == symbol]
    stem = symbol.replace("USDT", "_USDT")
    depth = _table(home, market, "depth", stem).drop_duplicates("seq")
    assert depth[["U", "u"]].values.tolist() == sent.loc[sent.kind == "depth", ["U", "u"]].values.tolist()
    trades = _table(home, market, "trades", stem)
    assert trades["trade_id"].tolist() == sent.loc[sent.kind == "trade", "t"].tolist()
    tickers = _table(home, market, "book_ticker", stem)
    assert tickers["u"].tolist() == sent.loc[sent.kind == "bookTicker", "u"].tolist()


@pytest.mark.shared_data
@pytest.mark.parametrize("market", ["binance", "binanceusdm"])
def test_a_live_recording_lands_in_the_lake_and_its_replay_equals_the_book_ticker(tmp_path, market):
    with BinanceStreamServer(_lines(market), market) as server:
        res = _record(server, tmp_path / "home", market)
        assert server.finished.is_set(), "the server had not sent the whole excerpt when the recording ended"
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr
    out = json.loads(res.stdout)
    assert (out["mode"], out["connections"]) == ("websocket", 1)
    (got,) = out["symbols"].values()
    counts = server.sent_counts()
    assert got["recorded"]["lines"] == {**counts, "snapshot": 1}
    assert got["replay"]["messages"] == {**counts, "snapshot": 1}
    assert (got["replay"]["gaps"], got["replay"]["diffs_unsynced"], got["replay"]["snapshots_used"]) == (0, 0, 1)
    check = got["book_ticker"]
    assert check["unequal"] == 0 and check["compared"] >= 10, check
    assert check["book_states"]["unequal"] == 0 and check["book_states"]["equal"] > 100, check["book_states"]
    _assert_lake_holds_what_was_sent(server, tmp_path / "home", market)
    assert len(server.depth_requests) == 1 and server.depth_requests[0]["limit"] == "1000"
    assert os.path.isfile(got["raw"]) and all(os.path.isfile(v["path"]) for v in got["levels"].values())


@pytest.mark.shared_data
def test_two_symbols_share_one_stream_and_each_lands_in_its_own_recording(tmp_path):
    with BinanceStreamServer(_lines("binance"), "binance", also_as=("ETHUSDT",)) as server:
        res = _record(server, tmp_path / "home", "binance", symbol="BTC/USDT,ETH/USDT")
        assert server.finished.is_set()
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert sorted(out["symbols"]) == ["BTC/USDT", "ETH/USDT"] and out["connections"] == 1
    assert sorted(r["symbol"] for r in server.depth_requests) == ["BTCUSDT", "ETHUSDT"]
    for symbol, got in out["symbols"].items():
        assert got["replay"]["gaps"] == 0 and got["replay"]["snapshots_used"] == 1, symbol
        assert got["book_ticker"]["unequal"] == 0 and got["book_ticker"]["compared"] >= 10, symbol
        _assert_lake_holds_what_was_sent(server, tmp_path / "home", "binance", symbol.replace("/", ""))
    assert out["symbols"]["BTC/USDT"]["raw"] != out["symbols"]["ETH/USDT"]["raw"]


@pytest.mark.shared_data
def test_a_dropped_depth_message_is_a_gap_and_a_fresh_snapshot_resyncs(tmp_path):
    with BinanceStreamServer(_lines("binance"), "binance", drop_depth={100}) as server:
        res = _record(server, tmp_path / "home", "binance")
        assert server.finished.is_set()
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)["symbols"]["BTC/USDT"]
    assert (got["recorded"]["gaps_seen_live"], got["recorded"]["snapshots_asked"]) == (1, 2)
    assert len(server.depth_requests) == 2
    replay = got["replay"]
    assert (replay["gaps"], replay["snapshots_used"], replay["diffs_unsynced"]) == (1, 2, 0)
    assert got["book_ticker"]["not_comparable_by_reason"].get("book_invalid", 0) > 0  # between gap and resync
    assert got["book_ticker"]["unequal"] == 0 and got["book_ticker"]["book_states"]["unequal"] == 0
    _assert_lake_holds_what_was_sent(server, tmp_path / "home", "binance")


@pytest.mark.shared_data
def test_a_dropped_connection_is_reopened_and_the_missed_updates_resync_with_a_fresh_snapshot(tmp_path):
    with BinanceStreamServer(_lines("binance"), "binance", disconnect_after_depth=50) as server:
        res = _record(server, tmp_path / "home", "binance")
        assert server.finished.is_set() and server.connections == 2
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    got = out["symbols"]["BTC/USDT"]
    assert out["connections"] == 2
    assert (got["recorded"]["gaps_seen_live"], got["recorded"]["snapshots_asked"]) == (1, 2)
    replay = got["replay"]
    assert (replay["gaps"], replay["snapshots_used"], replay["diffs_unsynced"]) == (1, 2, 0)
    assert got["book_ticker"]["unequal"] == 0 and got["book_ticker"]["compared"] >= 10
    # the tickers sent while disconnected are lost too: the resynced book's first state can only be
    # held against a ticker from before the break; every other state equals its latest ticker
    states, (gap,) = got["book_ticker"]["book_states"], replay["gap_details"]
    assert states["unequal"] <= 1 and states["equal"] > 100, states
    assert all(m["ticker_u"] < gap["first_id"] <= m["u"] for m in states["first_mismatches"]), (states, gap)
    _assert_lake_holds_what_was_sent(server, tmp_path / "home", "binance")


@pytest.mark.shared_data
def test_sigterm_ends_the_recording_early_and_keeps_what_arrived(tmp_path):
    with BinanceStreamServer(_lines("binance"), "binance") as server:
        started = time.monotonic()
        res = _record(server, tmp_path / "home", "binance", seconds="120", until=server.finished.is_set)
        elapsed = time.monotonic() - started
    assert res.returncode == 0, res.stderr
    assert elapsed < 30
    got = json.loads(res.stdout)["symbols"]["BTC/USDT"]
    assert got["replay"]["gaps"] == 0 and got["book_ticker"]["unequal"] == 0
    _assert_lake_holds_what_was_sent(server, tmp_path / "home", "binance")


@pytest.mark.shared_data
def test_a_symbol_the_exchange_does_not_list_is_one_line_and_nothing_is_written(tmp_path):
    with BinanceStreamServer(_lines("binance"), "binance") as server:
        res = _record(server, tmp_path / "home", "binance", symbol="DOGE/USDT")
    assert_one_line_error(res, "refused the depth snapshot of DOGEUSDT (HTTP 400")
    assert not list((tmp_path / "home").rglob("*.gz*")) and not list((tmp_path / "home").rglob("*.parquet"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local_exchange(tmp_path_factory):
    src = tmp_path_factory.mktemp("candles")
    ts = pd.date_range("2024-08-08", periods=48, freq="1h", tz="UTC").astype("datetime64[ms, UTC]")
    bars = pd.DataFrame({"timestamp": ts, "open": 61800.0, "high": 61900.0, "low": 61700.0, "close": 61800.25,
                         "volume": 12.3456})
    (src / "ohlcv" / "binance").mkdir(parents=True)
    bars.to_parquet(src / "ohlcv" / "binance" / "BTC_USDT-1h.parquet", index=False)
    with LocalExchange(src, now="2024-08-09T12:00:00") as ex:
        yield ex


def test_an_unreachable_websocket_falls_back_to_rest_polling_and_says_so(local_exchange, tmp_path):
    res = run_qt(["record-book", "--venue", "binance", "--symbols", "BTC/USDT", "--seconds", "0.5", "--interval",
                  "0.25", "--ws-url", f"ws://127.0.0.1:{_closed_port()}", "--rest-url", local_exchange.url],
                 tmp_path / "home")
    assert res.returncode == 0, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("warning: cannot open the websocket ws://127.0.0.1:") and "falling back to REST" in line
    out = json.loads(res.stdout)
    assert out["mode"] == "rest-snapshots" and out["symbols"]["BTC/USDT"]["snapshots_polled"] == 2
    assert not list((tmp_path / "home").rglob("*.gz*"))  # no empty raw file left behind


def test_nothing_reachable_is_the_warning_then_one_error_line(tmp_path):
    port = _closed_port()
    res = run_qt(["record-book", "--venue", "binance", "--symbols", "BTC/USDT", "--seconds", "0.5",
                  "--ws-url", f"ws://127.0.0.1:{port}", "--rest-url", f"http://127.0.0.1:{port}"], tmp_path / "home")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    warning, error = res.stderr.strip().splitlines()
    assert warning.startswith("warning: cannot open the websocket") and error.startswith("error: cannot reach")


@pytest.mark.parametrize("args,fragment", [
    (["--ws-url", "ws://127.0.0.1:1"], "pass --ws-url and --rest-url together"),
    (["--rest-url", "http://127.0.0.1:1"], "pass --ws-url and --rest-url together"),
    (["--ws-url", "http://x", "--rest-url", "http://x"], "must be a ws(s) URL"),
    (["--ws-url", "ws://x", "--rest-url", "http://x", "--rest-only"], "--rest-only polls REST snapshots only"),
    (["--ws-url", "ws://x", "--rest-url", "http://x", "--from-file", "X"], "--from-file imports the whole file"),
    (["--ws-url", "ws://x", "--rest-url", "http://x", "--seconds", "0"], "--seconds must be more than 0"),
])
def test_url_mistakes_are_one_line_exit_2(tmp_path, args, fragment):
    res = run_qt(["record-book", "--venue", "binance", "--symbols", "BTC/USDT", *args], tmp_path / "home")
    assert_one_line_error(res, fragment)
    assert not (tmp_path / "home" / "orderbook").exists()


HAND_MADE = [depth(NS, 96, 104, bids=[("100.0", "1")], prev=95),
             snapshot(NS + 1, 100, bids=[("100.0", "2"), ("99.9", "1")], asks=[("100.1", "3")]),
             ticker(NS + 2, 104, "100.0", "1", "100.1", "3"),
             trade(NS + 3, 1, "100.1", "0.5", False),
             depth(NS + 4, 105, 106, asks=[("100.1", "0"), ("100.2", "4")], prev=104),
             ticker(NS + 5, 106, "100.0", "1", "100.2", "4")]


def test_a_hand_made_stream_is_recorded_without_the_shared_data(tmp_path):
    """The same wire path on six hand-made messages sent at once: runs where ../shared/data is absent."""
    with BinanceStreamServer(HAND_MADE, "binanceusdm") as server:
        res = _record(server, tmp_path / "home", "binanceusdm", seconds="1.5")
        assert server.finished.is_set()
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)["symbols"]["BTC/USDT:USDT"]
    assert got["replay"]["messages"] == {"depth": 2, "trade": 1, "bookTicker": 2, "snapshot": 1}
    assert got["replay"]["gaps"] == 0 and got["replay"]["diffs_unsynced"] == 0
    check = got["book_ticker"]  # ticker 106 at least; 104 too if the snapshot (the file's, id 100) came first
    assert check["compared"] >= 1 and check["equal"] == check["compared"], check
    _assert_lake_holds_what_was_sent(server, tmp_path / "home", "binanceusdm")


def test_a_second_recording_of_the_day_is_appended_not_refused(tmp_path):
    """--from-file refuses a different recording of a stored day; live sessions of one day add up."""
    outs = []
    for _ in range(2):
        with BinanceStreamServer(HAND_MADE, "binanceusdm") as server:
            res = _record(server, tmp_path / "home", "binanceusdm", seconds="1.5")
        assert res.returncode == 0, res.stderr
        outs.append(json.loads(res.stdout)["symbols"]["BTC/USDT:USDT"])
    (day, first), = outs[0]["stored"].items()
    assert outs[1]["stored"][day]["tables"] == {k: 2 * n for k, n in first["tables"].items()}
    assert outs[1]["replay"]["messages"] == {"depth": 4, "trade": 2, "bookTicker": 4, "snapshot": 2}
    assert outs[0]["raw"] != outs[1]["raw"] and all(os.path.isfile(o["raw"]) for o in outs)
