"""The order-book family: a symbol's recorded book, sampled each second, joined to its bars.

Which clock. Bars are stamped on Binance's clock (``timestamp`` = open time ``t``; the bar holds
trades in ``[t, t + bar)`` and is decided at its close ``t + bar``). The samples come from the
recording's ``levels.parquet`` (``data.orderbook.levels``), stamped on the same *event* clock: the
row at ``ts_ms = s`` is the replayed book after every depth event with event time ``<= s``, written
only once a later event proved that state held, never while the book was invalid. The receive
clock ``features.book_sampling`` samples on is not used here: the shared recording's machine ran
about 1.27 s behind Binance, so a receive-clock sample stamped at the close would really be ~1.3 s
after it. Trade flow counts the trades with trade time in ``[s - S, s)`` (a trade at exactly ``s``
belongs to the bar opening at ``s``). The one millisecond left: a depth event stamped exactly at
the close's millisecond is in the sample at the close (the levels table's ``<=`` rule) though it
belongs to the next bar's time; accepted, and said here.

The join (``join_book``, the only one: materialisation, serving and the backtest all reach it
through ``compute_features(..., alt=AltInputs(book=...))``): a bar's value is the latest sample
with ``ts_ms <= close`` - at or before the close, never after - and NaN when there is none or when
the book state behind it is older than ``book_max_age_seconds`` at the close (``close - book_ms``:
no carrying a stale book across a recording gap or an invalid stretch). ``compute_features`` drops
a row with a NaN input like a warm-up row, so a bar without a fresh book yields no row.

=======================  ====================================================================
column                   value at the sample (``features.book``'s formulas)
=======================  ====================================================================
``book_spread_bps``      (best ask - best bid) / mid, bps
``book_imbalance_N``     (bid qty - ask qty) / both, over the N best levels of each side
``book_microprice_bps``  microprice - mid, bps of the mid
``book_flow_Ss``         (taker buys - taker sells) / both over the S seconds before the sample
=======================  ====================================================================

Honest scale: one recording of six minutes covers one bar close per hour of 1h bars at most (the
shared 2024-08-08 23:54:13-23:59:59 recording: the bar opening 23:00, closing 00:00), so this
family is for wiring and tests until recordings span the history a model trains on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.book import microprice_distance_bps, spread_bps
from qt.config import FeatureParams

SAMPLE_COLUMNS = ["symbol", "timestamp", "book_ms", "spread_bps", "imbalance", "microprice_bps", "trade_flow"]
_VALUES = SAMPLE_COLUMNS[3:]


def book_columns(params: FeatureParams) -> list[str]:
    if not params.book:
        return []
    return ["book_spread_bps", f"book_imbalance_{params.book_levels}", "book_microprice_bps",
            f"book_flow_{params.book_flow_seconds}s"]


def join_book(bar_close_ms: np.ndarray, sample_ms: np.ndarray, book_ms: np.ndarray, values: np.ndarray,
              max_age_ms: float) -> np.ndarray:
    """For each bar close, the value of the latest sample with ``sample_ms <= close``; NaN before
    the first sample and where ``close - book_ms`` of that sample exceeds ``max_age_ms``.
    ``sample_ms`` ascending; ``book_ms <= sample_ms`` (the event time of the sampled state)."""
    bar_close_ms = np.asarray(bar_close_ms, dtype=np.int64)
    if not len(sample_ms):
        return np.full(len(bar_close_ms), np.nan)
    pos = np.searchsorted(sample_ms, bar_close_ms, side="right") - 1
    safe = np.maximum(pos, 0)
    fresh = (pos >= 0) & (bar_close_ms - np.asarray(book_ms)[safe] <= max_age_ms)
    return np.where(fresh, np.asarray(values, dtype=np.float64)[safe], np.nan)


def book_rows(symbol: str, closes_at: np.ndarray, params: FeatureParams, samples: pd.DataFrame) -> list[np.ndarray]:
    """One symbol's book rows (``book_columns`` order); all NaN for a symbol without samples."""
    own = samples[samples["symbol"] == symbol]
    at = own["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")
    book_ms = own["book_ms"].to_numpy(dtype=np.int64)
    max_age_ms = params.book_max_age_seconds * 1000.0
    return [join_book(closes_at, at, book_ms, own[c].to_numpy(dtype=np.float64), max_age_ms) for c in _VALUES]


