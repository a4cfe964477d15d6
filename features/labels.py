"""Forward-return labels: what the model is trained to predict at bar t.

``fwd_return`` = ln(close[t+h] / close[t]) with h = ``LabelParams.horizon_bars``: the
features of bar t end at its close, the label starts there, so the two never overlap.
Like the features, h counts bars (rows) of the same symbol; gaps are not filled.

``up`` = 1 when fwd_return > 0 else 0 (what ``prob_up`` estimates).
``direction`` = +1 / -1 when fwd_return is above / below +/- the round-trip cost
``2 * fee_rate + 2 * slippage_bps / 1e4`` and 0 inside that dead zone: a move smaller
than the cost of entering and leaving is not worth trading in either direction. The
dead zone (a fraction) is compared with the log return directly; for costs of a few
tenths of a percent the two differ by less than 1e-5.

The last h bars of every symbol have no future close yet: they are absent, never NaN,
so nothing downstream can silently train on a missing label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.frames import sort_candles
from qt.config import CostParams, LabelParams
from qt.errors import DataError

LABEL_COLUMNS = ["symbol", "timestamp", "fwd_return", "up", "direction"]


def dead_zone(costs: CostParams) -> float:
    """Round-trip cost as a fraction of notional: the |fwd_return| below which direction is 0."""
    return 2.0 * costs.fee_rate + 2.0 * costs.slippage_bps / 1e4


def make_labels(candles: pd.DataFrame, labels: LabelParams, costs: CostParams) -> pd.DataFrame:
    """Labels frame: ``symbol, timestamp, fwd_return`` (float64), ``up``, ``direction`` (int64).

    Rows sorted by symbol, timestamp; one per candle except each symbol's last
    ``horizon_bars``. Raises DataError on missing columns, duplicates or a non-positive close.
    """
    frame, codes = sort_candles(candles)
    close = frame["close"].to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(close) & (close > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"candle close is {close[i]!r} for {frame['symbol'].iat[i]} at "
                        f"{frame['timestamp'].iat[i]}; run the validation stage and repair the data")
    h = labels.horizon_bars
    log_close = np.log(close)
    n = len(close)
    # row i has a label when row i+h exists and belongs to the same symbol (rows are sorted)
    idx = np.arange(max(n - h, 0))
    idx = idx[codes[idx] == codes[idx + h]]
    fwd = log_close[idx + h] - log_close[idx]
    zone = dead_zone(costs)
    return pd.DataFrame({
        "symbol": frame["symbol"].array.take(idx),
        "timestamp": frame["timestamp"].array.take(idx),
        "fwd_return": fwd,
        "up": (fwd > 0.0).astype(np.int64),
        "direction": np.where(fwd > zone, 1, np.where(fwd < -zone, -1, 0)).astype(np.int64),
    })
