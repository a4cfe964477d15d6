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
                    model_version: str | None, funding: pd.DataFrame | None = None,
                    reference: pd.DataFrame | None = None, other_venue=None, alt=None) -> pd.DataFrame:
    """The champion's signals for every bar from ``start``, computed in process through
    ``model_predictions`` (the features and return window the model logged; ``reference`` /
    ``other_venue`` / ``alt``: the multi-input and alt families' inputs, as the service reads them)."""
    from executor.signals import signals_from_predictions
    from training.backtest_model import model_predictions

    preds = model_predictions(model, candles, start, funding=funding, reference=reference, other_venue=other_venue,
                              alt=alt)
    return signals_from_predictions(preds, params.signal, model_version)


def check_parity(candles: pd.DataFrame, model, params: Params, start: pd.Timestamp,
                 replay_report, model_version: str | None, funding: pd.DataFrame | None = None,
                 replay_fills: pd.DataFrame | None = None, reference: pd.DataFrame | None = None,
                 other_venue=None, alt=None) -> dict:
    """Compare the HTTP-driven paper replay with an in-process backtest of the same bars
    (perpetuals settle the same ``funding`` in both); ``replay_fills`` locate the first divergence."""
    from executor.backtest import run_backtest

    signals = offline_signals(candles, model, params, start, model_version, funding=funding, reference=reference,
                              other_venue=other_venue, alt=alt)
    bt = run_backtest(candles, signals, params, close_at_end=False, funding=funding)
    return judge_parity(bt.metrics, bt.fills, replay_report.metrics, replay_report.net_pnl, replay_fills,
                        tolerance_usdt=1e-6 * params.risk.starting_equity_usdt)


def judge_parity(backtest_metrics: dict, backtest_fills: pd.DataFrame, replay_metrics: dict, replay_net_pnl: float,
                 replay_fills: pd.DataFrame | None, tolerance_usdt: float) -> dict:
    """The parity block of ``summary.json``: both sides' PnL and trade count, ``match``, and the first
    trade leg (fill) where the two diverge, so a broken parity says where to look."""
    same_pnl = abs(float(backtest_metrics["net_pnl"]) - float(replay_net_pnl)) <= tolerance_usdt
    same_trades = int(backtest_metrics["trades"]) == int(replay_metrics["trades"])
    divergence = first_divergent_trade(backtest_fills, replay_fills) if replay_fills is not None else None
    return {"backtest_net_pnl": float(backtest_metrics["net_pnl"]), "replay_net_pnl": float(replay_net_pnl),
            "backtest_trades": int(backtest_metrics["trades"]), "replay_trades": int(replay_metrics["trades"]),
            "match": bool(same_pnl and same_trades and divergence is None),
            "first_divergent_trade": divergence}


_LEG_FIELDS = ("timestamp", "side", "purpose", "qty", "price")


def _legs(fills: pd.DataFrame) -> dict[str, list[dict]]:
    """Each symbol's fills (trade legs) in time order, as plain records (``ts`` or ``timestamp`` column)."""
    f = fills.rename(columns={"ts": "timestamp"})
    out: dict[str, list[dict]] = {}
    if len(f) == 0:
        return out
    f = f.assign(timestamp=pd.to_datetime(f["timestamp"], utc=True)).sort_values("timestamp", kind="stable")
    for sym, g in f.groupby("symbol", sort=True):
        out[str(sym)] = [{k: (r[k].isoformat() if k == "timestamp" else
                              float(r[k]) if k in ("qty", "price") else str(r[k])) for k in _LEG_FIELDS}
                         for _, r in g.iterrows()]
    return out


def _same_leg(a: dict, b: dict) -> bool:
    """Same time, side and purpose; qty and price equal to 1e-9 relative (float noise, not a decision)."""
    if any(a[k] != b[k] for k in ("timestamp", "side", "purpose")):
        return False
    return all(abs(a[k] - b[k]) <= 1e-9 * max(abs(a[k]), abs(b[k]), 1.0) for k in ("qty", "price"))


def first_divergent_trade(backtest_fills: pd.DataFrame, replay_fills: pd.DataFrame) -> dict | None:
    """The earliest trade leg where the backtest and the replay differ, or None if every leg matches.

    Legs are compared per symbol in time order; ``index`` is the leg's position in that symbol's fills
    (0 = first entry). A leg one side has and the other lacks shows as ``None`` on the missing side.
    Of the symbols that diverge, the one whose diverging leg comes first in time is reported.
    """
    bt, rp = _legs(backtest_fills), _legs(replay_fills)
    found = []
    for sym in sorted(set(bt) | set(rp)):
        a, b = bt.get(sym, []), rp.get(sym, [])
        for i in range(max(len(a), len(b))):
            left, right = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
            if left is None or right is None or not _same_leg(left, right):
                when = min(x["timestamp"] for x in (left, right) if x is not None)
                found.append((when, sym, i, left, right))
                break
    if not found:
        return None
    when, sym, i, left, right = min(found, key=lambda t: (t[0], t[1]))
    return {"symbol": sym, "index": i, "timestamp": when, "backtest": left, "replay": right}


def read_replay_fills(state_db, run_id: str) -> pd.DataFrame:
    """The paper replay's fills of ``run_id`` from the executor's SQLite state (read only)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True)
    try:
        return pd.read_sql_query("SELECT symbol, ts, side, purpose, qty, price FROM fills WHERE run_id=?",
                                 conn, params=(run_id,))
    finally:
        conn.close()
