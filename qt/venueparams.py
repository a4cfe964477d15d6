"""``collect:`` and ``execute:`` of ``params.yaml``: which venue candles come from and where orders go.

Two sections, apart on purpose: collecting Bybit's series for the cross-venue features
(``collect.exchange: bybit``) must never move where the live executor sends orders
(``execute.venue``). Both name a venue by its ccxt id; what differs between venues is
``qt.venues`` (collection) and ``executor.live.venue`` (orders).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CollectParams(_Frozen):
    """Incremental collection from Binance (or the local exchange) into the raw lake (``data.collector``)."""

    # The venue collected from, by ccxt id: ``binance`` (spot, and USDT-M perpetuals through
    # ``binanceusdm``: the symbol says which) or ``bybit`` (USDT perpetuals, ``BASE/USDT:USDT``).
    exchange: Literal["binance", "binanceusdm", "bybit"] = "binance"
    exchange_url: str | None = None  # http://HOST:PORT of a compatible server (the local exchange); None = the venue
    universe: Literal["list", "top"] = "list"  # "list" = data.symbols; "top" = top_n by 24h quote volume
    market: Literal["spot", "perp"] = "spot"  # which market "top" ranks
    top_n: int = Field(20, ge=1, le=1000)
    quote: str = Field("USDT", min_length=1)
    # Bases never traded by the "top" universe: stablecoins (no edge, near-constant price).
    exclude_bases: list[str] = Field(default_factory=lambda: [
        "USDT", "USDC", "FDUSD", "TUSD", "BUSD", "DAI", "USDP", "PAX", "UST", "USTC", "USDD", "PYUSD",
        "USD1", "EUR", "EURI", "AEUR", "GBP", "TRY", "BRL"])
    # Leveraged tokens (BTCUP, ETHDOWN, ...): their price decays by construction.
    exclude_base_suffixes: list[str] = Field(default_factory=lambda: ["UP", "DOWN", "BULL", "BEAR"])
    page_limit: int = Field(1000, ge=1, le=1000)  # candles per klines request (Binance spot max 1000)
    max_attempts: int = Field(6, ge=1, le=50)  # per request, retryable errors only
    backoff_base_s: float = Field(0.5, gt=0.0)
    backoff_cap_s: float = Field(8.0, gt=0.0)
    timeout_ms: int = Field(10_000, ge=100)  # ccxt per-request timeout
    backfill_start: str = "2017-01-01"  # first candle asked for when nothing is stored and data.start is unset
    concurrency: int = Field(4, ge=1, le=32)  # symbols downloaded at once (exchange politeness)
    funding: bool = True  # perpetuals: funding-rate history
    open_interest: bool = True  # perpetuals: open-interest history (Binance keeps ~30 days)
    progress_every_pages: int = Field(10, ge=1)  # one progress line per this many pages when not a TTY

    @property
    def venue(self) -> str:
        """The lake's venue of ``exchange``: ``binance`` (both of its ccxt ids) or ``bybit``."""
        return "bybit" if self.exchange == "bybit" else "binance"

    @model_validator(mode="after")
    def _check_backoff(self) -> "CollectParams":
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("collect.backoff_cap_s must be >= collect.backoff_base_s")
        return self


class ExecuteParams(_Frozen):
    """``qt execute --mode testnet|live``: where the live executor trades (``executor.live``).

    ``venue`` is a ccxt id: ``binance`` / ``binanceusdm`` (Binance: spot through ``binance``,
    USDT-M perpetuals through ``binanceusdm``; the symbols say which) or ``bybit`` (Bybit USDT
    perpetuals only). Apart from ``collect.exchange`` on purpose: collecting Bybit's series for the
    cross-venue features must not move where the executor sends orders. ``--venue`` overrides it."""

    venue: Literal["binance", "binanceusdm", "bybit"] = "binance"