def book_samples(symbol: str, levels: pd.DataFrame, trades: pd.DataFrame, top_n: int, flow_ms: int) -> pd.DataFrame:
    """``SAMPLE_COLUMNS`` rows, one per two-sided sample of a levels table (``ts_ms``, ``book_ms``,
    ``side``, ``rank``, ``price``, ``qty``) with the flow of ``trades`` (``trade_ms``, ``qty``,
    ``is_buyer_maker``: true = a taker sell) in ``[ts - flow_ms, ts)``. Any consistent units."""
    levels = levels.sort_values(["ts_ms", "side", "rank"], kind="stable")
    ts, idx = np.unique(levels["ts_ms"].to_numpy(dtype=np.int64), return_inverse=True)
    side, rank = levels["side"].to_numpy(), levels["rank"].to_numpy()
    price, qty = levels["price"].to_numpy(dtype=np.float64), levels["qty"].to_numpy(dtype=np.float64)

    def per_sample(mask: np.ndarray, what: np.ndarray) -> np.ndarray:
        return np.bincount(idx[mask], weights=what[mask], minlength=len(ts))

    top_bid, top_ask, ones = (side > 0) & (rank == 0), (side < 0) & (rank == 0), np.ones(len(side))
    best_bid, bid_qty = per_sample(top_bid, price), per_sample(top_bid, qty)
    best_ask, ask_qty = per_sample(top_ask, price), per_sample(top_ask, qty)
    two_sided = (per_sample(top_bid, ones) > 0) & (per_sample(top_ask, ones) > 0)  # a one-sided sample has no mid
    bid_top = per_sample((side > 0) & (rank < top_n), qty)
    ask_top = per_sample((side < 0) & (rank < top_n), qty)
    book_ms = np.zeros(len(ts), dtype=np.int64)
    book_ms[idx] = levels["book_ms"].to_numpy(dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = pd.DataFrame({
            "symbol": symbol, "timestamp": pd.to_datetime(ts, unit="ms", utc=True), "book_ms": book_ms,
            "spread_bps": spread_bps(best_bid, best_ask),
            "imbalance": _ratio(bid_top - ask_top, bid_top + ask_top),
            "microprice_bps": microprice_distance_bps(best_bid, bid_qty, best_ask, ask_qty),
            "trade_flow": _flow(ts, trades, flow_ms)})
    return out[two_sided].reset_index(drop=True)


def _flow(ts: np.ndarray, trades: pd.DataFrame, flow_ms: int) -> np.ndarray:
    """Taker-flow imbalance over ``[ts - flow_ms, ts)`` of trade time; NaN without trades."""
    order = np.argsort(trades["trade_ms"].to_numpy(dtype=np.int64), kind="stable")
    at = trades["trade_ms"].to_numpy(dtype=np.int64)[order]
    qty = trades["qty"].to_numpy(dtype=np.float64)[order]
    sell = trades["is_buyer_maker"].to_numpy(dtype=bool)[order]
    cum_buy = np.concatenate([[0.0], np.cumsum(np.where(sell, 0.0, qty))])
    cum_sell = np.concatenate([[0.0], np.cumsum(np.where(sell, qty, 0.0))])
    lo, hi = np.searchsorted(at, ts - flow_ms, side="left"), np.searchsorted(at, ts, side="left")
    buy, sold = cum_buy[hi] - cum_buy[lo], cum_sell[hi] - cum_sell[lo]
    return _ratio(buy - sold, buy + sold)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
