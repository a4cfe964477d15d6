"""Running the collector over many symbols: one ccxt client per worker, one report per symbol.

Why a module of its own: this is where a symbol's failure stops being an exception and becomes
a line in the report (the others complete), and where the concurrency lives - threads here
(``collect_universe``), Prefect tasks in ``flows/collect.py`` (both call ``collect_one`` /
the same job, so both runners store byte-identical lakes).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ccxt

from data import lake
from data.collector.calls import message_line
from data.collector.reports import CollectReport, LineProgress, ProgressFn, SymbolReport, make_progress
from data.collector.symbol import collect_symbol_into
from data.collector.universe import select_universe
from qt.venues import make_client, market_of, venue_for
from qt.config import CollectParams, Params
from qt.errors import QTError


def collect_one(params: Params, root: Path | str, exchange_url: str | None, symbol: str,
                progress: bool = True) -> SymbolReport:
    """One symbol with its own ccxt client, never raising for an expected failure: the unit the
    Prefect collection flow maps over symbols (threads locally, processes on Dask workers)."""
    sink = LineProgress(params.collect.progress_every_pages) if progress else None
    report = _collect_job(exchange_url, str(root), symbol, params.data.timeframe, params.data.start,
                          params.data.end, params.collect, sink.page if sink else None, None)
    if sink is not None:
        sink.done(report)
    return report


def _collect_job(exchange_url: str | None, root: str, symbol: str, timeframe: str, start, end,
                 params: CollectParams, progress: ProgressFn | None, clients: dict | None) -> SymbolReport:
    """One symbol, never raising for an expected failure (it goes into the report)."""
    t0 = time.perf_counter()
    report = SymbolReport(symbol=symbol, timeframe=timeframe)
    try:
        market = market_of(symbol)
        if clients is None:
            exchange = make_client(params.exchange, market, exchange_url, params.timeout_ms)
        else:
            exchange = clients.get(market) or clients.setdefault(
                market, make_client(params.exchange, market, exchange_url, params.timeout_ms))
        collect_symbol_into(report, exchange, Path(root), symbol, timeframe, start, end, params, progress,
                            time.sleep, None)
        return report
    except (QTError, ccxt.BaseError) as exc:
        report.error = message_line(exc, 400)
        venue = venue_for(params.exchange).name
        stored = "/" in symbol and (venue == "binance" or ":" in symbol)
        first = lake.first_timestamp(Path(root), symbol, timeframe, venue) if stored else None
        last = lake.last_timestamp(Path(root), symbol, timeframe, venue) if stored else None
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
    t0 = time.perf_counter()
    c = params.collect
    url = exchange_url if exchange_url is not None else c.exchange_url
    tf = params.data.timeframe
    if symbols is None:
        symbols = list(params.data.symbols) if c.universe == "list" else select_universe(
            make_client(c.exchange, c.market, url, c.timeout_ms), params)
    sink = make_progress(symbols, c.progress_every_pages) if progress else None
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
