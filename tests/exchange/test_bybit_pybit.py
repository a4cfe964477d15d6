"""Bybit's own SDK, pybit, reads the local exchange's v5 market data exactly as the files hold it."""

from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("pybit", reason="pybit (a dev dependency) is not installed in this environment")

from pybit.exceptions import InvalidRequestError  # noqa: E402

from tests.exchange.bybit_support import pybit_session  # noqa: E402
from tests.exchange.support import NOW_MS, ts_ms  # noqa: E402

NOW_TS = pd.Timestamp(NOW_MS, unit="ms", tz="UTC")
HOUR_MS = 3_600_000


def _visible(df: pd.DataFrame) -> pd.DataFrame:
    return df[pd.to_datetime(df["timestamp"]) <= NOW_TS].reset_index(drop=True)


def _as_strings(df: pd.DataFrame, columns: list[str]) -> list[list[float]]:
    return [[t, *vals] for t, vals in zip(ts_ms(df["timestamp"]), df[columns].to_numpy().tolist())]


def _klines(method, start: int, limit: int) -> list[list[float]]:
    """Pages from ``start``: each answer is newest first; the next page starts one interval after
    its newest row (Bybit includes the candle containing ``start``: newest + 1 would repeat it)."""
    out = []
    while True:
        rows = method(category="linear", symbol="BTCUSDT", interval="60", start=start, limit=limit)["result"]["list"]
        if not rows:
            return out
        out += [[int(r[0]), *map(float, r[1:])] for r in reversed(rows)]
        start = int(rows[0][0]) + HOUR_MS


def test_pybit_klines_are_the_candle_file(bybit_exchange, bybit_datadir):
    session = pybit_session(bybit_exchange.url)
    stored = _visible(pd.read_parquet(bybit_datadir / "ohlcv" / "bybit" / "BTC_USDT-1h.parquet"))
    got = _klines(session.get_kline, start=0, limit=1000)
    assert [r[:6] for r in got] == _as_strings(stored, ["open", "high", "low", "close", "volume"])


def test_pybit_mark_price_klines_are_the_mark_file(bybit_exchange, bybit_datadir):
    session = pybit_session(bybit_exchange.url)
    stored = _visible(pd.read_parquet(bybit_datadir / "ohlcv" / "bybit" / "BTC_USDT-1h-mark.parquet"))
    assert _klines(session.get_mark_price_kline, start=0, limit=700) == _as_strings(stored, ["open", "high", "low",
                                                                                             "close"])


def test_pybit_funding_history_is_the_funding_file(bybit_exchange, bybit_datadir):
    session = pybit_session(bybit_exchange.url)
    stored = _visible(pd.read_parquet(bybit_datadir / "funding" / "bybit" / "BTC_USDT-funding.parquet"))
    end, got = NOW_MS, []
    while True:  # walk back from now with endTime, the way Bybit's docs page this endpoint
        rows = session.get_funding_rate_history(category="linear", symbol="BTCUSDT", endTime=end,
                                                limit=200)["result"]["list"]
        if not rows:
            break
        got = [(int(r["fundingRateTimestamp"]), float(r["fundingRate"])) for r in reversed(rows)] + got
        end = int(rows[-1]["fundingRateTimestamp"]) - 1
    assert got == list(zip(ts_ms(stored["timestamp"]), stored["funding_rate"].tolist()))


def test_a_start_inside_a_candle_includes_that_candle_as_bybit_does(bybit_exchange):
    session = pybit_session(bybit_exchange.url)
    last_open = NOW_MS - 30 * 60_000
    rows = session.get_kline(category="linear", symbol="BTCUSDT", interval="60", start=last_open - HOUR_MS + 1,
                             limit=5)["result"]["list"]
    assert [int(r[0]) for r in rows] == [last_open, last_open - HOUR_MS]  # newest first, nothing after now


def test_pybit_server_time_and_errors(bybit_exchange):
    session = pybit_session(bybit_exchange.url)
    assert int(session.get_server_time()["time"]) == NOW_MS
    latest = session.get_kline(symbol="BTCUSDT", interval="60", limit=1)["result"]  # category defaults to linear
    assert [int(r[0]) for r in latest["list"]] == [NOW_MS - 30 * 60_000] and latest["category"] == "linear"
    with pytest.raises(InvalidRequestError) as err:
        session.get_kline(category="linear", symbol="XRPUSDT", interval="60")
    assert err.value.status_code == 10001
