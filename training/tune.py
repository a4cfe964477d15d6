"""The strategy search's objective and study (``qt tune``): plain functions, no Prefect inside.

Why it is built this way - so that the search cannot fool us:

* **Nested.** ``load_tune_data`` cuts the candles and features at the start of the holdout the
  train stage will use (``training.splits.holdout_split`` on the same rows, minus the embargo), so
  no trial ever reads a holdout bar; the holdout is scored once, after the search, by the normal
  train -> evaluate -> promote stages on the selected configuration (``training.tune_run``).
* **Scored like the strategy trades.** Each trial fits its members on the inner walk-forward
  folds of the pre-holdout rows (``walk_forward_folds``: purged and embargoed, the train stage's
  own folds) and trades each fold's test block through the executor's own backtest
  (``executor.backtest.run_backtest`` with the trial's signal, risk and costs: net of fees,
  slippage and funding). The fold's per-bar Sharpe is reported to Optuna (``MedianPruner`` over
  folds); the objective is the mean inner-fold per-bar Sharpe.
* **Every trial counts.** ``study_statistics`` counts completed + pruned trials from the RDB
  storage (all resumptions, all workers) and the variance of their Sharpes; the deflated Sharpe of
  the selected configuration uses both (``training.gates.deflated_sharpe_probability``).

A trial's configuration is the base params with the sampled values set at their dotted paths and
validated again (``trial_params``): a combination params.yaml would refuse is refused here too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from qt.config import Params
from qt.errors import ConfigError, DataError, UserError
from qt.paths import StatePaths
from qt.tuneparams import TuneDimension, TuneParams

log = logging.getLogger(__name__)

DIRECTION = "maximize"
# Members' hyper-parameter dicts: a key absent from the default dict may still be searched.
_FREE_DICTS = ("train.xgboost", "train.lightgbm", "train.nhits", "train.patchtst")


@dataclass(frozen=True)
class TuneData:
    """What every trial may read: candles, features and funding strictly before ``cut``."""

    candles: pd.DataFrame
    features: pd.DataFrame
    funding: pd.DataFrame | None
    cut: pd.Timestamp  # first bar no trial may read: the holdout start minus the embargo
    holdout_start: pd.Timestamp

    @property
    def end(self) -> pd.Timestamp:
        """The last bar any trial sees (for the test that the holdout is never read)."""
        return max(self.candles["timestamp"].max(), self.features["timestamp"].max())

    def key(self) -> str:
        """A short fingerprint of the data the trials are scored on (the trial ledger's model id)."""
        blob = json.dumps([sorted(self.candles["symbol"].unique().tolist()), str(self.candles["timestamp"].min()),
                           str(self.end), len(self.candles)])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# -- configuration ---------------------------------------------------------------------------
def check_space(params: Params, tune: TuneParams) -> None:
    """ConfigError (one line) when a dimension's path names no key of params.yaml, or a features
    dimension is not categorical or has a choice the feature code refuses
    (``training.tune_features.feature_variants``)."""
    from training.tune_features import feature_variants

    raw = params.model_dump(mode="json")
    for dim in tune.space:
        parts = dim.path.split(".")
        node = raw
        for i, part in enumerate(parts):
            parent = ".".join(parts[:i])
            if isinstance(node, dict) and (part in node or (parent in _FREE_DICTS and i == len(parts) - 1)):
                node = node.get(part)
                continue
            raise ConfigError(f"tune.space: {dim.path} is not a key of params.yaml (no {part!r} under "
                              f"{parent or 'the top level'})")
    feature_variants(params.features, tune)


def trial_params(params: Params, values: dict) -> Params:
    """``params`` with each ``{dotted.path: value}`` set, validated again (ConfigError if refused)."""
    raw = params.model_dump(mode="json")
    for path, value in values.items():
        node = raw
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"tuned values {values} refused: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def suggest(trial, dim: TuneDimension):
    """One sampled value of ``dim`` (categorical choices are stored by index: lists are not hashable)."""
    if dim.kind == "categorical":
        labels = [json.dumps(c) for c in dim.choices]
        return json.loads(trial.suggest_categorical(dim.path, labels))
    if dim.kind == "int":
        return trial.suggest_int(dim.path, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
    return trial.suggest_float(dim.path, dim.low, dim.high, step=dim.step, log=dim.log)


def decode(values: dict, tune: TuneParams) -> dict:
    """Optuna's stored params -> ``{path: value}`` as params.yaml takes them."""
    kinds = {d.path: d.kind for d in tune.space}
    return {k: json.loads(v) if kinds.get(k) == "categorical" else v for k, v in values.items()}


# -- data ------------------------------------------------------------------------------------
def load_tune_data(params: Params, paths: StatePaths, lake: Path) -> TuneData:
    """The pre-holdout candles/features/funding of ``params.data.symbols`` (features stage done).

    The holdout is where the train stage will put it: ``holdout_split`` on the joined
    features+labels rows of ``params``, purged by its label's reach; the cut is ``embargo_bars``
    before it. The features are the store's plus the columns of every ``features.*`` choice in
    ``params.tune.space`` (``training.tune_features``: computed once here, on the whole history,
    then cut like the rest: a feature at bar t reads nothing after t)."""
    from data.lake import read_candles, read_lake_funding
    from features.labels import label_end_times, label_reach_bars
    from features.store import read_features, read_labels
    from training.splits import holdout_split
    from training.tune_features import add_feature_choices

    symbols = list(params.data.symbols)
    feats = read_features(paths.features, symbols)
    labels = read_labels(paths.features, symbols)
    keys = ["symbol", "timestamp"]
    joined = feats[keys].merge(labels[keys + ["fwd_return"]].dropna(), on=keys, how="inner")
    if joined.empty:
        raise DataError("no row has both features and a label; run `qt features` first")
    reach = label_reach_bars(params.labels, params.risk)
    joined = joined.assign(label_end=label_end_times(joined, feats, reach))
    _, hold = holdout_split(joined["timestamp"], params.train.holdout_fraction, params.train.embargo_bars,
                            reach, label_end=joined["label_end"])
    holdout_start = pd.Timestamp(joined.loc[hold, "timestamp"].min())
    bars = pd.DatetimeIndex(sorted(joined["timestamp"].unique()))
    cut = bars[max(0, bars.searchsorted(holdout_start) - params.train.embargo_bars)]
    candles = read_candles(lake, symbols, params.data.timeframe, params.data.start, params.data.end)
    from data.sources import venue_lake_root

    feats = add_feature_choices(feats, candles, params, lake, venue_lake_root(params, paths, "bybit"))
    funding = read_lake_funding(lake, symbols)
    if funding is not None:
        funding = funding[funding["timestamp"] < cut].reset_index(drop=True)
    return TuneData(candles[candles["timestamp"] < cut].reset_index(drop=True),
                    feats[feats["timestamp"] < cut].reset_index(drop=True), funding, pd.Timestamp(cut),
                    holdout_start)


# -- the objective ---------------------------------------------------------------------------
def iter_folds(tp: Params, data: TuneData, n_folds: int, *, holdout_start: pd.Timestamp | None = None,
               detail: bool = False):
    """Fit ``tp``'s members on each inner fold, trade its test block -> yield one dict per traded fold.

    The first fold only calibrates: its test-block predictions are the first out-of-fold rows the
    ensemble weights and the return map of the next fold are fitted on (``oof_calibration``); every
    later fold is traded with weights and map fitted on the folds before it, so ``n_folds`` folds
    give ``n_folds - 1`` scores (numbered from 0).

    A generator, so the objective can report each fold to Optuna and stop (prune) before the
    next one is fitted. Labels are made here with the trial's horizon, target and barriers from
    the pre-holdout candles, so a searched ``labels.horizon_bars`` / ``labels.target`` needs no new
    feature store; every purge spans the trial's label reach (``label_reach_bars``). The trial
    reads only its own columns of the study's feature union and drops the rows where one of them
    is undefined (``join_features_labels``).

    ``holdout_start`` (``qt ablate``; ``data`` then holds the whole history, ``data.cut`` still the
    first bar no inner fold reads): after the inner folds, one more block, ``fold`` "holdout" -
    members fitted on every pre-cut row, weights and map on every inner fold's out-of-fold rows,
    the rows from ``holdout_start`` on traded. ``detail`` adds each block's bar returns,
    probabilities and targets (for paired bootstraps), which Optuna's attributes should not hold."""
    from executor.backtest import run_backtest
    from features.compute import feature_columns
    from features.labels import label_end_times, label_reach_bars, make_labels
    from features.sequence import add_return_windows
    from training.backtest_model import strategy_signals
    from training.gates import compute_sharpe
    from training.models import fit_any_member, predict_up_probability
    from training.splits import walk_forward_folds
    from training.train import (
        join_features_labels,
        member_columns,
        sequence_exog_of,
        sequence_length_of,
    )
    from training.tune_features import missing_columns

    reach = label_reach_bars(tp.labels, tp.risk)  # bars after t the trial's label reads
    columns, by_member = member_columns(tp)
    feats = data.features
    missing_columns(feature_columns(tp.features), feats)  # computed once per study: load_tune_data
    if sequence_length_of(tp):
        feats = add_return_windows(feats, sequence_length_of(tp), exog=sequence_exog_of(tp))
    labels = make_labels(data.candles, tp.labels, tp.costs, tp.risk if tp.labels.target == "triple_barrier" else None)
    labels = labels.assign(label_end=label_end_times(labels, feats, reach))
    all_rows = join_features_labels(feats, labels, columns, tp.labels)  # up / fwd_return: the trial's target
    rows = all_rows[all_rows["label_end"] < data.cut].reset_index(drop=True)  # no label reaches the embargo
    inner_candles = data.candles[data.candles["timestamp"] < data.cut].reset_index(drop=True)
    folds = walk_forward_folds(rows["timestamp"], n_folds, reach, tp.train.embargo_bars, label_end=rows["label_end"])
    # (train frame, train idx, test frame, test idx, candles traded): the inner folds, then the holdout
    plan = [(rows, tr, rows, te, inner_candles) for tr, te in folds]
    if holdout_start is not None:
        hold = all_rows[all_rows["timestamp"] >= holdout_start].reset_index(drop=True)
        plan.append((rows, np.arange(len(rows)), hold, np.arange(len(hold)), data.candles))
    up = rows["up"].to_numpy(dtype=np.int64)
    ret = rows["fwd_return"].to_numpy(dtype=np.float64)
    oof_p: list[np.ndarray] = []  # per earlier fold: its test block's member probabilities (n x k)
    oof_rows: list[np.ndarray] = []
    for f, (train, tr, test_frame, te, traded) in enumerate(plan):
        up_tr = train["up"].to_numpy(dtype=np.int64)[tr]
        if len(np.unique(up_tr)) < 2:
            raise DataError(f"fold {f}: training labels are all one class")
        test_p = np.column_stack([
            predict_up_probability(fit_any_member(name, train.iloc[tr], up_tr, tp, by_member[name]),
                                   test_frame.iloc[te][by_member[name]].to_numpy(np.float64))
            for name in tp.train.members])
        if f == 0:  # calibration only: no out-of-fold prediction exists yet to fit weights and map on
            oof_p.append(test_p)
            oof_rows.append(te)
            continue
        seen = np.concatenate(oof_rows)
        weights, intercept, slope = oof_calibration(np.vstack(oof_p), up[seen], ret[seen])
        oof_p.append(test_p)
        oof_rows.append(te)
        p_test = test_p @ weights
        test = test_frame.iloc[te]
        preds = test[["symbol", "timestamp"]].assign(prob_up=p_test, expected_return=intercept + slope * (p_test - 0.5))
        signals = strategy_signals(preds.reset_index(drop=True), traded, tp, model_version="tune")
        start = test["timestamp"].min()
        candles = traded[traded["timestamp"] >= start].reset_index(drop=True)
        res = run_backtest(candles, signals, tp, funding=data.funding)
        r = res.bar_returns.fillna(0.0).to_numpy()
        sharpe = float(compute_sharpe(r))
        out = {"fold": "holdout" if f == len(folds) else f - 1, "sharpe": sharpe,
               "sharpe_se": sharpe_standard_error(r), "bars": len(r), "rows": len(te),
               "trades": int(res.metrics.get("trades", 0)), "net_return": float(res.metrics.get("net_return", 0.0)),
               "test_start": str(start), "test_end": str(test["timestamp"].max())}
        if detail:  # what a paired comparison of two configurations needs (``training.ablate``)
            out.update(bar_returns=res.bar_returns.fillna(0.0), prob_up=p_test, member_probs=test_p,
                       up=test["up"].to_numpy(dtype=np.int64), fwd_return=test["fwd_return"].to_numpy(np.float64),
                       timestamp=test["timestamp"].to_numpy())
        yield out


def oof_calibration(member_probs: np.ndarray, up: np.ndarray, fwd_return: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(convex member weights, return-map intercept, slope) fitted on out-of-fold predictions only.

    The train stage fits both on its walk-forward OOF rows (``training.train``); a trial does the
    same with the test blocks of the folds before the one it trades, so neither the weights nor
    the expected return a trade is gated on (``signal.min_edge_bps``, rank mode) ever saw the
    rows they were fitted to predict - an in-sample map would promise the model's training fit."""
    from training.ensemble import fit_convex_weights, fit_return_map

    weights = fit_convex_weights(member_probs, up)
    intercept, slope = fit_return_map(member_probs @ weights, fwd_return)
    return weights, intercept, slope


def sharpe_standard_error(bar_returns: np.ndarray) -> float:
    """Standard error of a per-bar Sharpe ratio under non-normal returns (Mertens 2002, the form
    Bailey & Lopez de Prado use): sqrt((1 - skew*SR + (kurt - 1)/4 * SR^2) / (n - 1)). NaN under two bars."""
    from scipy.stats import kurtosis, skew

    r = np.asarray(bar_returns, dtype=np.float64)
    if len(r) < 2 or r.std(ddof=1) == 0:
        return float("nan") if len(r) < 2 else 1.0 / math.sqrt(len(r) - 1)
    sr = r.mean() / r.std(ddof=1)
    g3, g4 = float(skew(r)), float(kurtosis(r, fisher=False))
    return float(math.sqrt(max(1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr, 0.0) / (len(r) - 1)))


def sharpe_interval(folds: list[dict], z: float = 1.96) -> dict:
    """Confidence interval of a trial's score (the mean of its folds' per-bar Sharpes) from the
    folds' sampling errors: disjoint test blocks, so se = sqrt(sum of squared fold se) / K."""
    ses = np.array([f.get("sharpe_se", float("nan")) for f in folds], dtype=np.float64)
    mean = float(np.mean([f["sharpe"] for f in folds])) if folds else float("nan")
    se = float(np.sqrt(np.sum(ses**2)) / len(ses)) if len(ses) else float("nan")
    return {"sharpe": mean, "se": se, "low": mean - z * se, "high": mean + z * se}


def out_of_selection_sharpes(fold_sharpes: np.ndarray) -> np.ndarray | None:
    """The search's winner's curse, measured: for each traded fold j, the trial that scores best
    on the OTHER folds, and its Sharpe on fold j (``fold_sharpes``: trials x folds, completed
    trials). Their mean estimates what selecting by this study's score earns on data the selection
    did not see (a leave-one-fold-out version of Bailey et al.'s CSCV). None under two folds."""
    f = np.asarray(fold_sharpes, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] < 2 or f.shape[0] == 0:
        return None
    out = []
    for j in range(f.shape[1]):
        others = np.delete(f, j, axis=1).mean(axis=1)
        out.append(f[int(np.argmax(others)), j])
    return np.array(out)


def prediction_interval(folds: list[dict], horizon_bars: int, center: float | None = None,
                        confidence: float = 0.95) -> dict:
    """Where the selected configuration's per-bar Sharpe on an unseen period of ``horizon_bars``
    bars (the holdout) should land, from its inner folds - a random-effects prediction interval
    (Higgins, Thompson & Spiegelhalter 2009): the Sharpe differs between periods by more than
    sampling error (regimes), so the fold-to-fold variance beyond sampling error (tau^2) is added to
    the centre's error and to the new period's own sampling error, with Student-t quantiles on K-1
    degrees of freedom. Two traded folds make it very wide; that is what two folds can say."""
    from scipy.stats import t as student_t

    s = np.array([f["sharpe"] for f in folds], dtype=np.float64)
    se2 = np.array([f["sharpe_se"] for f in folds], dtype=np.float64) ** 2
    bars = np.array([f["bars"] for f in folds], dtype=np.float64)
    k = len(s)
    mid = float(np.mean(s)) if center is None else float(center)
    tau2 = max(0.0, float(np.var(s, ddof=1)) - float(np.mean(se2))) if k > 1 else 0.0
    new2 = float(np.mean(se2 * bars)) / max(horizon_bars, 1)  # se^2 scales as 1 / bars
    q = float(student_t.ppf(0.5 + confidence / 2, k - 1)) if k > 1 else 1.959963984540054
    half = q * math.sqrt(tau2 + float(np.sum(se2)) / k**2 + new2)
    return {"center": mid, "low": mid - half, "high": mid + half, "tau2": tau2, "quantile": q, "folds": k,
            "horizon_bars": int(horizon_bars), "confidence": confidence}


# -- the study -------------------------------------------------------------------------------
def storage_url(paths: StatePaths) -> str:
    paths.tune_db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{paths.tune_db}"


def open_study(name: str, paths: StatePaths, tune: TuneParams, worker: int = 0):
    """Create or load the study ``name`` in the state directory's RDB storage (resumable; shared by
    every worker process). Each worker seeds its TPE sampler differently so they do not repeat
    each other's proposals."""
    import optuna

    storage = optuna.storages.RDBStorage(storage_url(paths), engine_kwargs={"connect_args": {"timeout": 60}})
    seed = None if tune.sampler_seed is None else tune.sampler_seed + worker
    return optuna.create_study(study_name=name, storage=storage, direction=DIRECTION, load_if_exists=True,
                               sampler=optuna.samplers.TPESampler(seed=seed),
                               pruner=optuna.pruners.MedianPruner(n_startup_trials=tune.pruner_startup_trials,
                                                                  n_warmup_steps=tune.pruner_warmup_folds))


def bind_study_to_data(study, key: str) -> None:
    """A study's trials are comparable only on the same data: the first run records the data's
    fingerprint (``TuneData.key``); a resumption on other data (another period, universe, or newer
    candles) is refused in one line instead of mixing Sharpes of different folds into one N."""
    recorded = study.user_attrs.get("data_key")
    if recorded is None:
        study.set_user_attr("data_key", key)
    elif recorded != key:
        raise UserError(f"study {study.study_name!r} was searched on other data (fingerprint {recorded}, now {key}: "
                        f"another period, universe or newer candles); start a new --study")


def trial_sharpe(trial) -> float | None:
    """A finished trial's per-bar Sharpe: its value when complete, the mean of the folds it
    reported when pruned (what it had shown when it was stopped), None otherwise."""
    import optuna

    if trial.state == optuna.trial.TrialState.COMPLETE:
        return float(trial.value)
    if trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
        return float(np.mean(list(trial.intermediate_values.values())))
    return None


def study_statistics(study) -> dict:
    """N (completed + pruned, every run and worker of the study) and the sample variance of their
    per-bar Sharpes (None below two), for the deflated Sharpe."""
    import optuna

    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    completed = sum(t.state == states.COMPLETE for t in trials)
    pruned = sum(t.state == states.PRUNED for t in trials)
    sharpes = [s for s in (trial_sharpe(t) for t in trials) if s is not None and math.isfinite(s)]
    return {"study": study.study_name, "n_trials": completed + pruned, "completed": completed, "pruned": pruned,
            "failed": sum(t.state == states.FAIL for t in trials),
            "sharpe_variance": float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else None,
            "sharpes": sharpes}


def make_objective(params: Params, data: TuneData, tune: TuneParams, on_trial=None):
    """The Optuna objective: sample -> trial params -> inner folds -> mean per-bar Sharpe.

    ``on_trial(trial, values, folds, tp)`` is called after the folds (MLflow child run, ledger),
    also for a pruned trial (before the prune is raised)."""
    import optuna

    n_folds = tune.folds or params.train.folds

    def objective(trial) -> float:
        values = {dim.path: suggest(trial, dim) for dim in tune.space}
        try:
            tp = trial_params(params, values)
        except ConfigError as exc:  # e.g. take-profit under a quarter of the stop: not a strategy
            trial.set_user_attr("refused", str(exc))
            return float("nan")  # Optuna records a FAIL: nothing was evaluated, N does not count it
        done: list[dict] = []
        for fold in iter_folds(tp, data, n_folds):
            done.append(fold)
            trial.report(fold["sharpe"], fold["fold"])
            if trial.should_prune():
                trial.set_user_attr("folds", done)
                if on_trial is not None:
                    on_trial(trial, values, done, tp)
                raise optuna.TrialPruned(f"fold {fold['fold']}: Sharpe {fold['sharpe']:.4f} below the median")
        trial.set_user_attr("folds", done)
        if on_trial is not None:
            on_trial(trial, values, done, tp)
        return float(np.mean([f["sharpe"] for f in done]))

    return objective
