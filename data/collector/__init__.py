"""Incremental collection from a Binance-compatible exchange (through ccxt) into the raw lake.

One symbol (``collect_symbol``):

1. ask the exchange for its clock (``fetch_time``): only candles whose close time is at
   or before the server's ``now`` are stored, never the still-open one (the local clock
   of this machine is not the exchange's);
2. plan the ranges to fetch (``plan_fetch_ranges``): after the newest stored candle, and
   before the oldest one when the requested start is earlier and was never asked for;
   stored history is never downloaded again;
3. page through each range with ``since``/``limit``, writing every page to the lake at
   once, so a kill loses at most the page in flight and the next run resumes after the
   last stored candle with no duplicate and no hole;
4. find gaps (missing grid times) in what is stored, ask the exchange once for each, and
   record the ones it cannot fill in ``state.json`` so later runs report them without
   asking again;
5. for perpetuals, funding-rate and open-interest history, also incremental.

Every request goes through ``qt.backoff.retry_call``: timeouts, dropped connections, 5xx,
429/418 (honouring ``Retry-After``) are retried with capped, jittered backoff; after
``max_attempts`` the symbol fails with a ``RetryableError`` naming it. Unknown symbols and
bad requests fail that symbol at once. ``collect_universe`` runs many symbols on threads;
the Prefect collection flow (``flows/collect.py``) maps ``collect_one`` over symbols on its
task runner (threads, or Dask through prefect-dask). Either way one failing symbol is
reported and the others complete.

``python -m data.collector --root DIR --exchange-url URL --symbols A,B --timeframe 1h`` runs it
from a shell (exit 0 when every symbol completed, 1 otherwise; JSON report on stdout).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ccxt
import numpy as np
import pandas as pd

from data import lake
from qt.redact import redact
from qt.backoff import parse_retry_after_s, retry_call
from qt.config import CollectParams, Params, load_params
from qt.errors import DataError, QTError, RetryableError, UserError
from qt.timeframes import timeframe_ms

# Transient by nature: the same request may succeed later. (ccxt maps 5xx to
# ExchangeNotAvailable, 429 to RateLimitExceeded/DDoSProtection, socket errors to NetworkError.)
_RETRYABLE = (ccxt.RequestTimeout, ccxt.NetworkError, ccxt.ExchangeNotAvailable, ccxt.DDoSProtection,
              ccxt.RateLimitExceeded, ccxt.OnMaintenance)
_FUNDING_PAGE_LIMIT = 1000  # Binance /fapi/v1/fundingRate max
_OPEN_INTEREST_PAGE_LIMIT = 500  # Binance /futures/data/openInterestHist max
_OPEN_INTEREST_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")


# ----------------------------------------------------------------------------- reports

@dataclass
class SymbolReport:
    """What one symbol's collection did; ``error`` is None when it completed."""

    symbol: str
    timeframe: str
    rows_added: int = 0
    pages: int = 0
    retries: int = 0
    first_stored: str | None = None
    last_stored: str | None = None
    gaps_filled: int = 0  # gap ranges completely filled by re-requesting them this run
    gaps_unfillable: int = 0  # gap ranges the exchange cannot fill (known, not re-requested)
    gap_requests: int = 0  # gap ranges re-requested this run
    funding_rows_added: int = 0
    open_interest_rows_added: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class CollectReport:
    timeframe: str
    symbols: list[SymbolReport]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.symbols)

    @property
    def failed(self) -> list[SymbolReport]:
        return [s for s in self.symbols if not s.ok]

    def to_dict(self) -> dict:
        return {"timeframe": self.timeframe, "ok": self.ok, "seconds": round(self.seconds, 3),
                "rows_added": sum(s.rows_added for s in self.symbols),
                "failed": [s.symbol for s in self.failed],
                "symbols": [asdict(s) for s in self.symbols]}


@dataclass(frozen=True)
class PageProgress:
    """Sent to the progress sink after each stored page."""

    symbol: str
    pages: int
    rows_added: int
    last_ts_ms: int
    expected_rows: int  # closed candles in the planned ranges (an upper bound: gaps)


