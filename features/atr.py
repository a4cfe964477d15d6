"""The ATR a signal carries (issue 16): the feature ``atr_{risk.atr_period}`` of the signal's bar.

ATR-scaled stop and take-profit levels (``risk.stop_loss_atr``, ``take_profit_atr``, a ladder in
``atr`` units) read ``Signal.atr``: ``talib.ATR(high, low, close, period) / close`` of bar t, the
column ``atr_{period}`` of ``features.compute``. The serving service and the backtest both take it
from here, so both carry the same number for the same candles - whether or not the model itself
reads that column:

* the model's feature set has ``atr_{period}``: the value is that column of the model's own row;
* it does not: the one ``compute_features`` call also computes ``atr_{period}`` (the feature set
  with that period added) when that leaves the warm-up - hence the rows - unchanged; otherwise a
  second call computes ATR alone (``atr_only_params``), and a row whose ATR is still warming up
  carries NaN (an ATR level then opens nothing: the executor's ``ATR_UNAVAILABLE``).

Either way the value of a bar is the same TA-Lib ATR over the same candles: the other columns of
a feature set never change a column's values, only how many leading rows are dropped.
"""

from __future__ import annotations

import pandas as pd

from qt.config import FeatureParams

ATR = "atr"  # the column of signals and predictions frames, the key of a served signal


def atr_column(period: int) -> str:
    return f"atr_{int(period)}"


def with_atr(params: FeatureParams, period: int) -> FeatureParams:
    """``params`` with ATR(``period``) among its features (``params`` itself when it is already)."""
    if int(period) in params.atr:
        return params
    return params.model_copy(update={"atr": [*params.atr, int(period)]})


def atr_only_params(period: int, warmup_memories: float = FeatureParams().warmup_memories) -> FeatureParams:
    """The smallest feature set with ATR(``period``) (MACD, Bollinger bands and stochastics are
    always computed: ``compute_features`` has no switch for them)."""
    return FeatureParams(rsi=[], ema=[], sma=[], atr=[int(period)], log_return=[], realised_vol=[], volume_z=[],
                         adx=[], obv_z=[], vwap_dist=[], warmup_memories=warmup_memories)


def single_call(params: FeatureParams, period: int) -> bool:
    """True when the model's ``compute_features`` call can carry ATR(``period``) without dropping rows."""
    from features.compute import warmup_bars

    return int(period) in params.atr or warmup_bars(with_atr(params, period)) == warmup_bars(params)


def atr_warmup_bars(params: FeatureParams, period: int) -> int:
    """Leading bars per symbol before a row carries ATR(``period``) (see the module docstring)."""
    from features.compute import warmup_bars

    return warmup_bars(params if single_call(params, period) else atr_only_params(period, params.warmup_memories))


def features_with_atr(candles: pd.DataFrame, params: FeatureParams, period: int,
                      funding: pd.DataFrame | None = None, reference: pd.DataFrame | None = None,
                      other_venue=None, alt=None) -> pd.DataFrame:
    """``compute_features(candles, params, funding, reference, other_venue, alt)`` (the same rows and feature columns)
    plus the column ``atr`` = ``atr_{period}`` of each row (NaN where ATR is still warming up)."""
    from features.compute import compute_features

    column = atr_column(period)
    if single_call(params, period):
        feats = compute_features(candles, with_atr(params, period), funding=funding, reference=reference,
                                 other_venue=other_venue, alt=alt)
        feats[ATR] = feats[column]
        return feats if int(period) in params.atr else feats.drop(columns=[column])
    feats = compute_features(candles, params, funding=funding, reference=reference, other_venue=other_venue,
                             alt=alt)
    return attach_atr(feats, candles, period, params.warmup_memories)


def atr_frame(candles: pd.DataFrame, period: int,
              warmup_memories: float = FeatureParams().warmup_memories) -> pd.DataFrame:
    """``symbol, timestamp, atr`` of every bar past ATR's warm-up (``compute_features`` on
    ``atr_only_params``)."""
    from features.compute import compute_features

    feats = compute_features(candles, atr_only_params(period, warmup_memories))
    return feats[["symbol", "timestamp", atr_column(period)]].rename(columns={atr_column(period): ATR})


def attach_atr(frame: pd.DataFrame, candles: pd.DataFrame, period: int,
               warmup_memories: float = FeatureParams().warmup_memories) -> pd.DataFrame:
    """``frame`` (keys ``symbol``, ``timestamp``: predictions, signals) with the column ``atr`` of
    each row's bar computed from ``candles``; row order and index kept, NaN for a bar ``candles``
    do not cover past ATR's warm-up."""
    atr = atr_frame(candles, period, warmup_memories)
    atr = pd.Series(atr[ATR].to_numpy(), index=row_keys(atr))
    return frame.assign(**{ATR: atr.reindex(row_keys(frame)).to_numpy()})


def row_keys(frame: pd.DataFrame) -> pd.MultiIndex:
    """(symbol, timestamp) of each row, the time as ns UTC whatever resolution the frame uses."""
    stamps = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    return pd.MultiIndex.from_arrays([frame["symbol"].astype(str).to_numpy(), stamps.to_numpy()])
