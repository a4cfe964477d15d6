"""Labels: what the model is trained to predict at bar t.

Forward return
    ``fwd_return`` = ln(close[t+h] / close[t]) with h = ``LabelParams.horizon_bars``: the
    features of bar t end at its close, the label starts there, so the two never overlap.
    Like the features, h counts bars (rows) of the same symbol; gaps are not filled.

    ``up`` = 1 when fwd_return > 0 else 0 (what ``prob_up`` estimates).
    ``direction`` = +1 / -1 when fwd_return is above / below +/- the round-trip cost
    ``2 * fee_rate + 2 * slippage_bps / 1e4`` and 0 inside that dead zone: a move smaller
    than the cost of entering and leaving is not worth trading in either direction. The
    dead zone (a fraction) is compared with the log return directly; for costs of a few
    tenths of a percent the two differ by less than 1e-5.

Triple barrier (when ``risk`` is given): the trade the executor would make on a buy signal
at the close of bar t, replayed with the paper broker's own fill rules (``executor.paper``):

    * entry at the OPEN of bar t+1, fill price ``open * (1 + slippage)``;
    * stop at ``fill * (1 - stop_loss_pct)``, take-profit at ``fill * (1 + take_profit_pct)``,
      checked on bars t+1 .. t+M (M = ``max_holding_bars``), the entry bar included, in the
      broker's order: open <= stop (gap: exit at the open), low <= stop (exit at the stop,
      also when the same bar reached the take-profit), open >= tp (gap: at the open),
      high >= tp (at the take-profit);
    * otherwise the executor's max-holding exit: at the OPEN of bar t+M+1.

    ``tb_label`` = +1 take-profit, -1 stop, 0 vertical barrier (int64);
    ``tb_return`` = ln(exit price / open of bar t+1), both before slippage and fees (float64);
    ``tb_bars`` = exit bar - entry bar (int64), the executor's ``bars_held`` of that trade:
    0 for a stop inside the entry bar, M for the vertical barrier.

Label end time: ``label_end_times`` gives, per label row, the timestamp of the last bar its
label reads (the symbol's own row ``label_reach_bars`` rows later). On a symbol with a gap that is
much later than t + h bars of the clock; the splits purge by it (``training.splits``).

Training target (``LabelParams.target``, ``training_target``): what the members are fitted on.

    * ``forward_return``: ``up`` and ``fwd_return`` as above; the label reads bars t+1 .. t+h.
    * ``triple_barrier``: ``up`` = 1 when ``tb_return > 0`` and the return the ensemble's
      ``expected_return`` is mapped to is ``tb_return``: the outcome of the very trade a buy
      signal at t opens (same entry, stop, take-profit and max-holding exit as the executor).
      The sign of the trade's return, not ``tb_label == +1``: a vertical-barrier exit (label 0)
      can win or lose, and what the decision layer needs is whether entering makes money and by
      how much; P(tb_return > 0) and E[tb_return] then describe one and the same trade. The
      label reads bars t+1 .. t+M+1 (exit at the open of t+M+1).

    ``label_reach_bars`` is that reach; the label end times and every purge use it, so no
    label of a training row reads a test or holdout bar.

Rows: the last bars of every symbol have no outcome yet; they are absent, never NaN, so
nothing downstream can silently train on a missing label. Without ``risk`` a row needs bar
t+h; with it, bar t+M+1 as well (a row whose barrier happens to be touched early is NOT
kept: which late rows would survive would depend on the future).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from features.frames import sort_candles
from qt.config import CostParams, LabelParams, RiskParams
from qt.errors import DataError

LABEL_COLUMNS = ["symbol", "timestamp", "fwd_return", "up", "direction"]
TRIPLE_BARRIER_COLUMNS = ["tb_label", "tb_return", "tb_bars"]
# Bump when a label formula changes without a params change (invalidates materialised labels).
LABEL_CODE_VERSION = "2"


def dead_zone(costs: CostParams) -> float:
    """Round-trip cost as a fraction of notional: the |fwd_return| below which direction is 0."""
    return 2.0 * costs.fee_rate + 2.0 * costs.slippage_bps / 1e4


def label_rows_lost(labels: LabelParams, risk: RiskParams | None) -> int:
    """Trailing bars of every symbol that get no label row (their outcome is not known yet)."""
    return labels.horizon_bars if risk is None else max(labels.horizon_bars, risk.max_holding_bars + 1)


def label_set_hash(labels: LabelParams, costs: CostParams, risk: RiskParams | None) -> str:
    """sha256 (hex) of everything a label value depends on: stored labels of another hash are stale.

    ``labels.target`` is left out: it picks which stored column a model trains on, not a value."""
    barriers = None if risk is None else {"stop_loss_pct": risk.stop_loss_pct, "take_profit_pct": risk.take_profit_pct,
                                          "max_holding_bars": risk.max_holding_bars}
    blob = json.dumps({"code_version": LABEL_CODE_VERSION, "labels": labels.model_dump(mode="json", exclude={"target"}),
                       "costs": costs.model_dump(mode="json"), "barriers": barriers},
                      sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def make_labels(candles: pd.DataFrame, labels: LabelParams, costs: CostParams,
                risk: RiskParams | None = None) -> pd.DataFrame:
    """Labels frame: ``symbol, timestamp, fwd_return`` (float64), ``up``, ``direction`` (int64),
    then ``tb_label, tb_return, tb_bars`` when ``risk`` is given.

    Rows sorted by symbol, timestamp; one per candle except each symbol's last
    ``label_rows_lost(labels, risk)``. Raises DataError on missing columns, duplicates or a
    non-positive / non-finite price.
    """
    frame, codes = sort_candles(candles)
    close = _positive_prices(frame, "close")
    h = labels.horizon_bars
    lost = label_rows_lost(labels, risk)
    n = len(close)
    # row i has a label when row i+lost exists and belongs to the same symbol (rows are sorted)
    idx = np.arange(max(n - lost, 0))
    idx = idx[codes[idx] == codes[idx + lost]]
    log_close = np.log(close)
    fwd = log_close[idx + h] - log_close[idx]
    zone = dead_zone(costs)
    out = {
        "symbol": frame["symbol"].array.take(idx),
        "timestamp": frame["timestamp"].array.take(idx),
        "fwd_return": fwd,
        "up": (fwd > 0.0).astype(np.int64),
        "direction": np.where(fwd > zone, 1, np.where(fwd < -zone, -1, 0)).astype(np.int64),
    }
    if risk is not None:
        bars = {c: _positive_prices(frame, c) for c in ("open", "high", "low")}
        tb_label, tb_return, tb_bars = triple_barrier(bars["open"], bars["high"], bars["low"], idx,
                                                      risk, costs.slippage_bps / 1e4)
        out.update({"tb_label": tb_label, "tb_return": tb_return, "tb_bars": tb_bars})
    return pd.DataFrame(out)


def label_reach_bars(labels: LabelParams, risk: RiskParams) -> int:
    """Bars after t the training label reads: ``horizon_bars`` for the forward return,
    ``max_holding_bars + 1`` for the triple barrier (its max-holding exit fills at the open of
    bar t+M+1). The one number every purge, embargo and label end time is counted from."""
    return risk.max_holding_bars + 1 if labels.target == "triple_barrier" else labels.horizon_bars


def training_target(labels_df: pd.DataFrame, labels: LabelParams) -> pd.DataFrame:
    """``labels_df`` with ``up`` and ``fwd_return`` set to the target's (``labels.target``).

    With ``triple_barrier``: ``up = tb_return > 0`` and ``fwd_return = tb_return`` (see the module
    docstring for why), so every reader downstream (fit, return map, metrics, the holdout
    predictions) uses the target without knowing which it is; ``label_reach_bars`` gives its
    reach. DataError when the triple-barrier columns are absent (labels built without them)."""
    if labels.target == "forward_return":
        return labels_df
    if "tb_return" not in labels_df.columns:
        raise DataError("labels.target is triple_barrier but the labels have no tb_return column; re-run the "
                        "features stage with labels.triple_barrier: true")
    tb = labels_df["tb_return"].to_numpy(dtype=np.float64)
    return labels_df.assign(fwd_return=tb, up=(tb > 0.0).astype(np.int64))


def label_end_times(label_keys: pd.DataFrame, bar_keys: pd.DataFrame, reach_bars: int) -> pd.DatetimeIndex:
    """Per row of ``label_keys`` (symbol, timestamp): the timestamp of the last bar its label reads
    - the same symbol's row ``reach_bars`` rows later (``label_reach_bars``) in ``bar_keys``
    (symbol, timestamp: the candles, or any frame holding every candle row from t on, e.g. the
    features).

    Rows count per symbol, so across a gap in a symbol's candles the end lies further in time than
    t + h bars. NaT where that row is absent (the end is unknown: a split must not train on it).
    Returned in the row order of ``label_keys`` (UTC).
    """
    out = np.full(len(label_keys), np.datetime64("NaT"), dtype="datetime64[ns]")
    lab_ts = pd.to_datetime(label_keys["timestamp"], utc=True).to_numpy(dtype="datetime64[ns]")
    lab_sym = label_keys["symbol"].to_numpy()
    bar_ts = pd.to_datetime(bar_keys["timestamp"], utc=True).to_numpy(dtype="datetime64[ns]")
    bar_sym = bar_keys["symbol"].to_numpy()
    for symbol in pd.unique(lab_sym):
        rows = np.flatnonzero(lab_sym == symbol)
        clock = np.unique(bar_ts[bar_sym == symbol])  # sorted, one entry per bar of this symbol
        pos = np.searchsorted(clock, lab_ts[rows])
        found = (pos < len(clock)) & (clock[np.minimum(pos, len(clock) - 1)] == lab_ts[rows]) if len(clock) else \
            np.zeros(len(rows), dtype=bool)
        end = pos + reach_bars
        ok = found & (end < len(clock))
        out[rows[ok]] = clock[end[ok]]
    return pd.DatetimeIndex(out).tz_localize("UTC")


def triple_barrier(open_: np.ndarray, high: np.ndarray, low: np.ndarray, rows: np.ndarray,
                   risk: RiskParams, slippage: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tb_label, tb_return, tb_bars) of a long entered at the open of row t+1, for each t in ``rows``.

    Pure and vectorised over ``rows``: one pass per bar of the holding period (at most
    ``max_holding_bars`` passes). The caller guarantees rows t+1 .. t+M+1 exist and belong to
    the same symbol as t. ``slippage`` is a fraction: the levels sit where the broker places
    them, relative to the slipped entry fill.
    """
    m = risk.max_holding_bars
    entry_open = open_[rows + 1]
    fill = entry_open * (1.0 + slippage)
    stop = fill * (1.0 - risk.stop_loss_pct)
    take = fill * (1.0 + risk.take_profit_pct)
    label = np.zeros(len(rows), dtype=np.int64)
    exit_price = open_[rows + m + 1].copy()  # the vertical barrier: max-holding exit at the next open
    held = np.full(len(rows), m, dtype=np.int64)
    pending = np.ones(len(rows), dtype=bool)
    for k in range(1, m + 1):  # bar t+k; the entry bar (k=1) is checked too
        if not pending.any():
            break
        j = rows + k
        o, hi, lo = open_[j], high[j], low[j]
        gap_stop = pending & (o <= stop)
        hit_stop = pending & ~gap_stop & (lo <= stop)
        rest = pending & ~gap_stop & ~hit_stop
        gap_take = rest & (o >= take)
        hit_take = rest & ~gap_take & (hi >= take)
        for mask, price, side in ((gap_stop, o, -1), (hit_stop, stop, -1), (gap_take, o, 1), (hit_take, take, 1)):
            exit_price[mask] = price[mask]
            label[mask] = side
            held[mask] = k - 1
        pending &= ~(gap_stop | hit_stop | gap_take | hit_take)
    return label, np.log(exit_price / entry_open), held


def _positive_prices(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = frame[column].to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"candle {column} is {values[i]!r} for {frame['symbol'].iat[i]} at "
                        f"{frame['timestamp'].iat[i]}; run the validation stage and repair the data")
    return values
