"""``qt ablate``: does a feature family earn its place? Train with and without it on the same folds.

Why this shape (issue 20, "kept only if it helps"):

* **Same folds, same everything else.** The two arms differ only in ``features`` (the registry's
  override, ``features.families``); splits, seeds, members and their hyper-parameters, labels,
  signal, risk and costs are the base params'. Both arms train on the same rows: the features are
  computed once with the family on and every row where one of its columns is undefined (warm-up,
  an input not yet covering the bar) is dropped for both arms, so the walk-forward folds and the
  holdout hold the same bars in both.
* **Scored like the tuner scores.** Each arm runs ``training.tune.iter_folds``: members fitted on
  the purged/embargoed inner folds of the pre-holdout rows, each test block traded through the
  executor's own backtest (net of fees, slippage and funding), ensemble weights and return map
  fitted out of fold; then the holdout as one more block (members fitted on all pre-holdout rows).
* **Paired intervals.** Every change (with - without) of the inner-fold Sharpe/AUC/IC and of the
  holdout's carries a paired stationary block bootstrap interval (``training.ablate_stats``).
* **Every run counts.** Both arms looked at the holdout: each is a trial in the ledger (origin
  ``ablate``), and an MLflow parent run holds the two arms as child runs.
* **Affordable.** Without ``--members`` the fast members (XGBoost, LightGBM) are ablated; the
  report says which members were used.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.families import FAMILIES, family_arms
from qt.config import Params
from qt.errors import DataError
from qt.paths import StatePaths
from training.tune import TuneData

FAST_MEMBERS = ["xgboost", "lightgbm"]


def arm_params(params: Params, family: str, members: list[str] | None = None,
               families: dict[str, dict] | None = None) -> tuple[Params, Params]:
    """(without, with) params: the base with the family off / on, and ``members`` (default the fast ones)."""
    without_f, with_f = family_arms(params.features, family, families)
    train = params.train.model_copy(update={"members": list(members or FAST_MEMBERS)})
    return (params.model_copy(update={"features": without_f, "train": train}),
            params.model_copy(update={"features": with_f, "train": train}))


def load_ablation_data(with_params: Params, paths: StatePaths, lake: Path) -> TuneData:
    """The whole history with the "with" arm's features (a superset of the "without" arm's
    columns), rows restricted to where all of them are defined; ``cut`` and ``holdout_start`` where
    ``training.tune.load_tune_data`` puts them (the train stage's holdout, minus the embargo).
    A family whose inputs are missing fails here with the features stage's own one-line errors."""
    from data.lake import read_candles, read_lake_funding
    from data.sources import venue_lake_root
    from features.compute import compute_features, feature_columns
    from features.labels import label_end_times, label_reach_bars, make_labels
    from features.materialise import read_alt_inputs, read_feature_inputs, read_other_venue
    from training.splits import holdout_split

    p = with_params
    symbols, tf = list(p.data.symbols), p.data.timeframe
    candles = read_candles(lake, symbols, tf, p.data.start, p.data.end)
    if candles.empty:
        raise DataError(f"no candles for {symbols} {tf} in {lake}; run `qt collect` / `qt validate` first")
    funding, reference = read_feature_inputs(lake, symbols, tf, p)
    other = read_other_venue(venue_lake_root(p, paths, "bybit"), symbols, tf, p)
    feats = compute_features(candles, p.features, funding=funding, reference=reference, other_venue=other,
                             alt=read_alt_inputs(lake, p.features))
    feats = feats.dropna(subset=feature_columns(p.features)).reset_index(drop=True)
    reach = label_reach_bars(p.labels, p.risk)
    labels = make_labels(candles, p.labels, p.costs, p.risk if p.labels.target == "triple_barrier" else None)
    keys = ["symbol", "timestamp"]
    joined = feats[keys].merge(labels[keys + ["fwd_return"]].dropna(), on=keys, how="inner")
    if joined.empty:
        raise DataError("no row has both the family's features and a label; collect a longer history")
    joined = joined.assign(label_end=label_end_times(joined, feats, reach))
    _, hold = holdout_split(joined["timestamp"], p.train.holdout_fraction, p.train.embargo_bars, reach,
                            label_end=joined["label_end"])
    holdout_start = pd.Timestamp(joined.loc[hold, "timestamp"].min())
    bars = pd.DatetimeIndex(sorted(joined["timestamp"].unique()))
    cut = bars[max(0, bars.searchsorted(holdout_start) - p.train.embargo_bars)]
    return TuneData(candles, feats, read_lake_funding(lake, symbols), pd.Timestamp(cut), holdout_start)


def run_arm(tp: Params, data: TuneData, n_folds: int, on_block=None) -> list[dict]:
    """One arm: the traded inner folds, then the holdout block (``iter_folds(..., detail=True)``)."""
    from training.tune import iter_folds

    out = []
    for block in iter_folds(tp, data, n_folds, holdout_start=data.holdout_start, detail=True):
        out.append(block)
        if on_block is not None:
            on_block(block)
    return out


def compare_arms(without: list[dict], with_: list[dict], params: Params, seed: int) -> dict:
    """Paired changes (with - without): inner folds (mean over folds) and holdout, each with an interval."""
    from training.ablate_stats import paired_rank_change, paired_sharpe_change

    g = params.gates
    opts = {"samples": g.bootstrap_samples, "mean_block": g.bootstrap_block_bars, "confidence": g.confidence,
            "seed": seed}
    out: dict = {}
    for part, pick in (("inner", lambda b: b["fold"] != "holdout"), ("holdout", lambda b: b["fold"] == "holdout")):
        a = [b for b in without if pick(b)]
        b_ = [b for b in with_ if pick(b)]
        ra, rb = [], []
        for x, y in zip(a, b_, strict=True):
            if not np.array_equal(x["timestamp"], y["timestamp"]):
                raise DataError(f"fold {x['fold']}: the two arms scored different rows; not a paired comparison")
            xr, yr = x["bar_returns"].align(y["bar_returns"], fill_value=0.0)
            ra.append(xr.to_numpy())
            rb.append(yr.to_numpy())
        rows = [{"timestamp": x["timestamp"], "up": x["up"], "fwd_return": x["fwd_return"],
                 "without": x["prob_up"], "with": y["prob_up"]} for x, y in zip(a, b_)]
        out[part] = {"sharpe": paired_sharpe_change(ra, rb, **opts),
                     "auc": paired_rank_change(rows, "auc", **opts),
                     "ic": paired_rank_change(rows, "ic", **opts),
                     "blocks": [_block_row(x, y, list(params.train.members)) for x, y in zip(a, b_)]}
    return out


def _block_row(x: dict, y: dict, members: list[str]) -> dict:
    """One block's figures per arm; ``member_auc`` is each member's own AUC (no interval: a point)."""
    from training.ablate_stats import auc, rank_ic

    return {"member_auc": {m: {"without": auc(x["up"], x["member_probs"][:, i]),
                               "with": auc(y["up"], y["member_probs"][:, i])} for i, m in enumerate(members)},
            "fold": x["fold"], "test_start": x["test_start"], "test_end": x["test_end"], "bars": x["bars"],
            "rows": x["rows"], "sharpe_without": x["sharpe"], "sharpe_with": y["sharpe"],
            "trades_without": x["trades"], "trades_with": y["trades"],
            "auc_without": auc(x["up"], x["prob_up"]), "auc_with": auc(y["up"], y["prob_up"]),
            "ic_without": rank_ic(x["prob_up"], x["fwd_return"]), "ic_with": rank_ic(y["prob_up"], y["fwd_return"])}


def verdict(changes: dict) -> dict:
    """Keep the family only if it helps: the holdout Sharpe change's interval lies above 0 and the
    inner folds' change is positive too (one lucky period is not enough, nor are folds alone)."""
    hold, inner = changes["holdout"]["sharpe"], changes["inner"]["sharpe"]
    keep = bool(hold["low"] > 0 and inner["change"] > 0)
    if keep:
        why = "holdout Sharpe change's interval is above 0 and the inner folds agree"
    elif hold["high"] < 0:
        why = "holdout Sharpe change's interval is below 0: the family hurts"
    else:
        why = "no significant holdout Sharpe change" if hold["low"] <= 0 else "the inner folds disagree"
    return {"keep": keep, "why": why}


def run_ablation(params: Params, paths: StatePaths, lake: Path, family: str, members: list[str] | None = None,
                 families: dict[str, dict] | None = None, progress=None) -> dict:
    """Both arms, the comparison, the ledger and MLflow -> the report (also written to
    ``reports/ablation-<family>.json`` and ``.md``). ``progress(arm, block)`` after each block."""
    from features.compute import feature_columns
    from training.ablate_record import record_arms, write_reports

    t0 = time.perf_counter()
    without, with_ = arm_params(params, family, members, families)
    data = load_ablation_data(with_, paths, lake)
    n_folds = params.tune.folds or params.train.folds
    arms = {}
    for name, tp in (("without", without), ("with", with_)):
        arms[name] = run_arm(tp, data, n_folds, None if progress is None else (lambda b, n=name: progress(n, b)))
    changes = compare_arms(arms["without"], arms["with"], with_, params.train.seed)
    from executor.backtest import bars_per_year
    from qt.timeframes import timeframe_ms

    g = params.gates
    report = {
        "family": family, "override": (families or FAMILIES)[family],
        "columns_added": [c for c in feature_columns(with_.features) if c not in feature_columns(without.features)],
        # added columns with one value throughout (e.g. funding on spot symbols): the arms cannot differ
        "columns_constant": [c for c in feature_columns(with_.features) if c not in feature_columns(without.features)
                             and data.features[c].nunique() <= 1],
        "members": list(with_.train.members),
        "members_note": ("fast members only (XGBoost + LightGBM), the default of qt ablate; pass --members to "
                         "ablate others" if members is None else "members chosen with --members"),
        "data": {"source": params.data.source, "symbols": list(params.data.symbols),
                 "timeframe": params.data.timeframe, "start": params.data.start, "end": params.data.end,
                 "fingerprint": data.key(), "cut": str(data.cut), "holdout_start": str(data.holdout_start),
                 "rows": int(len(data.features))},
        "folds": n_folds, "traded_inner_folds": n_folds - 1, "seed": params.train.seed,
        "bootstrap": {"method": "paired stationary block bootstrap (same drawn bars for both arms)",
                      "samples": g.bootstrap_samples, "mean_block_bars": g.bootstrap_block_bars,
                      "confidence": g.confidence, "interval": "two-sided percentile"},
        "sharpe_unit": "per bar", "annualisation_factor": math.sqrt(bars_per_year(timeframe_ms(params.data.timeframe))),
        "inner": changes["inner"], "holdout": changes["holdout"], "verdict": verdict(changes),
    }
    report.update(record_arms(params, paths, report, {"without": without, "with": with_}, arms, data))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["files"] = [str(p) for p in write_reports(report, paths)]
    return report
