"""Collecting the perpetuals' extra series: funding-rate and open-interest history, incrementally.

Why a module of its own: these series exist only for USDT-M perpetuals and page differently
from candles (funding settles every few hours, open interest has its own periods and Binance
keeps only ~30 days of it, so an exchange that does not serve it is a note, not a failure).
They are stored by ``data.perp_series``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data import perp_series
from data.collector.calls import ExchangeCalls, message_line
from data.collector.planning import ts_ms
from data.collector.reports import SymbolReport
from qt.errors import DataError, RetryableError
from qt.timeframes import timeframe_ms
from qt.venues import BINANCE, Venue

OPEN_INTEREST_PAGE_LIMIT = 500  # Binance /futures/data/openInterestHist max
OPEN_INTEREST_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")


def collect_funding(calls: ExchangeCalls, root: Path, symbol: str, start_ms: int, end_ms: int, now_ms: int,
                    venue: Venue = BINANCE) -> int:
    """Funding settlements after the newest stored one (or from ``start_ms``), up to now."""
    last = perp_series.last_funding_timestamp(root, symbol, venue.name)
    since = ts_ms(last) + 1 if last is not None else start_ms
    stop = min(end_ms, now_ms + 1)
    if venue.funding_window_ms() is not None:
        return _funding_by_windows(calls, root, symbol, since, stop, now_ms, end_ms, venue)
    limit = venue.funding_page_limit
    added = 0
    while since < stop:
        rows = calls.call("fetch_funding_rate_history",
                          lambda: calls.exchange.fetch_funding_rate_history(symbol, since, limit))
        frame = _funding_frame(rows, since, now_ms, end_ms)
        if frame.empty:
            break
        added += perp_series.write_funding(root, symbol, frame, venue.name).rows_added
        since = _ms(frame["timestamp"].iloc[-1]) + 1
        if len(rows) < limit:
            break  # "limit rows from since on" (Binance): a short page is the end of what it has
    return added


def _funding_by_windows(calls: ExchangeCalls, root: Path, symbol: str, since: int, stop: int, now_ms: int,
                        end_ms: int, venue: Venue) -> int:
    """Bybit's paging: each request is a window ``[lo, hi]`` answered with at most ``limit`` rows.
    An empty window is skipped (not the end of history: before a listing, or a pause). A full page
    may have left out part of its window - the oldest rows if the venue answers newest first (Bybit),
    the newest if oldest first - so the parts of the window on either side of what came back are
    asked for again, until every page is short."""
    limit, window = venue.funding_page_limit, venue.funding_window_ms()
    added = 0
    while since < stop:
        pending = [(since, min(since + window, stop) - 1)]
        while pending:
            lo, hi = pending.pop()
            rows = calls.call("fetch_funding_rate_history", lambda: calls.exchange.fetch_funding_rate_history(
                symbol, lo, limit, {"until": hi}))
            frame = _funding_frame(rows, lo, now_ms, min(end_ms, hi + 1))
            if frame.empty:
                continue
            added += perp_series.write_funding(root, symbol, frame, venue.name).rows_added
            if len(rows) >= limit:
                first, last = _ms(frame["timestamp"].iloc[0]), _ms(frame["timestamp"].iloc[-1])
                pending += [(a, b) for a, b in ((lo, first - 1), (last + 1, hi)) if a <= b]
        since = min(since + window, stop)
    return added


def _funding_frame(rows: list[dict], since: int, now_ms: int, end_ms: int) -> pd.DataFrame:
    """The settlements of a ccxt page in ``[since, min(now, end))``, oldest first, as the lake stores them."""
    frame = pd.DataFrame({"ts_ms": [int(r["timestamp"]) for r in rows],
                          "funding_rate": [float(r["fundingRate"]) for r in rows]}, dtype="float64")
    frame["ts_ms"] = frame["ts_ms"].astype("int64")
    frame = frame[(frame["ts_ms"] >= since) & (frame["ts_ms"] <= now_ms) & (frame["ts_ms"] < end_ms)]
    frame = frame.drop_duplicates("ts_ms").sort_values("ts_ms")
    return pd.DataFrame({"timestamp": pd.to_datetime(frame["ts_ms"], unit="ms", utc=True),
                         "funding_rate": frame["funding_rate"]}).reset_index(drop=True)


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


def collect_open_interest(calls: ExchangeCalls, root: Path, symbol: str, timeframe: str, start_ms: int,
                          end_ms: int, report: SymbolReport) -> None:
    """Open-interest history at the candle timeframe (5m when the candles are 1m: Binance
    has no 1m period). An exchange that does not serve it is a note, not an error: Binance
    itself keeps only ~30 days, so it can never be complete history anyway."""
    period = timeframe if timeframe in OPEN_INTEREST_PERIODS else "5m"
    step = timeframe_ms(period)
    if not calls.exchange.has.get("fetchOpenInterestHistory"):
        report.notes.append(f"open interest: {calls.exchange.id} has no fetchOpenInterestHistory")
        return
    last = perp_series.last_open_interest_timestamp(root, symbol, period)
    since = max(ts_ms(last) + step if last is not None else start_ms, start_ms)
    while since < end_ms:
        try:
            rows = calls.call("fetch_open_interest_history", lambda: calls.exchange.fetch_open_interest_history(
                symbol, period, since, OPEN_INTEREST_PAGE_LIMIT))
        except (DataError, RetryableError) as exc:
            if isinstance(exc, DataError) and ("HTTP 404" in str(exc) or "NotSupported" in str(exc)):
                report.notes.append(f"open interest: not served by the exchange ({message_line(exc, 120)})")
                return
            raise
        frame = pd.DataFrame({"ts_ms": [int(r["timestamp"]) for r in rows],
                              "open_interest": [_float(r.get("openInterestAmount")) for r in rows],
                              "open_interest_value": [_float(r.get("openInterestValue")) for r in rows]})
        frame = frame[(frame["ts_ms"] >= since) & (frame["ts_ms"] < end_ms)]
        if frame.empty:
            if report.open_interest_rows_added == 0 and last is None:
                report.notes.append("open interest: the exchange returned none for the range (Binance keeps ~30 days)")
            return
        frame = frame.sort_values("ts_ms")
        frame["timestamp"] = pd.to_datetime(frame["ts_ms"], unit="ms", utc=True)
        report.open_interest_rows_added += perp_series.write_open_interest(
            root, symbol, period, frame[["timestamp", "open_interest", "open_interest_value"]]).rows_added
        since = int(frame["ts_ms"].iloc[-1]) + step


def _float(value) -> float:
    return float(value) if value is not None else float("nan")
