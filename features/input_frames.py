"""The extra inputs' frames as arrays per symbol, and their empty forms: shared by the multi-input
families (``features.multi_input``) and the cross-venue family (``features.cross_venue``), which
both align another series to a symbol's bars - one module below both, so neither imports the other
back."""

from __future__ import annotations

import numpy as np
import pandas as pd

from qt.errors import DataError


def no_funding() -> pd.DataFrame:
    """An empty funding frame: the input when the funding features are on but no symbol is a perpetual."""
    return pd.DataFrame({"symbol": pd.Series(dtype="str"), "timestamp": pd.Series(dtype="datetime64[ms, UTC]"),
                         "funding_rate": pd.Series(dtype="float64")})


def no_reference() -> pd.DataFrame:
    """An empty candles frame: the input when basis is on but no symbol is a perpetual."""
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in ("open", "high", "low", "close", "volume")})
    frame.insert(0, "timestamp", pd.Series(dtype="datetime64[ms, UTC]"))
    frame.insert(0, "symbol", pd.Series(dtype="str"))
    return frame


def funding_by_symbol(funding: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """symbol -> (event_ms ascending, funding_rate) of a funding frame; DataError when malformed."""
    missing = [c for c in ("symbol", "timestamp", "funding_rate") if c not in funding.columns]
    if missing:
        raise DataError(f"funding frame lacks columns {missing}; expected symbol, timestamp, funding_rate")
    rates = funding["funding_rate"].to_numpy(dtype=np.float64)
    if not np.isfinite(rates).all():
        raise DataError("funding frame holds non-finite funding_rate values; run the validation stage")
    out = {}
    frame = funding.assign(_ms=funding["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64"))
    for symbol, rows in frame.sort_values(["symbol", "_ms"], kind="stable").groupby("symbol", sort=False):
        ms = rows["_ms"].to_numpy()
        if np.any(ms[1:] <= ms[:-1]):
            raise DataError(f"funding frame holds duplicate events for {symbol}; de-duplicate it")
        out[str(symbol)] = (ms, rows["funding_rate"].to_numpy(dtype=np.float64))
    return out


def candles_by_symbol(candles: pd.DataFrame, what: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """symbol -> (open_ms ascending, close) of a Candles frame; DataError on a bad close."""
    from features.frames import sort_candles, symbol_blocks

    frame, codes = sort_candles(candles)
    close = frame["close"].to_numpy(dtype=np.float64)
    if not (np.isfinite(close) & (close > 0)).all():
        raise DataError(f"{what} hold non-positive or non-finite closes; run the validation stage")
    ms = frame["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")
    symbols = frame["symbol"].to_numpy()
    starts, ends = symbol_blocks(codes)
    return {str(symbols[s]): (ms[s:e], close[s:e]) for s, e in zip(starts, ends)}


def align_closes(open_ms: np.ndarray, ref_open_ms: np.ndarray, ref_close: np.ndarray) -> np.ndarray:
    """Close of the latest reference candle opening at or before each row's open; NaN before it starts."""
    pos = np.searchsorted(ref_open_ms, open_ms, side="right") - 1
    return np.where(pos >= 0, ref_close[np.maximum(pos, 0)], np.nan)
