"""Alternative-data feature families: market sentiment, BTC on-chain valuation, news flow.

Why: these describe the market's mood and positioning, which candles of one symbol do not
show. OFF by default; each family is one ``features.*`` key so an ablation switches it with one
override. ``compute_features(..., alt=AltInputs(...))`` must be given the series an enabled
family reads (``alt_series_needed``); they come from the lake's ``alt/`` (``data.alt_lake``).
Every value is joined point in time by ``features.alt_join.asof_join`` (published strictly
before the bar's close; see that module for the rule and its consequences).

=========================  ==================================================================
column                     value
=========================  ==================================================================
``fng_value``              the last published Fear & Greed value (0-100)
``fng_change_N``           that value minus the value of the day N calendar days earlier (as of
                           that day: a missing day carries the previous value)
``fng_z_N``                z of the value within the last N published values (ddof=1); 0 when
                           they are constant
``onchain_mvrv``           the last known MVRV (market value / realised value)
``onchain_nupl``           the last known NUPL (fraction of market value)
``onchain_realised_dist``  BTC close / last known realised price - 1. BTC symbols use their own
                           bar close (fresh); other symbols carry no BTC price, so they get the
                           day-end value ``mvrv - 1`` of the last known day
``etf_flow_z_N``           z of the last US spot-ETF net flow within the last N flows (ddof=1);
                           0 before N flows exist (no ETF traded before 2024-01-11)
``news_count_N``           headlines published in the last N hours before the close
``news_votes_N``           sum of (positive - negative) votes of those headlines
``news_sent_N``            mean VADER compound sentiment (-1..1) of their titles; 0 when none
=========================  ==================================================================

The order-book family (``features.book``) rides in the same ``AltInputs`` (``book``) and comes last
in ``alt_columns``: per symbol, from its own recording, whatever ``alt_scope`` says; its columns and
join rule are in ``features.book_bars``.

Each metric carries its own last known value (a NaN in the source, e.g. NUPL before 2011, is
skipped, not joined). Rows before a needed series starts (Fear & Greed before 2018-02-01, the
on-chain metrics before theirs) are undefined (NaN) and dropped by ``compute_features`` like
warm-up rows; news counts are 0 before the first headline. Scope (``features.alt_scope``):
``all`` gives every symbol the market-wide values; ``btc`` only BTC symbols (base ``BTC``),
the others get 0.

Sentiment lexicon: VADER (``vaderSentiment`` 3.3.2 on PyPI, MIT) ships its lexicon file inside
the package, so nothing is downloaded at run time and the score is deterministic; it is a
small rule-based model built for short social-media text, which headlines resemble. The
headline votes in the shared file are counts at scrape time (look-ahead; see the data README):
good for tests, not for measuring a signal.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from features.alt_join import AltInputs, asof_join, available_ms, window_bounds
from features.book_bars import book_columns, book_rows
from features.cross_venue import rolling_zscore
from qt.config import FeatureParams
from qt.errors import DataError

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
COLLECT_HINT = "collect it (alt.series in params.yaml, then `qt collect`)"


def alt_columns(params: FeatureParams) -> list[str]:
    cols = ["fng_value"] if params.fng else []
    cols += [f"fng_change_{n}" for n in params.fng_change] + [f"fng_z_{n}" for n in params.fng_z]
    cols += ["onchain_mvrv", "onchain_nupl", "onchain_realised_dist"] if params.onchain else []
    cols += [f"etf_flow_z_{n}" for n in params.etf_flow_z]
    for n in params.news_hours:
        cols += [f"news_count_{n}", f"news_votes_{n}", f"news_sent_{n}"]
    return cols + book_columns(params)


def alt_series_needed(params: FeatureParams) -> list[str]:
    """The lake's alt series (``data.alt_lake.SERIES``) the enabled families read."""
    out = ["fear_greed"] if (params.fng or params.fng_change or params.fng_z) else []
    out += ["onchain_btc"] if (params.onchain or params.etf_flow_z) else []
    return out + (["headlines"] if params.news_hours else [])


def uses_alt(params: FeatureParams) -> bool:
    """Any family joined through ``AltInputs``: the lake's alt series or the order book."""
    return bool(alt_series_needed(params)) or params.book


def check_alt_params(params: FeatureParams) -> str | None:
    for name, low in (("fng_change", 1), ("fng_z", 2), ("etf_flow_z", 2), ("news_hours", 1)):
        periods = list(getattr(params, name))
        if any(p < low for p in periods) or len(set(periods)) != len(periods):
            return f"features.{name}: periods must be >= {low} and listed once, got {periods}"
    return None


def in_scope(symbol: str, params: FeatureParams) -> bool:
    return params.alt_scope == "all" or symbol.split("/")[0].upper() == "BTC"


