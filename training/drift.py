"""Drift and decay arithmetic: PSI, KS, live-versus-backtest, and the decision to act. No I/O.

The monitor (``training.drift_monitor``) reads the stores and calls these; tests call them on
hand-made numbers.

* **PSI** (population stability index) of a feature: bin edges are the quantiles of the
  reference (training window), so each bin holds ~1/bins of it; then
  ``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)`` over the bins' shares ``e`` (reference) and ``a``
  (recent), each floored at ``floor`` so an empty bin costs a large but finite amount.
  Convention: < 0.1 stable, 0.1-0.25 watch, > 0.25 shifted.
* **KS**: the largest gap between the two empirical CDFs (two-sample Kolmogorov-Smirnov D).
* **Live decay**: the executor's closed trades against the champion's holdout backtest (hit rate,
  mean PnL per trade); with too few live trades there is no verdict, and the result says so.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from qt.config import DriftParams

PSI_FLOOR = 1e-4


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges: the reference's ``1/bins .. (bins-1)/bins`` quantiles, duplicates dropped
    (a feature with ties, e.g. a clipped oscillator, gets fewer, wider bins)."""
    ref = _finite(reference)
    if ref.size == 0:
        raise ValueError("reference has no finite values; cannot bin it")
    return np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each bin ``(-inf, e0), [e0, e1), ..., [e_last, inf)``."""
    v = _finite(values)
    if v.size == 0:
        raise ValueError("no finite values to bin")
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
    return counts / v.size


def psi_from_shares(expected: np.ndarray, actual: np.ndarray, floor: float = PSI_FLOOR) -> float:
    e = np.maximum(np.asarray(expected, dtype=float), floor)
    a = np.maximum(np.asarray(actual, dtype=float), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10, floor: float = PSI_FLOOR) -> float:
    """PSI of ``current`` against ``reference`` on the reference's quantile bins."""
    edges = quantile_edges(reference, bins)
    return psi_from_shares(bin_shares(reference, edges), bin_shares(current, edges), floor)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov D = max |F_a(x) - F_b(x)|."""
    x, y = np.sort(_finite(a)), np.sort(_finite(b))
    if x.size == 0 or y.size == 0:
        raise ValueError("KS needs values on both sides")
    grid = np.concatenate([x, y])
    fa = np.searchsorted(x, grid, side="right") / x.size
    fb = np.searchsorted(y, grid, side="right") / y.size
    return float(np.max(np.abs(fa - fb)))


def monitored_columns(columns: list[str], exclude: list[str]) -> list[str]:
    """The columns the feature PSI covers: all but those matching an ``exclude`` pattern."""
    return [c for c in columns if not any(fnmatch.fnmatchcase(c, pat) for pat in exclude)]


def feature_psi(train: pd.DataFrame, recent: pd.DataFrame, columns: list[str], bins: int) -> dict[str, float]:
    """PSI per column, all symbols pooled (the model is one model across symbols)."""
    out = {}
    for col in columns:
        ref, cur = _finite(train[col].to_numpy()), _finite(recent[col].to_numpy())
        if ref.size and cur.size:
            out[col] = psi(ref, cur, bins)
    return out


def live_performance(trade_pnls_usdt: np.ndarray) -> dict:
    """Closed live trades -> count, hit rate (PnL > 0 after fees), mean PnL per trade."""
    pnl = _finite(trade_pnls_usdt)
    n = int(pnl.size)
    return {"trades": n, "hit_rate": float(np.mean(pnl > 0)) if n else None,
            "pnl_per_trade_usdt": float(np.mean(pnl)) if n else None, "net_pnl_usdt": float(np.sum(pnl))}


def backtest_expectation(metrics: dict) -> dict | None:
    """The holdout backtest's hit rate and mean PnL per trade (metrics of ``executor.backtest``)."""
    trades = metrics.get("trades")
    if not trades or metrics.get("hit_rate") is None or metrics.get("net_pnl") is None:
        return None
    return {"trades": int(trades), "hit_rate": float(metrics["hit_rate"]),
            "pnl_per_trade_usdt": float(metrics["net_pnl"]) / float(trades)}


@dataclass(frozen=True)
class Breach:
    check: str  # feature_psi | prediction_psi | live_hit_rate | live_pnl
    value: float
    threshold: float
    message: str


@dataclass(frozen=True)
class DriftAssessment:
    drifted: bool
    breaches: list[Breach]
    drifted_features: dict[str, float]
    notes: list[str] = field(default_factory=list)  # what could not be judged, and why

    def to_dict(self) -> dict:
        return {"drifted": self.drifted, "breaches": [asdict(b) for b in self.breaches],
                "drifted_features": self.drifted_features, "notes": list(self.notes)}


def assess(psi_by_feature: dict[str, float], prediction_psi: float | None, live: dict | None,
           expected: dict | None, t: DriftParams) -> DriftAssessment:
    """The monitor's decision: which thresholds were crossed. ``live`` None = no live state."""
    breaches: list[Breach] = []
    notes: list[str] = []
    drifted = {k: v for k, v in sorted(psi_by_feature.items(), key=lambda kv: -kv[1]) if v > t.feature_psi}
    if len(drifted) > t.max_drifted_features:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in list(drifted.items())[:5])
        breaches.append(Breach("feature_psi", float(len(drifted)), float(t.max_drifted_features),
                               f"{len(drifted)} feature(s) with PSI > {t.feature_psi}: {shown}"))
    if prediction_psi is None:
        notes.append("prediction distribution not compared (no predictions on one side)")
    elif prediction_psi > t.prediction_psi:
        breaches.append(Breach("prediction_psi", prediction_psi, t.prediction_psi,
                               f"recent predictions PSI {prediction_psi:.3f} > {t.prediction_psi} vs holdout"))
    if live is None:
        notes.append("no live state (executor SQLite absent or empty): live hit rate and PnL not compared")
    elif live["trades"] < t.min_live_trades:
        notes.append(f"{live['trades']} closed live trade(s) < drift.min_live_trades {t.min_live_trades}: "
                     f"live hit rate and PnL not judged yet")
    elif expected is None:
        notes.append("the champion's backtest has no trades: no expectation to compare live trading with")
    else:
        floor = expected["hit_rate"] - t.hit_rate_drop
        if live["hit_rate"] < floor:
            breaches.append(Breach("live_hit_rate", live["hit_rate"], floor,
                                   f"live hit rate {live['hit_rate']:.2%} < backtest {expected['hit_rate']:.2%} "
                                   f"- {t.hit_rate_drop:.0%} over {live['trades']} trades"))
        exp_pnl = expected["pnl_per_trade_usdt"]
        pnl_floor = exp_pnl - t.pnl_shortfall_fraction * abs(exp_pnl)
        if live["pnl_per_trade_usdt"] < pnl_floor:
            breaches.append(Breach("live_pnl", live["pnl_per_trade_usdt"], pnl_floor,
                                   f"live PnL per trade {live['pnl_per_trade_usdt']:+.2f} USDT < {pnl_floor:+.2f} "
                                   f"(backtest {exp_pnl:+.2f})"))
    return DriftAssessment(bool(breaches), breaches, drifted, notes)


def _finite(x) -> np.ndarray:
    arr = np.asarray(x, dtype=float).ravel()
    return arr[np.isfinite(arr)]
