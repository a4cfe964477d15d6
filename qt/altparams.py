"""The alternative-data keys of ``params.yaml``: ``alt:`` (what ``qt collect`` stores) and the alt
feature families' ``features.*`` keys (``features.alt_features``). A module of their own so
``qt.config`` stays under the house's size limit; ``qt.config`` imports both.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AltFeatureFields(_Frozen):
    """``FeatureParams``' alt keys (its base class: one family, one key, so an ablation switches a
    family with one ``features.<key>`` override)."""

    # off by default: market-wide daily and news series from the lake's alt/ (``alt.series``)
    fng: bool = False  # fng_value: the last published Crypto Fear & Greed value (0-100)
    fng_change: list[int] = Field(default_factory=list)  # fng_change_N: value - the one N days before
    fng_z: list[int] = Field(default_factory=list)  # fng_z_N: z of the value in its last N daily values
    onchain: bool = False  # onchain_mvrv, onchain_nupl, onchain_realised_dist (BTC close / realised price - 1)
    etf_flow_z: list[int] = Field(default_factory=list)  # etf_flow_z_N: z of the last US spot-ETF flow, N flows
    news_hours: list[int] = Field(default_factory=list)  # news_count_N, news_votes_N, news_sent_N over N hours
    alt_scope: Literal["all", "btc"] = "all"  # all symbols (market-wide) or BTC symbols only (others 0)
    # off by default: the symbol's own recorded order book (``features.book_bars``), joined at each
    # bar's close from the levels and trades ``qt record-book --from-file --lake DIR`` wrote
    book: bool = False  # book_spread_bps, book_imbalance_N, book_microprice_bps, book_flow_Ss
    book_levels: int = Field(5, ge=1, le=50)  # N: levels per side in the imbalance (levels.parquet holds 50)
    book_flow_seconds: int = Field(10, ge=1)  # S: the trade-flow window before the sample, seconds
    book_max_age_seconds: float = Field(60.0, gt=0.0)  # older book state at the close -> NaN (row dropped)
    book_lake: str | None = None  # DIR of `qt record-book --lake DIR` (DIR/orderbook/...); null = the candles lake


class AltParams(_Frozen):
    """Alternative data collected beside the candles into ``<lake>/alt/`` (``data.alt_collect``)."""

    # which series ``qt collect`` stores: fear_greed, onchain_btc, headlines; none by default
    series: list[Literal["fear_greed", "onchain_btc", "headlines"]] = Field(default_factory=list)
    # where from: "data" = like data.source (parquet:DIR -> DIR/alt/*.parquet, ccxt -> the APIs);
    # "api" = alternative.me / CryptoPanic (token in env CRYPTOPANIC_TOKEN); "parquet:DIR" = that dir
    source: str = "data"
    # validation: the newest value may be at most this many days older than the candles' end
    max_staleness_days: float = Field(3.0, gt=0.0)
    # the APIs behind "api" (change them to reach a mirror or a proxy; the token is never put in them)
    fng_url: str = "https://api.alternative.me/fng/"
    cryptopanic_url: str = "https://cryptopanic.com/api/v1/posts/"
    cryptopanic_pages: int = Field(5, ge=1)  # the newest pages of posts; stops early at the last page

    @field_validator("fng_url", "cryptopanic_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")) or "?" in url:
            raise ValueError("must be an http(s) URL without a query (a token comes from the environment), "
                             "e.g. https://api.alternative.me/fng/")  # not echoed: a query may hold a token
        return url