def require_alt(alt: AltInputs | None, params: FeatureParams) -> AltInputs | None:
    """``alt`` when every series an enabled family reads is in it (None when no family is on)."""
    if not uses_alt(params):
        return None
    for name in alt_series_needed(params) + (["book"] if params.book else []):
        frame = None if alt is None else getattr(alt, name)
        if frame is None:
            raise DataError(f"the alt features need the {name} series but none was passed; call compute_features(..., "
                            f"alt=AltInputs({name}=...)) or {COLLECT_HINT}")
    return alt


def alt_rows(symbol: str, open_ms: np.ndarray, close: np.ndarray, bar_ms: int, params: FeatureParams,
             alt: AltInputs) -> list[np.ndarray]:
    """One symbol's alt rows (``alt_columns`` order), NaN where undefined. The book rows are the
    symbol's own book (``features.book_bars``), whatever ``alt_scope`` says."""
    closes_at = open_ms + bar_ms
    book = book_rows(symbol, closes_at, params, alt.book) if params.book else []
    if not in_scope(symbol, params):
        return [np.zeros(len(open_ms))] * (len(alt_columns(params)) - len(book)) + book
    rows: list[np.ndarray] = []
    if params.fng or params.fng_change or params.fng_z:
        rows += _fng_rows(closes_at, params, alt.fear_greed)
    if params.onchain or params.etf_flow_z:
        rows += _onchain_rows(symbol, closes_at, close, params, alt.onchain_btc)
    if params.news_hours:
        rows += _news_rows(closes_at, params, alt.headlines)
    return rows + book


def _fng_rows(closes_at: np.ndarray, params: FeatureParams, fng: pd.DataFrame) -> list[np.ndarray]:
    fng = fng[fng["value"].notna()]
    avail, day = available_ms(fng), available_ms(fng, "timestamp")
    value = fng["value"].to_numpy(dtype=np.float64)
    rows = [asof_join(closes_at, avail, value)] if params.fng else []
    for n in params.fng_change:
        earlier = np.searchsorted(day, day - n * DAY_MS, side="right") - 1
        change = np.where(earlier >= 0, value - value[np.maximum(earlier, 0)], np.nan)
        rows.append(asof_join(closes_at, avail, change))
    rows += [asof_join(closes_at, avail, rolling_zscore(value, n)) for n in params.fng_z]
    return rows


def _onchain_rows(symbol: str, closes_at: np.ndarray, close: np.ndarray, params: FeatureParams,
                  onchain: pd.DataFrame) -> list[np.ndarray]:
    rows = []
    if params.onchain:
        mvrv = _metric(closes_at, onchain, "mvrv")
        realised = _metric(closes_at, onchain, "realized_price")
        own_btc = symbol.split("/")[0].upper() == "BTC"
        rows += [mvrv, _metric(closes_at, onchain, "nupl"), close / realised - 1.0 if own_btc else mvrv - 1.0]
    flows = onchain[onchain["etf_flow_usd"].notna()]
    for n in params.etf_flow_z:
        z = rolling_zscore(flows["etf_flow_usd"].to_numpy(dtype=np.float64), n)
        joined = asof_join(closes_at, available_ms(flows), np.nan_to_num(z, nan=0.0))
        rows.append(np.nan_to_num(joined, nan=0.0))
    return rows


def _metric(closes_at: np.ndarray, onchain: pd.DataFrame, column: str) -> np.ndarray:
    known = onchain[onchain[column].notna()]
    return asof_join(closes_at, available_ms(known), known[column].to_numpy(dtype=np.float64))


def _news_rows(closes_at: np.ndarray, params: FeatureParams, headlines: pd.DataFrame) -> list[np.ndarray]:
    avail = available_ms(headlines)
    net = (headlines["votes_positive"].to_numpy(dtype=np.float64)
           - headlines["votes_negative"].to_numpy(dtype=np.float64))
    sentiment = np.array([title_sentiment(str(t)) for t in headlines["title"]], dtype=np.float64)
    cum_net = np.concatenate([[0.0], np.cumsum(net)])
    cum_sent = np.concatenate([[0.0], np.cumsum(sentiment)])
    rows = []
    for n in params.news_hours:
        lo, hi = window_bounds(closes_at, avail, n * HOUR_MS)
        count = (hi - lo).astype(np.float64)
        mean_sent = np.where(count > 0, (cum_sent[hi] - cum_sent[lo]) / np.maximum(count, 1.0), 0.0)
        rows += [count, cum_net[hi] - cum_net[lo], mean_sent]
    return rows


@functools.lru_cache(maxsize=100_000)
def title_sentiment(title: str) -> float:
    """VADER's compound score of one headline (-1..1; VADER rounds it to 4 places)."""
    return float(_analyzer().polarity_scores(title)["compound"])


@functools.lru_cache(maxsize=1)
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()
