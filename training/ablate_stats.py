"""Paired bootstrap confidence intervals for ``qt ablate``: the change a feature family makes.

Why paired, and how. Both arms of an ablation are scored on the same blocks (the same inner-fold
test blocks and the same holdout), bar for bar, so the noise of the period is shared: most of a
fold's Sharpe is the market of that fold, not the model. Resampling each arm on its own would
count that shared noise twice and hide a real change. So each resample draws ONE set of bars and
scores both arms on it:

* **Stationary block bootstrap** (Politis & Romano 1994; ``training.gates.stationary_bootstrap_indices``,
  the promote gate's own): within each block (fold or holdout) bars are drawn in runs of
  geometric length, mean ``gates.bootstrap_block_bars``, wrapping around, so serial correlation of
  returns and of overlapping labels survives inside a run.
* **Per-bar Sharpe**: each arm's per-bar strategy returns (net of costs, the executor's backtest)
  are indexed by the same drawn bars; the statistic is the mean over blocks of the per-block
  Sharpe (what the tuner scores), and the difference with - without.
* **AUC / IC** (rank correlation of the ensemble's up-probability with the forward return): the
  drawn unit is a bar, which brings every symbol's row at that bar, so cross-sectional dependence
  is kept too.

The interval is the two-sided percentile interval of the resampled differences at
``gates.confidence``; a change "helps" when the interval's low end is above 0.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from training.gates import compute_sharpe, stationary_bootstrap_indices


def auc(up: np.ndarray, prob: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) identity; NaN with a single class."""
    up = np.asarray(up)
    pos = int(up.sum())
    neg = len(up) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(prob)
    return float((ranks[up == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def rank_ic(prob: np.ndarray, fwd_return: np.ndarray) -> float:
    """Spearman correlation of prediction and forward return (the information coefficient)."""
    a, b = rankdata(prob), rankdata(fwd_return)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _interval(point_a: float, point_b: float, diffs: np.ndarray, confidence: float) -> dict:
    diffs = diffs[np.isfinite(diffs)]
    tail = (1.0 - confidence) / 2.0
    low, high = (float(np.quantile(diffs, tail)), float(np.quantile(diffs, 1.0 - tail))) if len(diffs) else (
        float("nan"), float("nan"))
    return {"without": point_a, "with": point_b, "change": point_b - point_a, "low": low, "high": high,
            "excludes_zero": bool(low > 0 or high < 0)}


def paired_sharpe_change(without: list[np.ndarray], with_: list[np.ndarray], *, samples: int, mean_block: int,
                         confidence: float, seed: int) -> dict:
    """Change in the mean per-block per-bar Sharpe (with - without) and its paired bootstrap
    interval. ``without[i]`` and ``with_[i]``: the two arms' bar returns over the same bars of block i."""
    rng = np.random.default_rng(seed)
    a_boot, b_boot = np.zeros(samples), np.zeros(samples)
    for a, b in zip(without, with_, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if len(a) != len(b):
            raise ValueError(f"paired blocks differ in length ({len(a)} vs {len(b)} bars): not the same bars")
        idx = stationary_bootstrap_indices(len(a), mean_block, samples, rng)
        a_boot += compute_sharpe(a[idx])
        b_boot += compute_sharpe(b[idx])
    k = len(without)
    point_a = float(np.mean([compute_sharpe(np.asarray(a, np.float64)) for a in without]))
    point_b = float(np.mean([compute_sharpe(np.asarray(b, np.float64)) for b in with_]))
    return _interval(point_a, point_b, (b_boot - a_boot) / k, confidence)


def paired_rank_change(blocks: list[dict], metric: str, *, samples: int, mean_block: int, confidence: float,
                       seed: int) -> dict:
    """Change in the mean per-block AUC (``metric="auc"``) or IC (``"ic"``), with - without.

    ``blocks[i]``: ``timestamp``, ``up``, ``fwd_return`` of block i's rows (the same rows in both
    arms) and ``without`` / ``with`` (each arm's up-probability for them). Bars are drawn, with
    all their rows."""
    rng = np.random.default_rng(seed)
    sums_a, sums_b = np.zeros(samples), np.zeros(samples)
    point_a, point_b = [], []
    for blk in blocks:
        ts = np.asarray(blk["timestamp"])
        bars, bar_of_row = np.unique(ts, return_inverse=True)
        order = np.argsort(bar_of_row, kind="stable")
        starts = np.searchsorted(bar_of_row[order], np.arange(len(bars) + 1))
        rows_of_bar = [order[starts[i]:starts[i + 1]] for i in range(len(bars))]
        fn = _metric(metric, blk)
        point_a.append(fn(blk["without"], slice(None)))
        point_b.append(fn(blk["with"], slice(None)))
        idx = stationary_bootstrap_indices(len(bars), mean_block, samples, rng)
        for s in range(samples):
            rows = np.concatenate([rows_of_bar[i] for i in idx[s]])
            sums_a[s] += fn(blk["without"], rows)
            sums_b[s] += fn(blk["with"], rows)
    k = len(blocks)
    return _interval(float(np.mean(point_a)), float(np.mean(point_b)), (sums_b - sums_a) / k, confidence)


def _metric(metric: str, blk: dict):
    up, fwd = np.asarray(blk["up"]), np.asarray(blk["fwd_return"], np.float64)
    if metric == "auc":
        return lambda prob, rows: auc(up[rows], np.asarray(prob)[rows])
    if metric == "ic":
        return lambda prob, rows: rank_ic(np.asarray(prob)[rows], fwd[rows])
    raise ValueError(f"metric {metric!r}: auc or ic")
