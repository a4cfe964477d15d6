"""The perpetuals' extra series in the raw lake: funding rates and open interest.

Why a module of its own: these series exist only for USDT-M perpetuals, have their own layout
(``funding/<market>/<STEM>/<YYYY>.parquet``, ``open_interest/<market>/<STEM>/<period>/``, market
``binanceusdm`` or ``bybit``)
and their own readers - among them ``read_lake_funding``, the funding frame the backtest, the
paper replay and drift monitoring settle with. They share the partition machinery
(``data.partitions``) with the candles of ``data.lake``. The executor settles funding
(``executor.funding``) but never reads the lake: this module hands it the frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from data.partitions import (WriteResult, market_dir, merge_series, monthly_partitions, normalise, read_series,
                             series_edge, symbol_stem)
from executor.funding import FUNDING_FRAME_COLUMNS, is_perp
from qt.errors import DataError
from qt.timeframes import timeframe_ms, utc_timestamp

FUNDING_COLUMNS = ["timestamp", "funding_rate"]
OPEN_INTEREST_COLUMNS = ["timestamp", "open_interest", "open_interest_value"]


def funding_dir(root: Path, symbol: str, venue: str = "binance") -> Path:
    if ":" not in symbol:
        raise DataError(f"{symbol} is a spot symbol; funding exists for perpetuals (BASE/USDT:USDT) only")
    return Path(root) / "funding" / market_dir(symbol, venue) / symbol_stem(symbol)


def open_interest_dir(root: Path, symbol: str, period: str, venue: str = "binance") -> Path:
    if ":" not in symbol:
        raise DataError(f"{symbol} is a spot symbol; open interest exists for perpetuals only")
    timeframe_ms(period)
    return Path(root) / "open_interest" / market_dir(symbol, venue) / symbol_stem(symbol) / period


def write_funding(root: Path, symbol: str, funding: pd.DataFrame, venue: str = "binance") -> WriteResult:
    """Merge a perpetual's funding history (``timestamp``, ``funding_rate`` per interval) into
    yearly partitions; same merge rules as ``write_candles``."""
    frame = normalise(funding, FUNDING_COLUMNS, what=f"{symbol} funding")
    return merge_series(funding_dir(root, symbol, venue), frame, FUNDING_COLUMNS, False,
                        {"symbol": symbol, "kind": "funding"})


def write_open_interest(root: Path, symbol: str, period: str, oi: pd.DataFrame,
                        venue: str = "binance") -> WriteResult:
    """Merge open-interest history (base ``open_interest``, quote ``open_interest_value``)."""
    frame = normalise(oi, OPEN_INTEREST_COLUMNS, what=f"{symbol} open interest")
    return merge_series(open_interest_dir(root, symbol, period, venue), frame, OPEN_INTEREST_COLUMNS,
                        monthly_partitions(period), {"symbol": symbol, "kind": "open_interest", "period": period})


def read_funding(root: Path, symbol: str, start=None, end=None, venue: str = "binance") -> pd.DataFrame:
    """Funding history of a perpetual in ``[start, end)`` (``FUNDING_COLUMNS``); empty when none stored."""
    return read_series(funding_dir(root, symbol, venue), FUNDING_COLUMNS, utc_timestamp(start), utc_timestamp(end))


def read_open_interest(root: Path, symbol: str, period: str, start=None, end=None,
                       venue: str = "binance") -> pd.DataFrame:
    """Open-interest history in ``[start, end)`` (``OPEN_INTEREST_COLUMNS``); empty when none stored."""
    return read_series(open_interest_dir(root, symbol, period, venue), OPEN_INTEREST_COLUMNS, utc_timestamp(start),
                       utc_timestamp(end))


def last_funding_timestamp(root: Path, symbol: str, venue: str = "binance") -> pd.Timestamp | None:
    return series_edge(funding_dir(root, symbol, venue), last=True)


def last_open_interest_timestamp(root: Path, symbol: str, period: str, venue: str = "binance") -> pd.Timestamp | None:
    return series_edge(open_interest_dir(root, symbol, period, venue), last=True)


def read_lake_funding(root: Path, symbols: Iterable[str], start=None, end=None,
                      venue: str = "binance") -> pd.DataFrame | None:
    """The lake's funding history of the perp ``symbols`` as one frame (``FUNDING_FRAME_COLUMNS``,
    what ``executor.funding`` settles with), None when none of them is a perp. A perp with
    nothing stored contributes no rows - the backtest then refuses it with a message saying what
    to collect."""
    perps = sorted(s for s in symbols if is_perp(s))
    if not perps:
        return None
    frames = [read_funding(root, s, start, end, venue).assign(symbol=s) for s in perps]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({"symbol": pd.Series(dtype=object),
                             **{c: pd.Series(dtype="float64" if c != "timestamp" else "datetime64[ms, UTC]")
                                for c in FUNDING_COLUMNS}})[FUNDING_FRAME_COLUMNS]
    return pd.concat(frames, ignore_index=True)[FUNDING_FRAME_COLUMNS]
