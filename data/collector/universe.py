"""Which symbols to collect: the configured list, or the top N by 24h quote volume.

Why a module of its own: universe selection is a decision about the market (volume ranking,
stablecoin and leveraged-token filters), made once per run before any symbol is collected;
``rank_universe`` is pure so it is tested on plain dictionaries.
"""

from __future__ import annotations

import ccxt

from data.collector.calls import ExchangeCalls
from data.collector.reports import SymbolReport
from qt.config import CollectParams, Params
from qt.errors import DataError


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


def select_universe(exchange: ccxt.Exchange, params: Params) -> list[str]:
    """``data.symbols`` (universe "list"), or the top ``collect.top_n`` by 24h quote volume
    from ``fetch_tickers`` with the stablecoin and leveraged-token filters (universe "top")."""
    c = params.collect
    if c.universe == "list":
        return list(params.data.symbols)
    report = SymbolReport(symbol="(universe)", timeframe=params.data.timeframe)
    calls = ExchangeCalls(exchange, "(universe)", c, report)
    calls.call("load_markets", exchange.load_markets)
    tickers = calls.call("fetch_tickers", exchange.fetch_tickers)
    volumes = {s: t.get("quoteVolume") for s, t in tickers.items()}
    chosen = rank_universe(volumes, exchange.markets, c)
    if not chosen:
        raise DataError(f"no {c.market} market quoted in {c.quote} with a 24h volume on {exchange.id}; "
                        f"check collect.quote / collect.market")
    return chosen
