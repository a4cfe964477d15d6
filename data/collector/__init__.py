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

The package, one module per responsibility: ``planning`` (pure range and gap arithmetic),
``calls`` (retried requests, ccxt errors through ``qt.binance`` / ``qt.redact``), ``symbol`` (one
symbol's loop), ``perp_series`` (funding, open interest), ``universe`` (which symbols),
``run`` (many symbols, one report each), ``reports`` (reports and progress), ``__main__``
(the command line). The public names are importable from ``data.collector``.
"""

from __future__ import annotations

from data.collector.calls import ExchangeCalls
from data.collector.planning import align_up_ms, closed_end_ms, find_gaps, plan_fetch_ranges, subtract_known
from data.collector.reports import CollectReport, PageProgress, ProgressFn, SymbolReport
from data.collector.run import collect_one, collect_universe
from data.collector.symbol import collect_symbol
from data.collector.universe import rank_universe, select_universe

__all__ = ["CollectReport", "ExchangeCalls", "PageProgress", "ProgressFn", "SymbolReport", "align_up_ms",
           "closed_end_ms", "collect_one", "collect_symbol", "collect_universe", "find_gaps", "plan_fetch_ranges",
           "rank_universe", "select_universe", "subtract_known"]
