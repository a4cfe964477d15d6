"""Train the ensemble and measure it honestly (pure: frames in, ``TrainResult`` out, no I/O).

Order of operations, and why:

1. join features and labels on (symbol, timestamp); rows without a label (the last
   ``horizon_bars`` of each symbol) drop out; ``up`` / ``fwd_return`` become the configured
   target's (``labels.target``: the forward return, or the executor's own trade, triple barrier);
   every purge below spans what that label reads (``features.labels.label_reach_bars``);
2. **holdout split** - the last ``holdout_fraction`` of the bars is never seen by any
   fit below (purged + embargoed, see ``training.splits``);
3. **walk-forward CV** on the pre-holdout part: every member is fitted per fold and
   predicts the fold's test block -> out-of-fold (OOF) probabilities, metrics per fold
   and pooled;
4. ensemble weights and the return map are fitted on the OOF predictions only;
5. final members are refitted on all pre-holdout rows;
6. the holdout is predicted once, by each member and by the ensemble -> ``oos`` metrics.

Members (``params.train.members``): XGBoost and LightGBM on the tabular features; N-HiTS and
PatchTST (``training.deep``) on each row's window of the last ``train.sequence_length`` 1-bar log
returns (``features.sequence``), so every row - in training, backtest and serving - carries its
own model input and nothing is read from beyond it.

The ensemble's ``cv`` numbers use weights fitted on those same OOF rows (two numbers
fitted on thousands of rows: mildly optimistic); its ``oos`` numbers are clean.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from features.compute import feature_columns
from features.labels import label_end_times, label_reach_bars, training_target
from qt.config import LabelParams, Params
from features.sequence import SOURCE_COLUMN, ReturnWindows, all_window_columns, window_columns
from qt.errors import ConfigError, DataError
from data.lake import content_sha256
from training.ensemble import EnsembleModel, fit_convex_weights, fit_return_map
from training.inputs import FEATURE_ROW, ModelInputs, fit_on_rows
from training.metrics import compute_classification_metrics
from training.models import SEQUENCE_MEMBERS, feature_importance, predict_up_probability
from training.splits import holdout_split, walk_forward_folds

log = logging.getLogger(__name__)
KEYS = ["symbol", "timestamp"]
# the holdout's realised label travels with the prediction (calibration plot, model card)
PREDICTION_COLUMNS = ["symbol", "timestamp", "prob_up", "expected_return", "fwd_return", "up"]


@dataclass(frozen=True)
class TrainResult:
    """Everything the registry and the evaluate stage need from one training run."""

    ensemble: EnsembleModel
    models: list[dict]  # [{name, oos: {auc, log_loss, accuracy, ic, rows}, cv: {..., folds: [...]}}]
    holdout_predictions: pd.DataFrame  # symbol, timestamp, prob_up, expected_return
    holdout_labels: pd.DataFrame  # symbol, timestamp, fwd_return, up (same rows as the predictions)
    feature_importance: pd.DataFrame  # feature, one column per member, ensemble (weight-averaged)
    train_range: tuple[pd.Timestamp, pd.Timestamp]  # first/last feature bar used for fitting
    holdout_range: tuple[pd.Timestamp, pd.Timestamp]  # first/last feature bar of the holdout
    data_sha256: str  # content hash of the joined features+labels the run saw
    input_example: pd.DataFrame = field(default_factory=pd.DataFrame)  # 5 training rows of feature columns
    rows: dict = field(default_factory=dict)  # {"train": n, "holdout": n, "oof": n, "purged": n}
    trained_at: str = ""

    def metrics_by_name(self) -> dict[str, dict]:
        return {m["name"]: m for m in self.models}


def join_features_labels(features_df: pd.DataFrame, labels_df: pd.DataFrame, columns: list[str],
                         labels: LabelParams | None = None) -> pd.DataFrame:
    """Inner join on (symbol, timestamp), sorted by time then symbol; DataError if nothing matches.

    ``up`` / ``fwd_return`` are the target's of ``labels`` (``features.labels.training_target``;
    None: the forward return). A row is kept only when every one of ``columns`` is defined: a
    feature family still warming up (NaN) drops its rows for the models that read it only."""
    if labels is not None:
        labels_df = training_target(labels_df, labels)
    missing = [c for c in columns if c not in features_df.columns]
    if missing:
        raise DataError(f"features lack columns {missing} declared by params.features; "
                        f"re-run the features stage with the current params")
    for need in ("fwd_return", "up"):
        if need not in labels_df.columns:
            raise DataError(f"labels lack column {need!r}; re-run the features stage")
    carried = ["label_end"] if "label_end" in labels_df.columns else []
    data = features_df[KEYS + columns].merge(labels_df[KEYS + ["fwd_return", "up"] + carried], on=KEYS, how="inner")
    data = data.dropna(subset=columns + ["fwd_return", "up"])
    if data.empty:
        raise DataError("no row has both features and a label; check that features and labels "
                        "were built from the same candles")
    return data.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)


def member_columns(params: Params) -> tuple[list[str], dict[str, list[str]]]:
    """(all model input columns, the columns each configured member reads).

    Tree members read the tabular features; sequence members read the ``seq_ret_*`` return
    window of ``params.train.sequence_length`` bars (built by ``features.sequence``), N-HiTS also
    the windows of the ``train.sequence_exog`` feature columns."""
    tabular = feature_columns(params.features)
    members = list(params.train.members)
    if not any(name in SEQUENCE_MEMBERS for name in members):
        return tabular, {name: tabular for name in members}
    if SOURCE_COLUMN not in tabular:
        raise ConfigError(f"train.members {members} include sequence models, which read the 1-bar log return "
                          f"{SOURCE_COLUMN!r}: add 1 to features.log_return or drop nhits/patchtst from train.members")
    from training.deep import EXOG_KINDS

    length, exog = params.train.sequence_length, sequence_exog_of(params)
    if len(set(exog)) != len(exog):
        raise ConfigError(f"train.sequence_exog {exog} names a column twice; list each once")
    unknown = [c for c in exog if c not in tabular]
    if unknown:
        raise ConfigError(f"train.sequence_exog {unknown} are not columns of the declared feature set; "
                          f"choose from {tabular}")
    by_member = {name: (all_window_columns(length, exog) if name in EXOG_KINDS else window_columns(length))
                 if name in SEQUENCE_MEMBERS else tabular for name in members}
    return tabular + all_window_columns(length, exog), by_member


def sequence_exog_of(params: Params) -> list[str]:
    """The feature columns whose windows the model input carries: ``train.sequence_exog`` when a
    member that reads exogenous inputs (N-HiTS) is configured, else none."""
    from training.deep import EXOG_KINDS

    return list(params.train.sequence_exog) if any(n in EXOG_KINDS for n in params.train.members) else []


def sequence_length_of(params: Params) -> int:
    """Bars of return history the model input needs beyond the feature warm-up (0: none)."""
    return params.train.sequence_length if any(n in SEQUENCE_MEMBERS for n in params.train.members) else 0


def train_models(features_df: pd.DataFrame, labels_df: pd.DataFrame, params: Params, cluster=None) -> TrainResult:
    """Walk-forward OOF -> ensemble -> final fit -> one holdout prediction. Deterministic per seed.

    The sequence members' windows are never columns of the training frame: ``training.inputs``
    builds them for the rows a fit or a prediction needs, a batch at a time (the same values).
    ``cluster``: a ``distributed.Client`` - the fold fits become Dask tasks and the final tree fits
    ``xgboost.dask`` / ``lightgbm.dask`` ones (``training.cluster_fit``); None: all in this process."""
    tp = params.train
    reach = label_reach_bars(params.labels, params.risk)  # bars the training label reads after t
    columns, by_member = member_columns(params)
    tabular = feature_columns(params.features)
    seq_len = sequence_length_of(params)
    # each label's end time, counted in the symbol's own rows (a gap pushes it later): the purge
    # is by time, so no training label reaches into a test period (``training.splits``)
    labels_df = labels_df.assign(label_end=label_end_times(labels_df, features_df, reach))
    windows = None
    keep = tabular
    if seq_len:
        windows = ReturnWindows(features_df, seq_len, exog=sequence_exog_of(params))
        # the rows a frame with the window columns keeps after dropping NaN inputs, each with its
        # position in features_df (its windows); no window column is made here
        complete = windows.complete()
        features_df = features_df[complete].assign(**{FEATURE_ROW: np.flatnonzero(complete)})
        keep = tabular + [FEATURE_ROW]
    data = join_features_labels(features_df, labels_df, keep, params.labels)
    del features_df
    data_sha256 = content_sha256(data.drop(columns=["label_end", FEATURE_ROW], errors="ignore"))

    train_mask, holdout_mask = holdout_split(data["timestamp"], tp.holdout_fraction, tp.embargo_bars, reach,
                                             label_end=data["label_end"])
    train = data[train_mask].reset_index(drop=True)
    holdout = data[holdout_mask].reset_index(drop=True)
    n_data = len(data)
    del data
    y_train = train["up"].to_numpy(dtype=np.int64)
    r_train = train["fwd_return"].to_numpy(dtype=np.float64)
    if len(np.unique(y_train)) < 2:
        raise DataError("training labels are all one class; the market slice is too short or degenerate")
    inputs, holdout_inputs = ModelInputs(train, tabular, columns, windows), ModelInputs(holdout, tabular, columns, windows)
    # what a sequence member's network trains on (each symbol's series); trees read ``inputs``
    series = train[list(dict.fromkeys(["symbol", "timestamp", SOURCE_COLUMN, *sequence_exog_of(params)]))
                   if seq_len else ["symbol", "timestamp"]]

    folds = walk_forward_folds(train["timestamp"], tp.folds, reach, tp.embargo_bars, label_end=train["label_end"])
    names = list(tp.members)
    oof = np.full((len(train), len(names)), np.nan)
    fold_of_row = np.full(len(train), -1)
    member_seconds = {name: 0.0 for name in names}
    on_cluster = None
    if cluster is not None:
        from training.cluster_fit import ClusterTraining

        t0 = time.perf_counter()
        on_cluster = ClusterTraining(cluster, series, y_train, params, inputs, by_member)
        for (f, j), probs in on_cluster.fold_predictions(names, folds).items():
            oof[folds[f][1], j] = probs
            fold_of_row[folds[f][1]] = f
        log.info("%d fold fits on the cluster in %.1f s", len(folds) * len(names), time.perf_counter() - t0)
    for f, (tr, te) in enumerate(folds if cluster is None else []):
        fold_of_row[te] = f
        for j, name in enumerate(names):
            t0 = time.perf_counter()
            member = fit_on_rows(name, series, tr, y_train, params, inputs, by_member[name])
            oof[te, j] = inputs.predict(lambda x, m=member: predict_up_probability(m, x), te, by_member[name])
            member_seconds[name] += time.perf_counter() - t0
            log.info("fold %d/%d: %s fitted and predicted in %.1f s", f + 1, len(folds), name,
                     time.perf_counter() - t0)
    has_oof = fold_of_row >= 0

    weights = fit_convex_weights(oof[has_oof], y_train[has_oof])
    ens_oof = oof[has_oof] @ weights
    intercept, slope = fit_return_map(ens_oof, r_train[has_oof])

    finals = {}
    if on_cluster is not None:
        t0 = time.perf_counter()
        finals = on_cluster.final_members(names)
        log.info("final fits on the cluster in %.1f s", time.perf_counter() - t0)
    for name in (names if cluster is None else []):
        t0 = time.perf_counter()
        finals[name] = fit_on_rows(name, series, np.arange(len(train)), y_train, params, inputs, by_member[name])
        member_seconds[name] += time.perf_counter() - t0
        log.info("final fit: %s in %.1f s", name, time.perf_counter() - t0)
    ensemble = EnsembleModel(columns, finals, dict(zip(names, weights)), intercept, slope,
                             member_columns=by_member, sequence_length=seq_len,
                             sequence_exog=sequence_exog_of(params))

    member_holdout = np.empty((len(holdout), len(names)))
    pred_values = np.empty((len(holdout), 2))
    for batch in holdout_inputs.batches():
        x = holdout_inputs.matrix(batch)
        member_holdout[batch] = ensemble.member_probability_matrix(x)
        pred_values[batch] = ensemble.predict_matrix(x)
    pred = pd.DataFrame({"prob_up": pred_values[:, 0], "expected_return": pred_values[:, 1]}, index=holdout.index)
    y_hold = holdout["up"].to_numpy(dtype=np.int64)
    r_hold = holdout["fwd_return"].to_numpy(dtype=np.float64)

    models = []
    oof_frame = pd.DataFrame(oof[has_oof], columns=names)
    oof_frame["ensemble"] = ens_oof
    cv_up, cv_ret, cv_fold = y_train[has_oof], r_train[has_oof], fold_of_row[has_oof]
    for name in names + ["ensemble"]:
        if name == "ensemble":
            hold_p, hold_er = pred["prob_up"].to_numpy(), pred["expected_return"].to_numpy()
            oof_er = intercept + slope * (ens_oof - 0.5)
        else:  # a member's IC uses prob_up itself: Spearman is invariant to increasing maps
            hold_p = hold_er = member_holdout[:, names.index(name)]
            oof_er = oof_frame[name].to_numpy()
        oof_p = oof_frame[name].to_numpy()
        cv = compute_classification_metrics(cv_up, oof_p, cv_ret, oof_er)
        cv["folds"] = [
            {"fold": f, **compute_classification_metrics(cv_up[cv_fold == f], oof_p[cv_fold == f],
                                                          cv_ret[cv_fold == f], oof_er[cv_fold == f])}
            for f in range(len(folds))
        ]
        models.append({"name": name, "oos": compute_classification_metrics(y_hold, hold_p, r_hold, hold_er),
                       "cv": cv,
                       # a member's own seconds; None on a cluster, where its fits overlap others'
                       "fit_seconds": None if cluster is not None else round(member_seconds.get(name, 0.0), 2)})

    tabular = feature_columns(params.features)
    importance = pd.DataFrame({"feature": tabular})
    for name in names:
        importance[name] = feature_importance(finals[name], len(tabular))
    # weight-averaged over the members that have per-feature importances, renormalised
    has_imp = [(n, w) for n, w in zip(names, weights) if not importance[n].isna().all()]
    total = sum(w for _, w in has_imp)
    importance["ensemble"] = (sum(importance[n] * w for n, w in has_imp) / total) if total > 0 else np.nan
    importance = importance.sort_values("ensemble", ascending=False).reset_index(drop=True)

    predictions = pd.concat([holdout[KEYS], pred, holdout[["fwd_return", "up"]]], axis=1)[PREDICTION_COLUMNS]
    return TrainResult(
        ensemble=ensemble,
        models=models,
        holdout_predictions=predictions,
        holdout_labels=holdout[KEYS + ["fwd_return", "up"]].copy(),
        feature_importance=importance,
        train_range=(train["timestamp"].min(), train["timestamp"].max()),
        holdout_range=(holdout["timestamp"].min(), holdout["timestamp"].max()),
        data_sha256=data_sha256,  # of the joined rows the run saw: keys, tabular features, labels
        input_example=pd.DataFrame(inputs.matrix(np.arange(min(5, len(train)))), columns=columns),
        rows={"train": int(len(train)), "holdout": int(len(holdout)), "oof": int(has_oof.sum()),
              "purged": int(n_data - len(train) - len(holdout))},
        trained_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )

