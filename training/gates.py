"""Promotion gates: does the challenger beat the baselines and the champion by more than luck? (pure)

Every Sharpe here is computed by ``compute_sharpe`` from per-bar net returns
(after fees, slippage, funding - whatever the backtest charged), annualised by
``sqrt(periods_per_year)`` for display; all series are aligned on the strategy's
bars (a bar missing from another series counts as a zero return, i.e. flat).

Gates (each reported with its value, threshold and a sentence a person can check):

* ``min_trades`` - trades >= ``min_trades``: too few trades say nothing;
* ``sharpe_vs_<baseline>`` - strategy Sharpe - baseline Sharpe > ``min_sharpe_margin``
  (annualised units) for each baseline (flat, buy_and_hold, rule_rsi_macd, ...);
* ``bootstrap_vs_best_baseline`` - the one-sided lower ``confidence`` bound of the
  Sharpe difference vs the best baseline, from a paired **stationary block
  bootstrap** (Politis & Romano; mean block ``bootstrap_block_bars``, seeded), > 0;
* ``sharpe_vs_champion`` / ``bootstrap_vs_champion`` - the same two against the
  current champion re-evaluated on the challenger's holdout, when there is one - only on the
  bars the champion was never fitted on (``training.champion_window``), the challenger's
  returns cut to the same bars;
* ``champion_comparison`` - present (and failed) only when that comparison was refused (too
  few such bars, or an unknown training end): a challenger that cannot be shown to beat the
  champion is not promoted automatically;
* ``deflated_sharpe`` - the deflated Sharpe ratio (Bailey & Lopez de Prado 2014):
  the probability that the true Sharpe exceeds the best Sharpe expected from
  ``n_trials`` skill-less trials, corrected for skew and kurtosis. The variance of
  the trials' Sharpes is the estimator's own variance under the null, 1/(T-1)
  per bar, unless the caller passes the measured one. Gate: > ``min_deflated_sharpe``;
* ``max_drawdown`` - the strategy's holdout max drawdown <= ``max_drawdown``: a model whose
  equity falls further than the owner accepts is not promoted however good its Sharpe;
* ``point_in_time`` - the features stage's lookahead and recursive-indicator checks
  (``reports/features.json``) passed, on the same feature set the model was trained on.
  A missing record, a violation or a record of another feature set fails: a model built
  on features that may see the future must never serve.

The gates decide; *who* moves the champion is ``GateParams.mode``: ``auto`` promotes when
every gate passes, ``manual`` leaves the version as challenger with ``approval=pending``
until a person approves it (``qt models approve``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import kurtosis, norm, skew

from qt.config import GateParams

_EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: float
    threshold: float
    detail: str


@dataclass(frozen=True)
class GateReport:
    passed: bool
    gates: list[dict]  # GateResult as dicts, in evaluation order

    def failed(self) -> list[dict]:
        return [g for g in self.gates if not g["passed"]]

    def reasons(self) -> list[str]:
        """One readable line per failing gate."""
        return [f"{g['name']} failed: {g['detail']}" for g in self.failed()]


def compute_sharpe(bar_returns) -> float:
    """Per-bar Sharpe mean/std (ddof=1) with a zero risk-free rate; 0 for a constant series."""
    r = np.asarray(bar_returns, dtype=np.float64)
    if r.ndim == 1:
        if len(r) < 2:
            return 0.0
        sd = r.std(ddof=1)
        return float(r.mean() / sd) if sd > 0 else 0.0
    sd = r.std(axis=-1, ddof=1)
    mean = r.mean(axis=-1)
    return np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 0)


def stationary_bootstrap_indices(n: int, mean_block: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """(samples x n) indices: blocks start uniformly, length ~ Geometric(1/mean_block), wrap around."""
    p_new = 1.0 / max(1, mean_block)
    new_block = rng.random((samples, n)) < p_new
    new_block[:, 0] = True
    starts = rng.integers(0, n, size=(samples, n))
    t = np.arange(n)
    block_t0 = np.maximum.accumulate(np.where(new_block, t, 0), axis=1)
    start_val = np.take_along_axis(starts, block_t0, axis=1)
    return (start_val + (t - block_t0)) % n


def bootstrap_sharpe_difference(a, b, samples: int, mean_block: int, confidence: float,
                                seed: int) -> tuple[float, float]:
    """(point difference, one-sided lower ``confidence`` bound) of Sharpe(a) - Sharpe(b), per bar.

    The same resampled bars are used for both series, so their correlation is kept.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    point = compute_sharpe(a) - compute_sharpe(b)
    if len(a) < 2:
        return point, float("-inf")
    idx = stationary_bootstrap_indices(len(a), mean_block, samples, np.random.default_rng(seed))
    diffs = compute_sharpe(a[idx]) - compute_sharpe(b[idx])
    return point, float(np.quantile(diffs, 1.0 - confidence))


def deflated_sharpe_probability(bar_returns, n_trials: int,
                                trial_sharpe_variance: float | None = None) -> dict[str, float]:
    """DSR = PSR(SR*) with SR* the expected maximum Sharpe of ``n_trials`` null trials (per bar)."""
    r = np.asarray(bar_returns, dtype=np.float64)
    t = len(r)
    sr = compute_sharpe(r)
    if t < 3 or np.ptp(r) == 0:
        return {"dsr": 0.0, "sharpe": sr, "sharpe_star": float("nan"), "bars": t, "skew": 0.0, "kurtosis": 3.0}
    var = trial_sharpe_variance if trial_sharpe_variance is not None else 1.0 / (t - 1)
    n = max(1, int(n_trials))
    if n == 1:
        sr_star = 0.0
    else:
        sr_star = math.sqrt(var) * ((1 - _EULER_GAMMA) * norm.ppf(1 - 1.0 / n)
                                    + _EULER_GAMMA * norm.ppf(1 - 1.0 / (n * math.e)))
    g3 = float(skew(r))
    g4 = float(kurtosis(r, fisher=False))
    denom = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr ** 2
    denom = denom if denom > 0 else 1.0
    z = (sr - sr_star) * math.sqrt(t - 1) / math.sqrt(denom)
    return {"dsr": float(norm.cdf(z)), "sharpe": sr, "sharpe_star": float(sr_star), "bars": t,
            "skew": g3, "kurtosis": g4}


def _as_returns(obj, index: pd.Index) -> np.ndarray:
    """Bar returns aligned on ``index``; a dict with ``bar_returns`` or a Series; None = flat."""
    if isinstance(obj, dict):
        obj = obj.get("bar_returns")
    if obj is None:
        return np.zeros(len(index))
    s = obj if isinstance(obj, pd.Series) else pd.Series(np.asarray(obj, dtype=np.float64), index=index)
    return s.reindex(index).fillna(0.0).to_numpy(dtype=np.float64)


def max_drawdown_gate(strategy_metrics: dict, limit: float) -> GateResult:
    """Holdout max drawdown (positive fraction) <= ``limit``; an unreported drawdown fails."""
    dd = strategy_metrics.get("max_drawdown")
    if dd is None or not math.isfinite(float(dd)):
        return GateResult("max_drawdown", False, float("nan"), limit,
                          "the holdout backtest reported no max_drawdown; rerun `qt evaluate`")
    dd = float(dd)
    return GateResult("max_drawdown", dd <= limit, dd, limit,
                      f"holdout max drawdown {dd:.2%} (limit {limit:.2%}, gates.max_drawdown)")


def point_in_time_gate(features_record: dict | None, model_feature_set_hash: str | None) -> GateResult:
    """The features stage's point-in-time result for the model's feature set; value = violations.

    ``features_record`` is the ``features`` part of ``reports/features.json`` (with
    ``feature_set_hash`` and ``point_in_time``), or None when the file is missing.
    """
    rerun = "rerun `qt features` (it runs the lookahead and recursive checks) before promoting"
    pit = (features_record or {}).get("point_in_time")
    if not pit:
        return GateResult("point_in_time", False, float("nan"), 0.0,
                          f"no lookahead/recursive check result recorded (reports/features.json); {rerun}")
    checked_hash = features_record.get("feature_set_hash")
    if model_feature_set_hash is not None and checked_hash != model_feature_set_hash:
        return GateResult("point_in_time", False, float("nan"), 0.0,
                          f"the recorded check ran on feature set {str(checked_hash)[:12]} but the model was "
                          f"trained on {str(model_feature_set_hash)[:12]}; {rerun}")
    look = pit.get("lookahead_violations")
    rec = pit.get("recursive_violations")
    if look is None or rec is None:
        return GateResult("point_in_time", False, float("nan"), 0.0,
                          f"the recorded check lacks its lookahead/recursive violation counts; {rerun}")
    bad = int(look) + int(rec)
    if bad:
        return GateResult("point_in_time", False, float(bad), 0.0,
                          f"{int(look)} lookahead and {int(rec)} recursive violation(s); fix the feature and {rerun}")
    return GateResult("point_in_time", True, 0.0, 0.0,
                      f"lookahead ({pit.get('lookahead_cuts', '?')} cuts) and recursive checks passed on "
                      f"{pit.get('rows_checked', '?')} rows of the model's feature set")


