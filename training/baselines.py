"""Baselines a challenger must beat on the same holdout, through the same backtest.

``flat`` and ``buy_and_hold`` come from ``executor.backtest`` (``flat_baseline``,
``buy_and_hold``: same metric keys, same costs). This module adds the old system's rule:

* ``rule_rsi_macd`` - the old system's rule as a signals frame, so it runs through
  ``executor.backtest.run_backtest`` with the same RiskEngine and PaperBroker as the
  model: buy when RSI(14) < 30 and MACD histogram(12,26,9) > 0, sell when RSI > 70 and
  the histogram < 0, else hold. Computed with TA-Lib on the raw close of bar t (causal:
  the signal at bar t sees bars <= t); bars before the indicators are defined are absent.
  Traded long-only, as the old system did: a sell closes a long and never opens a short, also
  when ``risk.allow_short`` is on (``rule_params``).
* ``rule_rsi_macd_short`` - the same signals frame with ``risk.allow_short``: on a perpetual a
  sell while flat opens a short (the decision core's rule, nothing else changes). Listed only
  when ``risk.allow_short`` is on (``baseline_names``), so a challenger that may short must beat
  the rule that may short too.

``baseline_names(params)`` is the list the evaluate stage backtests, ``qt backtest`` prints and the
promote stage's gates compare the challenger with.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib

from qt.config import FeatureParams, Params

RULE_VERSION = "rule_rsi_macd"
RULE_SHORT = "rule_rsi_macd_short"
# The indicators the rule reads, as a feature config: what sets its warm-up (the candles before
# the holdout that evaluate and backtest must load so the rule is defined from the first bar).
RULE_FEATURES = FeatureParams(rsi=[14], ema=[], sma=[], macd=(12, 26, 9), atr=[], log_return=[1],
                              realised_vol=[], volume_z=[])
_SIGNAL_COLUMNS = ["symbol", "timestamp", "action", "confidence", "expected_return", "model_version"]


def baseline_names(params: Params) -> tuple[str, ...]:
    """The baselines a challenger is compared with under ``params`` (in report order)."""
    shorts = (RULE_SHORT,) if params.risk.allow_short else ()
    return ("flat", "buy_and_hold", RULE_VERSION, *shorts)


def rule_params(params: Params, name: str) -> Params:
    """The params the rule ``name`` is backtested with: ``rule_rsi_macd`` long-only,
    ``rule_rsi_macd_short`` with shorts (only listed with allow_short); the rule as the old
    system traded it, timing each symbol. It has no return forecast (expected_return 0), so the two
    settings that read the model's forecast do not apply to it: ``signal.min_edge_bps`` would refuse
    every rule entry (a zero move never beats the cost) and ``signal.mode: rank`` would rank ties -
    either would turn the baseline into ``flat`` and make beating it meaningless."""
    signal = params.signal.model_copy(update={"min_edge_bps": None, "mode": "timing"})
    risk = params.risk.model_copy(update={"allow_short": False}) if name == RULE_VERSION else params.risk
    return params.model_copy(update={"signal": signal, "risk": risk})


def make_rule_signals(candles: pd.DataFrame, rsi_period: int = 14, macd: tuple[int, int, int] = (12, 26, 9),
                      oversold: float = 30.0, overbought: float = 70.0) -> pd.DataFrame:
    """The RSI/MACD rule's signals frame: confidence 1 for buy, 0 for sell, 0.5 for hold
    (a stand-in for prob_up), expected_return 0 (the rule has no return forecast)."""
    frames = []
    for sym, g in candles.sort_values(["symbol", "timestamp"], kind="stable").groupby("symbol", sort=True):
        close = g["close"].to_numpy(dtype=np.float64)
        rsi = talib.RSI(close, timeperiod=rsi_period)
        _, _, hist = talib.MACD(close, fastperiod=macd[0], slowperiod=macd[1], signalperiod=macd[2])
        defined = np.isfinite(rsi) & np.isfinite(hist)
        action = np.where((rsi < oversold) & (hist > 0), "buy",
                          np.where((rsi > overbought) & (hist < 0), "sell", "hold"))
        confidence = np.select([action == "buy", action == "sell"], [1.0, 0.0], 0.5)
        frames.append(pd.DataFrame({
            "symbol": str(sym), "timestamp": g["timestamp"].to_numpy()[defined],
            "action": action[defined].astype(object), "confidence": confidence[defined],
            "expected_return": 0.0, "model_version": RULE_VERSION,
        }))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=_SIGNAL_COLUMNS)
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    return out[_SIGNAL_COLUMNS]

