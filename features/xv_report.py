"""The cross-venue arbitrage report (``qt xv report``): how far Bybit's price of a USDT perpetual
strays from Binance's, what the funding spread pays, and whether the gap ever beats the costs.

A report, not a trader: it says whether a Binance/Bybit basis trade could have paid under
``params.costs`` in hindsight. Pure functions over frames already read (``data.venue_pairs``
reads them); no I/O here.

Definitions (all in basis points, 1 bp = 1e-4):

* **basis** of a bar = ``1e4 * ln(Bybit close / Binance close)``, on the bars BOTH venues have
  (an inner join on the open time: a report measures what was there; it carries nothing forward).
  Positive: Bybit is rich.
* **funding spread** of a settlement = Bybit's rate settled at ``t`` minus Binance's last rate
  settled at or before ``t`` (both a fraction per 8 h interval), per Bybit settlement.
  ``mean_bps_per_8h`` is its mean; ``annualised_pct`` = mean x 3 x 365 settlements a year, in %.
* **round-trip cost** = ``4 x (1e4 x costs.fee_rate + costs.slippage_bps)``: capturing a basis
  opens one leg on each venue (buy the cheap one, sell the rich one) and closes both when the
  gap is gone: four taker fills, each paying the fee and the slippage.
* **capturable** |basis|: entered at |b| and closed at convergence (basis 0) a trade earns |b|
  before costs, so a bar is an opportunity when ``|b| > round-trip cost``; its capturable bps
  after costs = ``|b| - cost``.
* **opportunity** = a run of consecutive bars (one bar apart, same sign) whose |basis| exceeds
  the cost: ``start``/``end`` (open times of its first and last bars), ``bars``, ``peak_bps``
  (largest |basis| in the run), ``side`` (``bybit_rich`` | ``binance_rich``) and
  ``capturable_bps`` = peak - cost (one trade per run, entered at its best bar in hindsight:
  an upper bound on what the run could pay).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qt.config import CostParams

_BPS = 1e4
SETTLEMENTS_PER_YEAR = 3 * 365  # 8-hour funding intervals


def round_trip_cost_bps(costs: CostParams) -> float:
    """Fees and slippage of both legs on both venues, opened and closed: 4 taker fills."""
    return 4.0 * (costs.fee_rate * _BPS + costs.slippage_bps)


def basis_bps(binance: pd.DataFrame, bybit: pd.DataFrame) -> pd.DataFrame:
    """``timestamp``, ``basis_bps`` on the bars both venues have (``timestamp``, ``close`` frames)."""
    joined = binance[["timestamp", "close"]].merge(bybit[["timestamp", "close"]], on="timestamp",
                                                   suffixes=("_binance", "_bybit"), how="inner", sort=True)
    basis = _BPS * np.log(joined["close_bybit"].to_numpy(dtype=np.float64) /
                          joined["close_binance"].to_numpy(dtype=np.float64))
    return pd.DataFrame({"timestamp": joined["timestamp"], "basis_bps": basis})


def funding_spread_bps(binance: pd.DataFrame, bybit: pd.DataFrame) -> pd.DataFrame:
    """``timestamp``, ``spread_bps`` per Bybit settlement: Bybit's rate minus Binance's last settled
    one (settlements before Binance's first are left out)."""
    b_ms = _ms(binance)
    order = np.argsort(b_ms, kind="stable")
    b_ms, b_rate = b_ms[order], binance["funding_rate"].to_numpy(dtype=np.float64)[order]
    y = bybit.sort_values("timestamp", kind="stable")
    pos = np.searchsorted(b_ms, _ms(y), side="right") - 1
    seen = pos >= 0
    spread = _BPS * (y["funding_rate"].to_numpy(dtype=np.float64)[seen] - b_rate[pos[seen]])
    return pd.DataFrame({"timestamp": y["timestamp"].iloc[np.flatnonzero(seen)].reset_index(drop=True),
                         "spread_bps": spread})


def find_opportunities(basis: pd.DataFrame, cost_bps: float, bar_ms: int) -> list[dict]:
    """Runs of consecutive same-sign bars whose |basis| exceeds ``cost_bps`` (module docstring)."""
    b = basis["basis_bps"].to_numpy(dtype=np.float64)
    ms = _ms(basis)
    above = np.abs(b) > cost_bps
    sign = np.sign(b)
    out: list[dict] = []
    i = 0
    while i < len(b):
        if not above[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(b) and above[j + 1] and sign[j + 1] == sign[i] and ms[j + 1] - ms[j] == bar_ms:
            j += 1
        peak = float(np.abs(b[i:j + 1]).max())
        out.append({"start": _iso(ms[i]), "end": _iso(ms[j]), "bars": int(j - i + 1), "peak_bps": peak,
                    "side": "bybit_rich" if sign[i] > 0 else "binance_rich", "capturable_bps": peak - cost_bps})
        i = j + 1
    return out


def basis_stats(values: np.ndarray, cost_bps: float) -> dict:
    """mean, median, p5, p95, max |basis| and the share of bars whose |basis| exceeds the cost."""
    if not len(values):
        return {"bars": 0, "mean": None, "median": None, "p5": None, "p95": None, "max_abs": None,
                "share_above_cost": None}
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    return {"bars": int(len(values)), "mean": float(values.mean()), "median": float(median), "p5": float(p5),
            "p95": float(p95), "max_abs": float(np.abs(values).max()),
            "share_above_cost": float((np.abs(values) > cost_bps).mean())}


def funding_stats(spread: np.ndarray) -> dict:
    if not len(spread):
        return {"settlements": 0, "mean_bps_per_8h": None, "annualised_pct": None}
    mean = float(spread.mean())
    return {"settlements": int(len(spread)), "mean_bps_per_8h": mean,
            "annualised_pct": mean * SETTLEMENTS_PER_YEAR / 100.0}


def symbol_report(binance: pd.DataFrame, bybit: pd.DataFrame, binance_funding: pd.DataFrame,
                  bybit_funding: pd.DataFrame, cost_bps: float, bar_ms: int,
                  start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> dict:
    """One symbol's block: whole-period figures, one row per calendar month (UTC) and the
    opportunities. ``start``/``end`` bound the settlements counted (the funding frames may reach
    back further so that the first settlement finds Binance's rate before it)."""
    basis = basis_bps(binance, bybit)
    spread = funding_spread_bps(binance_funding, bybit_funding)
    if start is not None:
        spread = spread[spread["timestamp"] >= start]
    if end is not None:
        spread = spread[spread["timestamp"] < end]
    opportunities = find_opportunities(basis, cost_bps, bar_ms)
    months = []
    basis_month = _month(basis["timestamp"])
    spread_month = _month(spread["timestamp"])
    for month in sorted(set(basis_month) | set(spread_month)):
        in_month = [o for o in opportunities if o["start"][:7] == month]
        months.append({"month": month,
                       "basis_bps": basis_stats(basis["basis_bps"].to_numpy()[basis_month == month], cost_bps),
                       "funding_spread": funding_stats(spread["spread_bps"].to_numpy()[spread_month == month]),
                       "opportunities": len(in_month),
                       "capturable_bps": float(sum(o["capturable_bps"] for o in in_month))})
    return {"first_bar": _iso(_ms(basis)[0]) if len(basis) else None,
            "last_bar": _iso(_ms(basis)[-1]) if len(basis) else None,
            "basis_bps": basis_stats(basis["basis_bps"].to_numpy(), cost_bps),
            "funding_spread": funding_stats(spread["spread_bps"].to_numpy()),
            "opportunity_count": len(opportunities),
            "capturable_bps_total": float(sum(o["capturable_bps"] for o in opportunities)),
            "months": months, "opportunities": opportunities}


def cost_block(costs: CostParams) -> dict:
    return {"fee_rate": costs.fee_rate, "slippage_bps": costs.slippage_bps,
            "per_fill_bps": costs.fee_rate * _BPS + costs.slippage_bps,
            "round_trip_bps": round_trip_cost_bps(costs),
            "formula": "4 x (1e4 x fee_rate + slippage_bps): open and close one leg on each venue, taker fills"}


def _month(ts: pd.Series) -> np.ndarray:
    return pd.to_datetime(ts, utc=True).dt.strftime("%Y-%m").to_numpy()


def _ms(frame: pd.DataFrame) -> np.ndarray:
    return frame["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")


def _iso(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