def evaluate_gates(strategy_bar_returns: pd.Series, baseline_results: dict, champion_bar_returns: pd.Series | None,
                   strategy_metrics: dict, gates: GateParams, n_trials: int, periods_per_year: float = 1.0,
                   seed: int = 0, trial_sharpe_variance: float | None = None, *,
                   point_in_time: dict | None, feature_set_hash: str | None = None,
                   champion_refusal: str | None = None) -> GateReport:
    """Run every gate; ``passed`` only when all pass. See the module docstring for each gate.

    ``point_in_time``: the features stage's record (``features`` part of reports/features.json)
    or None when there is none (the gate then fails); ``feature_set_hash``: the model's.
    ``champion_bar_returns``: a Series on the bars the champion may be scored on (the challenger
    is compared on those bars only); ``champion_refusal``: why the comparison was refused.
    """
    if not isinstance(strategy_bar_returns, pd.Series):
        strategy_bar_returns = pd.Series(np.asarray(strategy_bar_returns, dtype=np.float64))
    index = strategy_bar_returns.index
    strat = strategy_bar_returns.fillna(0.0).to_numpy(dtype=np.float64)
    ann = math.sqrt(periods_per_year)
    strat_sr = compute_sharpe(strat) * ann
    results: list[GateResult] = []

    trades = int(strategy_metrics.get("trades", 0) or 0)
    results.append(GateResult("min_trades", trades >= gates.min_trades, float(trades), float(gates.min_trades),
                              f"{trades} trades on the holdout (need >= {gates.min_trades})"))

    baselines = {name: _as_returns(res, index) for name, res in baseline_results.items()}
    base_sr = {name: compute_sharpe(r) * ann for name, r in baselines.items()}
    for name, sr in base_sr.items():
        diff = strat_sr - sr
        results.append(GateResult(f"sharpe_vs_{name}", diff > gates.min_sharpe_margin, diff, gates.min_sharpe_margin,
                                  f"strategy Sharpe {strat_sr:.3f} vs {name} {sr:.3f}: difference {diff:.3f} "
                                  f"(need > {gates.min_sharpe_margin})"))

    def _bootstrap_gate(gate_name: str, label: str, other: np.ndarray, mine: np.ndarray = strat) -> GateResult:
        point, lower = bootstrap_sharpe_difference(mine, other, gates.bootstrap_samples, gates.bootstrap_block_bars,
                                                   gates.confidence, seed)
        return GateResult(gate_name, lower > 0, lower * ann, 0.0,
                          f"Sharpe difference vs {label} {point * ann:.3f}, one-sided {gates.confidence:.0%} "
                          f"lower bound {lower * ann:.3f} ({gates.bootstrap_samples} stationary-bootstrap samples, "
                          f"mean block {gates.bootstrap_block_bars} bars; need > 0)")

    if baselines:
        best = max(base_sr, key=base_sr.get)
        results.append(_bootstrap_gate("bootstrap_vs_best_baseline", f"best baseline {best}", baselines[best]))

    if champion_refusal is not None:
        results.append(GateResult("champion_comparison", False, float("nan"), float(gates.min_champion_bars),
                                  f"{champion_refusal}: the challenger cannot be shown to beat the champion, so it "
                                  f"is not promoted automatically (`qt models approve VERSION --by NAME --force`)"))
    elif champion_bar_returns is not None:
        shared = index
        if isinstance(champion_bar_returns, pd.Series):  # the bars the champion may be scored on
            shared = index[index.isin(champion_bar_returns.index)]
        mine = strategy_bar_returns.reindex(shared).fillna(0.0).to_numpy(dtype=np.float64)
        champ = _as_returns(champion_bar_returns, shared)
        mine_sr, champ_sr = compute_sharpe(mine) * ann, compute_sharpe(champ) * ann
        diff = mine_sr - champ_sr
        results.append(GateResult("sharpe_vs_champion", diff > gates.min_sharpe_margin, diff, gates.min_sharpe_margin,
                                  f"strategy Sharpe {mine_sr:.3f} vs champion {champ_sr:.3f} on {len(shared)} bars: "
                                  f"difference {diff:.3f} (need > {gates.min_sharpe_margin})"))
        results.append(_bootstrap_gate("bootstrap_vs_champion", f"champion on {len(shared)} bars", champ, mine))

    dsr = deflated_sharpe_probability(strat, n_trials, trial_sharpe_variance)
    results.append(GateResult(
        "deflated_sharpe", dsr["dsr"] > gates.min_deflated_sharpe, dsr["dsr"], gates.min_deflated_sharpe,
        f"P(true Sharpe > best of {max(1, int(n_trials))} null trials) = {dsr['dsr']:.3f} "
        f"(per-bar Sharpe {dsr['sharpe']:.4f} vs expected null maximum {dsr['sharpe_star']:.4f}; "
        f"{dsr['bars']} bars, skew {dsr['skew']:.2f}, kurtosis {dsr['kurtosis']:.2f}; "
        f"need > {gates.min_deflated_sharpe})"))
    results.append(max_drawdown_gate(strategy_metrics, gates.max_drawdown))
    results.append(point_in_time_gate(point_in_time, feature_set_hash))

    as_dicts = [asdict(g) for g in results]
    return GateReport(passed=all(g.passed for g in results), gates=as_dicts)
