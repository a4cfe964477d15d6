"""One symbol's collection: candles after (and before) what is stored, its gaps, its perp series.

Why a module of its own: this is the collector's core loop (steps 1-5 of ``data.collector``):
plan against the exchange's clock and what is stored, page and store each page at once (a kill
loses at most the page in flight), re-ask each gap once and record what stays missing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import ccxt
import pandas as pd

from data import lake
from data.collector.calls import ExchangeCalls
from data.collector.perp_series import collect_funding, collect_open_interest
from data.collector.planning import (align_up_ms, closed_end_ms, find_gaps, gap_record, plan_fetch_ranges,
                                     subtract_known, to_ms, ts_ms)
from data.collector.reports import PageProgress, ProgressFn, SymbolReport
from qt.config import CollectParams
from qt.errors import DataError
from qt.timeframes import timeframe_ms
from qt.venues import Venue, venue_for


def collect_symbol(exchange: ccxt.Exchange, root: Path, symbol: str, timeframe: str,
                   start: str | pd.Timestamp | None, end: str | pd.Timestamp | None, params: CollectParams,
                   progress: ProgressFn | None = None, sleep: Callable[[float], None] = time.sleep,
                   rng: random.Random | None = None) -> SymbolReport:
    """Bring ``symbol``'s closed ``timeframe`` candles in ``[start, end)`` (start None = from
    what is stored, or ``params.backfill_start`` when nothing is) into the lake at ``root``,
    then its funding and open interest when it is a perpetual and they are enabled.

    Raises ``RetryableError`` (transient, retries exhausted) or ``UserError``/``DataError``
    (unknown symbol, request refused); what was stored before the failure stays stored.
    """
    report = SymbolReport(symbol=symbol, timeframe=timeframe)
    collect_symbol_into(report, exchange, Path(root), symbol, timeframe, start, end, params, progress, sleep, rng)
    return report


def collect_symbol_into(report: SymbolReport, exchange: ccxt.Exchange, root: Path, symbol: str, timeframe: str,
                        start, end, params: CollectParams, progress: ProgressFn | None,
                        sleep: Callable[[float], None], rng: random.Random | None) -> None:
    """``collect_symbol``'s work, counting into ``report`` as it goes (so a failure half-way
    still reports the pages, rows and retries it got through)."""
    t0 = time.perf_counter()
    calls = ExchangeCalls(exchange, symbol, params, report, sleep, rng)
    step = timeframe_ms(timeframe)
    venue = venue_for(params.exchange)
    v = venue.name
    lake.repair_series(root, symbol, timeframe, v)
    calls.call("load_markets", exchange.load_markets)
    if symbol not in exchange.markets:
        raise DataError(f"{symbol}: unknown on {exchange.id}; check --symbols")

    now_ms = int(calls.call("fetch_time", exchange.fetch_time))
    end_ms = closed_end_ms(now_ms, step)
    if end is not None:
        end_ms = min(end_ms, to_ms(end))
    start_ms = align_up_ms(to_ms(start if start is not None else params.backfill_start), step)
    first, last = lake.first_timestamp(root, symbol, timeframe, v), lake.last_timestamp(root, symbol, timeframe, v)
    state = lake.read_state(root, symbol, timeframe, v)
    ranges = plan_fetch_ranges(start_ms, end_ms, ts_ms(first), ts_ms(last), step,
                               state.get("history_checked_from_ms"))
    expected = sum((hi - lo) // step for lo, hi in ranges)
    for lo, hi in ranges:
        _fetch_candle_range(calls, root, symbol, timeframe, lo, hi, venue, report, progress, expected)
    if ranges and (first is None or ranges[0][0] < ts_ms(first)):
        state = lake.read_state(root, symbol, timeframe, v)
        state["history_checked_from_ms"] = min(start_ms, state.get("history_checked_from_ms") or start_ms)
        lake.write_state(root, symbol, timeframe, state, v)

    _fill_gaps(calls, root, symbol, timeframe, venue, report, progress, end_ms)

    first, last = lake.first_timestamp(root, symbol, timeframe, v), lake.last_timestamp(root, symbol, timeframe, v)
    if ":" in symbol and params.funding:
        # no settlement precedes the first candle: start there, not at a backfill date years before listing
        funding_from = max(start_ms, ts_ms(first)) if first is not None else start_ms
        report.funding_rows_added = collect_funding(calls, root, symbol, funding_from, end_ms, now_ms, venue)
    if ":" in symbol and params.open_interest:
        if venue.open_interest:
            collect_open_interest(calls, root, symbol, timeframe, start_ms, end_ms, report)
        else:
            report.notes.append(f"open interest: not collected on {venue.name}")

    report.first_stored = first.isoformat() if first is not None else None
    report.last_stored = last.isoformat() if last is not None else None
    report.seconds = round(time.perf_counter() - t0, 3)


def _fetch_candle_range(calls: ExchangeCalls, root: Path, symbol: str, timeframe: str, lo: int, hi: int,
                        venue: Venue, report: SymbolReport, progress: ProgressFn | None,
                        expected: int) -> int:
    """Page through ``[lo, hi)``, storing each page; returns rows added."""
    step = timeframe_ms(timeframe)
    since = lo
    added = 0
    while since < hi:
        limit = int(min(calls.params.page_limit, -(-(hi - since) // step)))
        extra = venue.ohlcv_params(since, limit, step)
        rows = calls.call("fetch_ohlcv", lambda: calls.exchange.fetch_ohlcv(symbol, timeframe, since, limit, extra))
        report.pages += 1
        page = _ohlcv_frame(rows)
        page = page[(page["ts_ms"] >= since) & (page["ts_ms"] < hi)]
        if page.empty:
            break  # nothing more in this range on the exchange (a gap up to hi, or no data yet)
        result = lake.write_candles(root, symbol, timeframe, page.drop(columns="ts_ms"), venue.name)
        added += result.rows_added
        report.rows_added += result.rows_added
        since = int(page["ts_ms"].iloc[-1]) + step
        if progress is not None:
            progress(PageProgress(symbol, report.pages, report.rows_added, since - step, expected))
    return added


def _fill_gaps(calls: ExchangeCalls, root: Path, symbol: str, timeframe: str, venue: Venue,
               report: SymbolReport, progress: ProgressFn | None, end_ms: int) -> None:
    """Re-request every unknown gap once; record what stays missing as unfillable."""
    step = timeframe_ms(timeframe)
    v = venue.name
    ts = lake.stored_timestamps_ms(root, symbol, timeframe, venue=v)
    state = lake.read_state(root, symbol, timeframe, v)
    known = [(g["start_ms"], g["end_ms"]) for g in state.get("unfillable_gaps", [])]
    todo = subtract_known(find_gaps(ts, step), known)
    new_unfillable = []
    for lo, hi in todo:
        report.gap_requests += 1
        _fetch_candle_range(calls, root, symbol, timeframe, lo, hi, venue, report, progress, 0)
        now_ts = lake.stored_timestamps_ms(root, symbol, timeframe, start_ms=lo - step, end_ms=hi + step, venue=v)
        left = [g for g in find_gaps(now_ts, step) if g[0] >= lo and g[1] <= hi]
        if left:
            new_unfillable.extend(left)
        else:
            report.gaps_filled += 1
    if new_unfillable:
        state = lake.read_state(root, symbol, timeframe, v)
        gaps = state.get("unfillable_gaps", []) + [gap_record(lo, hi, step) for lo, hi in new_unfillable]
        state["unfillable_gaps"] = sorted(gaps, key=lambda g: g["start_ms"])
        lake.write_state(root, symbol, timeframe, state, v)
    report.gaps_unfillable = len(lake.read_state(root, symbol, timeframe, v).get("unfillable_gaps", []))
    if report.gaps_unfillable:
        report.notes.append(f"{report.gaps_unfillable} exchange gap(s) the exchange cannot fill (see state.json)")


def _ohlcv_frame(rows: list[list]) -> pd.DataFrame:
    frame = pd.DataFrame([r[:6] for r in rows], columns=["ts_ms", "open", "high", "low", "close", "volume"])
    frame["ts_ms"] = frame["ts_ms"].astype("int64")
    frame = frame.drop_duplicates("ts_ms", keep="last").sort_values("ts_ms").reset_index(drop=True)
    frame.insert(0, "timestamp", pd.to_datetime(frame["ts_ms"], unit="ms", utc=True).astype("datetime64[ms, UTC]"))
    return frame
