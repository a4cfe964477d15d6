"""Backtest/live parity, checked on every run: principle 5 as a number a person reads.

After the paper executor has replayed bars with signals fetched over HTTP from the
served champion, the same bars are backtested in process with the same champion
(features from ``features.compute``, the same pyfunc, the same ``run_backtest``).
If serving computed features differently, or the executor decided differently from
the backtest, the PnL or the trade count would differ and the run says so.
"""

from __future__ import annotations

import pandas as pd

from qt.config import Params


def offline_signals(candles: pd.DataFrame, model, params: Params, start: pd.Timestamp,
                    model_version: str | None, funding: pd.DataFrame | None = None) -> pd.DataFrame:
    """The champion's signals for every bar from ``start``, computed in process through
    ``model_predictions`` (the features and return window the model logged)."""
    from executor.signals import signals_from_predictions
    from training.backtest_model import model_predictions

    preds = model_predictions(model, candles, start, funding=funding)
    return signals_from_predictions(preds, params.signal, model_version)


def check_parity(candles: pd.DataFrame, model, params: Params, start: pd.Timestamp,
                 replay_report, model_version: str | None, funding: pd.DataFrame | None = None) -> dict:
    """Compare the HTTP-driven paper replay with an in-process backtest of the same bars
    (perpetuals settle the same ``funding`` in both)."""
    from executor.backtest import run_backtest

    signals = offline_signals(candles, model, params, start, model_version, funding=funding)
    bt = run_backtest(candles, signals, params, close_at_end=False, funding=funding)
    replay = replay_report.metrics
    tolerance_usdt = 1e-6 * params.risk.starting_equity_usdt
    same_pnl = abs(float(bt.metrics["net_pnl"]) - float(replay_report.net_pnl)) <= tolerance_usdt
    same_trades = int(bt.metrics["trades"]) == int(replay["trades"])
    return {"backtest_net_pnl": float(bt.metrics["net_pnl"]), "replay_net_pnl": float(replay_report.net_pnl),
            "backtest_trades": int(bt.metrics["trades"]), "replay_trades": int(replay["trades"]),
            "match": bool(same_pnl and same_trades)}