ProgressFn = Callable[[PageProgress], None]


# ----------------------------------------------------------------------------- pure planning

def align_up_ms(ts_ms: int, step_ms: int) -> int:
    """The first grid time (multiple of ``step_ms``) at or after ``ts_ms``."""
    return -(-ts_ms // step_ms) * step_ms


def closed_end_ms(server_now_ms: int, step_ms: int) -> int:
    """Exclusive bound on open times of closed candles: the open time of the candle in
    progress at ``server_now_ms`` (a candle opened at t is closed when t + step <= now)."""
    return (server_now_ms // step_ms) * step_ms


def plan_fetch_ranges(start_ms: int, end_ms: int, stored_first_ms: int | None, stored_last_ms: int | None,
                      step_ms: int, history_checked_from_ms: int | None) -> list[tuple[int, int]]:
    """``[lo, hi)`` open-time ranges to request, oldest first; never one already stored.

    Nothing stored: ``[start, end)``. Stored: the tail after the newest candle, and the head
    before the oldest when ``start`` is earlier than both the oldest candle and any start
    already asked for (``history_checked_from_ms``: before a listing there is nothing to get,
    and asking again every run would re-download the first page each time).
    """
    if start_ms >= end_ms:
        return []
    if stored_last_ms is None or stored_first_ms is None:
        return [(start_ms, end_ms)]
    ranges = []
    already_asked = history_checked_from_ms is not None and history_checked_from_ms <= start_ms
    if start_ms < stored_first_ms and not already_asked:
        ranges.append((start_ms, min(stored_first_ms, end_ms)))
    tail_lo = max(stored_last_ms + step_ms, start_ms)
    if tail_lo < end_ms:
        ranges.append((tail_lo, end_ms))
    return ranges


def find_gaps(ts_ms: np.ndarray, step_ms: int) -> list[tuple[int, int]]:
    """Missing grid times inside a sorted open-time array, as ``[lo, hi)`` ranges."""
    if len(ts_ms) < 2:
        return []
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    jumps = np.nonzero(np.diff(ts_ms) > step_ms)[0]
    return [(int(ts_ms[i]) + step_ms, int(ts_ms[i + 1])) for i in jumps]


def subtract_known(gaps: list[tuple[int, int]], known: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Gaps not inside any known (already recorded unfillable) range."""
    return [g for g in gaps if not any(k_lo <= g[0] and g[1] <= k_hi for k_lo, k_hi in known)]


def rank_universe(tickers: dict[str, float | None], markets: dict[str, dict], params: CollectParams) -> list[str]:
    """Top ``params.top_n`` symbols by 24h quote volume among active markets of
    ``params.market`` quoted in ``params.quote``, without stablecoin bases and leveraged
    tokens (``BTCUP``: a base ending in UP/DOWN/BULL/BEAR whose remainder is itself a base,
    so ``JUP`` stays). Pure: ``tickers`` maps symbol -> quote volume."""
    want_type = "spot" if params.market == "spot" else "swap"
    candidates = {s: m for s, m in markets.items()
                  if m.get("type") == want_type and m.get("quote") == params.quote and m.get("active", True) is not False
                  and (want_type == "spot" or (m.get("linear") and m.get("settle") == params.quote))}
    bases = {m.get("base") for m in candidates.values()}
    excluded = set(params.exclude_bases)

    def leveraged(base: str) -> bool:
        return any(base.endswith(sfx) and base[: -len(sfx)] in bases for sfx in params.exclude_base_suffixes)

    eligible = [s for s, m in candidates.items() if m.get("base") not in excluded and not leveraged(m.get("base", ""))]
    eligible = [s for s in eligible if tickers.get(s) is not None]
    eligible.sort(key=lambda s: (-float(tickers[s]), s))
    return eligible[: params.top_n]


# ----------------------------------------------------------------------------- the exchange adapter

class _Requests:
    """Retried reads for one symbol: counts retries into the report, converts ccxt errors."""

    def __init__(self, exchange: ccxt.Exchange, symbol: str, params: CollectParams, report: SymbolReport,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None):
        self.exchange = exchange
        self.symbol = symbol
        self.params = params
        self.report = report
        self.sleep = sleep
        self.rng = rng or random.Random()

    def call(self, what: str, fn: Callable[[], object]):
        def on_retry(attempt: int, exc: BaseException, wait_s: float) -> None:
            self.report.retries += 1

        try:
            return retry_call(fn, is_retryable=_is_retryable, max_attempts=self.params.max_attempts,
                              base_s=self.params.backoff_base_s, cap_s=self.params.backoff_cap_s,
                              sleep=self.sleep, rng=self.rng, retry_after_s=_retry_after_s, on_retry=on_retry)
        except ccxt.BaseError as exc:
            raise _convert(exc, self.symbol, what, self.params.max_attempts, self.exchange.id) from None


def _http_response(exc: BaseException):
    """The ``requests`` response behind a ccxt error (ccxt raises inside ``except HTTPError``)."""
    seen = 0
    node: BaseException | None = exc
    while node is not None and seen < 5:
        response = getattr(node, "response", None)
        if response is not None and hasattr(response, "status_code"):
            return response
        node = node.__cause__ or node.__context__
        seen += 1
    return None


def _http_status(exc: BaseException) -> int | None:
    response = _http_response(exc)
    return int(response.status_code) if response is not None else None


def _is_retryable(exc: BaseException) -> bool:
    # ccxt maps 404 to ExchangeNotAvailable, but on Binance a 404 is a path the server does not
    # serve: asking again cannot help.
    return isinstance(exc, _RETRYABLE) and _http_status(exc) != 404


def _retry_after_s(exc: BaseException) -> float | None:
    response = _http_response(exc)
    return parse_retry_after_s(response.headers.get("Retry-After")) if response is not None else None


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = redact(" ".join(str(exc).split()))  # ccxt messages carry signed URLs
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _convert(exc: ccxt.BaseError, symbol: str, what: str, attempts: int, exchange_id: str) -> QTError:
    if _is_retryable(exc):
        return RetryableError(f"{symbol}: {what} on {exchange_id} still failing after {attempts} attempts "
                              f"({type(exc).__name__}: {_one_line(exc)}); re-run later, it resumes where it stopped")
    if isinstance(exc, ccxt.BadSymbol):
        return DataError(f"{symbol}: unknown on {exchange_id}; check --symbols")
    if isinstance(exc, ccxt.AuthenticationError):
        return UserError(f"{symbol}: {exchange_id} refused the credentials ({_one_line(exc)}); check the API key")
    status = _http_status(exc)
    where = f"HTTP {status} " if status is not None else ""
    return DataError(f"{symbol}: {what} on {exchange_id} refused: {where}{type(exc).__name__}: {_one_line(exc)}")


# ----------------------------------------------------------------------------- one symbol

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
    _collect_symbol_into(report, exchange, Path(root), symbol, timeframe, start, end, params, progress, sleep, rng)
    return report


def _collect_symbol_into(report: SymbolReport, exchange: ccxt.Exchange, root: Path, symbol: str, timeframe: str,
                         start, end, params: CollectParams, progress: ProgressFn | None,
                         sleep: Callable[[float], None], rng: random.Random | None) -> None:
    """``collect_symbol``'s work, counting into ``report`` as it goes (so a failure half-way
    still reports the pages, rows and retries it got through)."""
    t0 = time.perf_counter()
    requests = _Requests(exchange, symbol, params, report, sleep, rng)
    step = timeframe_ms(timeframe)
    lake.repair_series(root, symbol, timeframe)
    requests.call("load_markets", exchange.load_markets)
    if symbol not in exchange.markets:
        raise DataError(f"{symbol}: unknown on {exchange.id}; check --symbols")

    now_ms = int(requests.call("fetch_time", exchange.fetch_time))
    end_ms = closed_end_ms(now_ms, step)
    if end is not None:
        end_ms = min(end_ms, _to_ms(end))
    start_ms = align_up_ms(_to_ms(start if start is not None else params.backfill_start), step)
    first, last = lake.first_timestamp(root, symbol, timeframe), lake.last_timestamp(root, symbol, timeframe)
    state = lake.read_state(root, symbol, timeframe)
    ranges = plan_fetch_ranges(start_ms, end_ms, _ts_ms(first), _ts_ms(last), step,
                               state.get("history_checked_from_ms"))
    expected = sum((hi - lo) // step for lo, hi in ranges)
    for lo, hi in ranges:
        _fetch_candle_range(requests, root, symbol, timeframe, lo, hi, params, report, progress, expected)
    if ranges and (first is None or ranges[0][0] < _ts_ms(first)):
        state = lake.read_state(root, symbol, timeframe)
        state["history_checked_from_ms"] = min(start_ms, state.get("history_checked_from_ms") or start_ms)
        lake.write_state(root, symbol, timeframe, state)

    _fill_gaps(requests, root, symbol, timeframe, params, report, progress, end_ms)

    if ":" in symbol and params.funding:
        report.funding_rows_added = _collect_funding(requests, root, symbol, start_ms, end_ms, now_ms)
    if ":" in symbol and params.open_interest:
        _collect_open_interest(requests, root, symbol, timeframe, start_ms, end_ms, report)

    first, last = lake.first_timestamp(root, symbol, timeframe), lake.last_timestamp(root, symbol, timeframe)
    report.first_stored = first.isoformat() if first is not None else None
    report.last_stored = last.isoformat() if last is not None else None
    report.seconds = round(time.perf_counter() - t0, 3)


def _fetch_candle_range(requests: _Requests, root: Path, symbol: str, timeframe: str, lo: int, hi: int,
                        params: CollectParams, report: SymbolReport, progress: ProgressFn | None,
                        expected: int) -> int:
    """Page through ``[lo, hi)``, storing each page; returns rows added."""
    step = timeframe_ms(timeframe)
    since = lo
    added = 0
    while since < hi:
        limit = int(min(params.page_limit, -(-(hi - since) // step)))
        rows = requests.call("fetch_ohlcv", lambda: requests.exchange.fetch_ohlcv(symbol, timeframe, since, limit))
        report.pages += 1
        page = _ohlcv_frame(rows)
        page = page[(page["ts_ms"] >= since) & (page["ts_ms"] < hi)]
        if page.empty:
            break  # nothing more in this range on the exchange (a gap up to hi, or no data yet)
        result = lake.write_candles(root, symbol, timeframe, page.drop(columns="ts_ms"))
        added += result.rows_added
        report.rows_added += result.rows_added
        since = int(page["ts_ms"].iloc[-1]) + step
        if progress is not None:
            progress(PageProgress(symbol, report.pages, report.rows_added, since - step, expected))
    return added


def _fill_gaps(requests: _Requests, root: Path, symbol: str, timeframe: str, params: CollectParams,
               report: SymbolReport, progress: ProgressFn | None, end_ms: int) -> None:
    """Re-request every unknown gap once; record what stays missing as unfillable."""
    step = timeframe_ms(timeframe)
    ts = lake.stored_timestamps_ms(root, symbol, timeframe)
    state = lake.read_state(root, symbol, timeframe)
    known = [(g["start_ms"], g["end_ms"]) for g in state.get("unfillable_gaps", [])]
    todo = subtract_known(find_gaps(ts, step), known)
    new_unfillable = []
    for lo, hi in todo:
        report.gap_requests += 1
        _fetch_candle_range(requests, root, symbol, timeframe, lo, hi, params, report, progress, 0)
        now_ts = lake.stored_timestamps_ms(root, symbol, timeframe, start_ms=lo - step, end_ms=hi + step)
        left = [g for g in find_gaps(now_ts, step) if g[0] >= lo and g[1] <= hi]
        if left:
            new_unfillable.extend(left)
        else:
            report.gaps_filled += 1
    if new_unfillable:
        state = lake.read_state(root, symbol, timeframe)
        gaps = state.get("unfillable_gaps", []) + [_gap_record(lo, hi, step) for lo, hi in new_unfillable]
        state["unfillable_gaps"] = sorted(gaps, key=lambda g: g["start_ms"])
        lake.write_state(root, symbol, timeframe, state)
    report.gaps_unfillable = len(lake.read_state(root, symbol, timeframe).get("unfillable_gaps", []))
    if report.gaps_unfillable:
        report.notes.append(f"{report.gaps_unfillable} exchange gap(s) the exchange cannot fill (see state.json)")


def _gap_record(lo: int, hi: int, step: int) -> dict:
    return {"start_ms": lo, "end_ms": hi, "missing_bars": (hi - lo) // step,
            "start": pd.Timestamp(lo, unit="ms", tz="UTC").isoformat(),
            "end": pd.Timestamp(hi, unit="ms", tz="UTC").isoformat()}


def _collect_funding(requests: _Requests, root: Path, symbol: str, start_ms: int, end_ms: int, now_ms: int) -> int:
    """Funding settlements after the newest stored one (or from ``start_ms``), up to now."""
    last = lake.last_funding_timestamp(root, symbol)
    since = _ts_ms(last) + 1 if last is not None else start_ms
    added = 0
    while since < min(end_ms, now_ms + 1):
        rows = requests.call("fetch_funding_rate_history",
                             lambda: requests.exchange.fetch_funding_rate_history(symbol, since, _FUNDING_PAGE_LIMIT))
        frame = pd.DataFrame({"ts_ms": [int(r["timestamp"]) for r in rows],
                              "funding_rate": [float(r["fundingRate"]) for r in rows]})
        frame = frame[(frame["ts_ms"] >= since) & (frame["ts_ms"] <= now_ms) & (frame["ts_ms"] < end_ms)]
        if frame.empty:
            break
        frame = frame.sort_values("ts_ms")
        frame["timestamp"] = pd.to_datetime(frame["ts_ms"], unit="ms", utc=True)
        added += lake.write_funding(root, symbol, frame[["timestamp", "funding_rate"]]).rows_added
        since = int(frame["ts_ms"].iloc[-1]) + 1
        if len(rows) < _FUNDING_PAGE_LIMIT:
            break
    return added


def _collect_open_interest(requests: _Requests, root: Path, symbol: str, timeframe: str, start_ms: int,
                           end_ms: int, report: SymbolReport) -> None:
    """Open-interest history at the candle timeframe (5m when the candles are 1m: Binance
    has no 1m period). An exchange that does not serve it is a note, not an error: Binance
    itself keeps only ~30 days, so it can never be complete history anyway."""
    period = timeframe if timeframe in _OPEN_INTEREST_PERIODS else "5m"
    step = timeframe_ms(period)
    if not requests.exchange.has.get("fetchOpenInterestHistory"):
        report.notes.append(f"open interest: {requests.exchange.id} has no fetchOpenInterestHistory")
        return
    last = lake.last_open_interest_timestamp(root, symbol, period)
    since = max(_ts_ms(last) + step if last is not None else start_ms, start_ms)
    while since < end_ms:
        try:
            rows = requests.call("fetch_open_interest_history", lambda: requests.exchange.fetch_open_interest_history(
                symbol, period, since, _OPEN_INTEREST_PAGE_LIMIT))
        except (DataError, RetryableError) as exc:
            if isinstance(exc, DataError) and ("HTTP 404" in str(exc) or "NotSupported" in str(exc)):
                report.notes.append(f"open interest: not served by the exchange ({_one_line(exc, 120)})")
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
        report.open_interest_rows_added += lake.write_open_interest(
            root, symbol, period, frame[["timestamp", "open_interest", "open_interest_value"]]).rows_added
        since = int(frame["ts_ms"].iloc[-1]) + step


def _float(value) -> float:
    return float(value) if value is not None else float("nan")


def _ohlcv_frame(rows: list[list]) -> pd.DataFrame:
    frame = pd.DataFrame([r[:6] for r in rows], columns=["ts_ms", "open", "high", "low", "close", "volume"])
    frame["ts_ms"] = frame["ts_ms"].astype("int64")
    frame = frame.drop_duplicates("ts_ms", keep="last").sort_values("ts_ms").reset_index(drop=True)
    frame.insert(0, "timestamp", pd.to_datetime(frame["ts_ms"], unit="ms", utc=True).astype("datetime64[ms, UTC]"))
    return frame


def _to_ms(value) -> int:
    return int(lake._ts(value).value // 1_000_000)


def _ts_ms(ts: pd.Timestamp | None) -> int | None:
    return None if ts is None else int(ts.value // 1_000_000)


# ----------------------------------------------------------------------------- the universe

def select_universe(exchange: ccxt.Exchange, params: Params) -> list[str]:
    """``data.symbols`` (universe "list"), or the top ``collect.top_n`` by 24h quote volume
    from ``fetch_tickers`` with the stablecoin and leveraged-token filters (universe "top")."""
    c = params.collect
    if c.universe == "list":
        return list(params.data.symbols)
    report = SymbolReport(symbol="(universe)", timeframe=params.data.timeframe)
    requests = _Requests(exchange, "(universe)", c, report)
    requests.call("load_markets", exchange.load_markets)
    tickers = requests.call("fetch_tickers", exchange.fetch_tickers)
    volumes = {s: t.get("quoteVolume") for s, t in tickers.items()}
    chosen = rank_universe(volumes, exchange.markets, c)
    if not chosen:
        raise DataError(f"no {c.market} market quoted in {c.quote} with a 24h volume on {exchange.id}; "
                        f"check collect.quote / collect.market")
    return chosen


def _market_of(symbol: str) -> str:
    return "perp" if ":" in symbol else "spot"


def collect_one(params: Params, root: Path | str, exchange_url: str | None, symbol: str,
                progress: bool = True) -> SymbolReport:
    """One symbol with its own ccxt client, never raising for an expected failure: the unit the
    Prefect collection flow maps over symbols (threads locally, processes on Dask workers)."""
    sink = _LineProgress(params.collect.progress_every_pages) if progress else None
    report = _collect_job(exchange_url, str(root), symbol, params.data.timeframe, params.data.start,
                          params.data.end, params.collect, sink.page if sink else None, None)
    if sink is not None:
        sink.done(report)
    return report


def _collect_job(exchange_url: str | None, root: str, symbol: str, timeframe: str, start, end,
                 params: CollectParams, progress: ProgressFn | None, clients: dict | None) -> SymbolReport:
    """One symbol, never raising for an expected failure (it goes into the report)."""
    from qt.binance import make_ccxt

    t0 = time.perf_counter()
    report = SymbolReport(symbol=symbol, timeframe=timeframe)
    try:
        market = _market_of(symbol)
        if clients is None:
            exchange = make_ccxt(market, exchange_url, params.timeout_ms)
        else:
            exchange = clients.get(market) or clients.setdefault(
                market, make_ccxt(market, exchange_url, params.timeout_ms))
        _collect_symbol_into(report, exchange, Path(root), symbol, timeframe, start, end, params, progress,
                             time.sleep, None)
        return report
    except (QTError, ccxt.BaseError) as exc:
        report.error = _one_line(exc, 400)
        first = lake.first_timestamp(Path(root), symbol, timeframe) if "/" in symbol else None
        last = lake.last_timestamp(Path(root), symbol, timeframe) if "/" in symbol else None
        report.first_stored = first.isoformat() if first is not None else None
        report.last_stored = last.isoformat() if last is not None else None
        report.seconds = round(time.perf_counter() - t0, 3)
        return report


def collect_universe(params: Params, root: Path, exchange_url: str | None = None,
                     symbols: list[str] | None = None, progress: bool = True) -> CollectReport:
    """Collect ``symbols`` (default: ``select_universe``) at ``data.timeframe`` over
    ``[data.start, data.end)`` into ``root``, ``collect.concurrency`` at a time.

    Never raises for one symbol's failure: each is in the report (``report.ok`` is False,
    ``report.failed`` names them). ``exchange_url`` overrides ``collect.exchange_url``.
    """
    from qt.binance import make_ccxt

    t0 = time.perf_counter()
    c = params.collect
    url = exchange_url if exchange_url is not None else c.exchange_url
    tf = params.data.timeframe
    if symbols is None:
        symbols = select_universe(make_ccxt(c.market, url, c.timeout_ms), params)
    sink = _make_progress(symbols, c.progress_every_pages) if progress else None
    try:
        reports = _run_threads(url, root, symbols, tf, params, sink)
    finally:
        if sink is not None:
            sink.close()
    return CollectReport(timeframe=tf, symbols=reports, seconds=time.perf_counter() - t0)


def _run_threads(url, root, symbols, tf, params: Params, sink) -> list[SymbolReport]:
    local = threading.local()  # one ccxt client per worker thread and market (not thread-safe)

    def job(symbol: str) -> SymbolReport:
        if not hasattr(local, "clients"):
            local.clients = {}
        report = _collect_job(url, str(root), symbol, tf, params.data.start, params.data.end, params.collect,
                              sink.page if sink else None, local.clients)
        if sink is not None:
            sink.done(report)
        return report

    with ThreadPoolExecutor(max_workers=min(params.collect.concurrency, max(1, len(symbols)))) as pool:
        return list(pool.map(job, symbols))


# ----------------------------------------------------------------------------- progress

class _LineProgress:
    """Not a TTY: one line per ``every`` pages of a symbol and one when it finishes."""

    def __init__(self, every: int, stream=None):
        self.every = every
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def page(self, p: PageProgress) -> None:
        if p.pages % self.every:
            return
        when = pd.Timestamp(p.last_ts_ms, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")
        self._line(f"collect {p.symbol}: {p.pages} pages, +{p.rows_added} candles (of <= {p.expected_rows}), "
                   f"up to {when}")

    def done(self, r: SymbolReport) -> None:
        if r.ok:
            self._line(f"collect {r.symbol}: done, +{r.rows_added} candles in {r.pages} pages, {r.retries} retries, "
                       f"stored {r.first_stored} .. {r.last_stored}, gaps filled {r.gaps_filled}, "
                       f"unfillable {r.gaps_unfillable}")
        else:
            self._line(f"collect {r.symbol}: FAILED: {r.error}")

    def _line(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class _RichProgress:
    """A TTY: one rich progress bar per symbol (total = closed candles planned)."""

    def __init__(self, symbols: list[str]):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), transient=False)
        self._tasks = {s: self._progress.add_task(s, total=None) for s in symbols}
        self._progress.start()

    def page(self, p: PageProgress) -> None:
        self._progress.update(self._tasks[p.symbol], completed=p.rows_added, total=max(p.expected_rows, p.rows_added))

    def done(self, r: SymbolReport) -> None:
        label = f"{r.symbol} ok" if r.ok else f"{r.symbol} FAILED: {r.error}"
        self._progress.update(self._tasks[r.symbol], description=label, completed=r.rows_added,
                              total=max(r.rows_added, 1))

    def close(self) -> None:
        self._progress.stop()


def _make_progress(symbols: list[str], every: int):
    return _RichProgress(symbols) if sys.stdout.isatty() else _LineProgress(every)


# ----------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.collector", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="raw lake directory")
    parser.add_argument("--exchange-url", default=None, help="http://HOST:PORT of a Binance-compatible server")
    parser.add_argument("--symbols", default=None, help="comma-separated ccxt symbols (default: params)")
    parser.add_argument("--timeframe", default=None)
    parser.add_argument("--start", default=None)
    parser.add_argument("--end", default=None)
    parser.add_argument("--params", default=None, help="params.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="collect.KEY=JSON",
                        help="override a collect parameter, e.g. --set collect.page_limit=500")
    args = parser.parse_args(argv)
    overrides: dict = {"data": {}, "collect": {}}
    if args.symbols:
        overrides["data"]["symbols"] = [s.strip() for s in args.symbols.split(",") if s.strip()]
    for key in ("timeframe", "start", "end"):
        if getattr(args, key) is not None:
            overrides["data"][key] = getattr(args, key)
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if section != "collect" or not name or not value:
            print(f"--set {item!r}: expected collect.KEY=VALUE", file=sys.stderr)
            return 2
        try:
            overrides["collect"][name] = json.loads(value)
        except json.JSONDecodeError:
            overrides["collect"][name] = value
    try:
        params = load_params(args.params, overrides)
        report = collect_universe(params, Path(args.root), exchange_url=args.exchange_url)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
