"""Train, evaluate and promote as stages over the state directory.

Each stage is ``stage(params, paths) -> dict`` (its part of the run summary) and hands
over to the next through files, so each can run in a fresh process (``dvc repro``, the
CLI, or the Prefect flow). Each stage writes only into its own folder, because DVC treats
a stage's folder as its output and would otherwise see the train output change when the
evaluate stage runs:

* ``paths.models``: ``train.json`` (run id, model URI, ranges, hashes, per-model metrics)
  and ``holdout_predictions.parquet`` (``symbol, timestamp, prob_up, expected_return``)
* ``paths.evaluation``: ``evaluation.json``, ``holdout_returns.parquet``, ``holdout_equity.parquet``
* the promote decision, with every gate's numbers, is the stage's return value (the
  pipeline records it as ``reports/promote.json``) and tags on the model version
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd

from qt.atomic import jsonable, replace_atomic, tmp_path, write_json_atomic
from qt.config import Params
from qt.errors import DataError
from data.lake import read_candles
from qt.paths import StatePaths
from qt.timeframes import timeframe_ms
from training.baselines import RULE_FEATURES, baseline_names

log = logging.getLogger("qt.training")

TRAIN_JSON = "train.json"
PREDICTIONS = "holdout_predictions.parquet"
IMPORTANCE_CSV = "feature_importance.csv"  # feature x member importances of the trained ensemble
EVALUATION_JSON = "evaluation.json"
RETURNS = "holdout_returns.parquet"
EQUITY = "holdout_equity.parquet"


def _registry(params: Params, paths: StatePaths):
    from training.registry import ModelRegistry

    return ModelRegistry(paths.tracking_uri, params.train.model_name, artifact_location=paths.mlflow_artifacts)


def _write_json(obj: dict, path: Path) -> None:
    write_json_atomic(path, jsonable(obj), indent=2, default=str, allow_nan=False)


def _read_handover(paths: StatePaths, name: str, made_by: str) -> dict:
    path = (paths.evaluation if made_by == "evaluate" else paths.models) / name
    if not path.is_file():
        raise DataError(f"{path} missing; run the {made_by} stage first")
    return json.loads(path.read_text())


def _holdout_window(info: dict) -> tuple[pd.Timestamp, pd.Timestamp]:
    return pd.Timestamp(info["holdout_start"]), pd.Timestamp(info["holdout_end"])


def _read_candles_with_history(params: Params, paths: StatePaths, start: pd.Timestamp, history_bars: int):
    """Candles from ``history_bars`` before ``start`` to the end of the lake (indicators need the past)."""
    lead = pd.Timedelta(milliseconds=timeframe_ms(params.data.timeframe) * (history_bars + 1))
    from data.sources import lake_root

    return read_candles(lake_root(params, paths), params.data.symbols, params.data.timeframe, start=start - lead)


def _validated_data_sha256(paths: StatePaths) -> str:
    """Content hash of the candles the last successful validation passed (what features were built from)."""
    report = _read_handover_file(paths.reports / "validation.json", "validate")
    return report["data_sha256"]


def _read_handover_file(path: Path, made_by: str) -> dict:
    if not path.is_file():
        raise DataError(f"{path} is missing; run `qt {made_by}` first")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
def train_stage(params: Params, paths: StatePaths) -> dict:
    """Read features + labels, train, log the MLflow run, write ``train.json`` + holdout predictions."""
    from features.compute import feature_set_hash
    from features.labels import label_reach_bars
    from features.store import read_features, read_labels
    from training.report import render_model_card
    from training.train import train_models
    from training.trials import model_digest

    paths.ensure()
    feats = read_features(paths.features, params.data.symbols)
    labels = read_labels(paths.features, params.data.symbols)
    t0 = time.perf_counter()
    if params.runner.task_runner == "dask":  # the fits on the cluster of runner: (training.cluster_fit)
        from qt.cluster import dask_client

        with dask_client(params.runner) as client:
            result = train_models(feats, labels, params, cluster=client)
    else:
        result = train_models(feats, labels, params)
    fit_seconds = time.perf_counter() - t0
    registry = _registry(params, paths)
    fs_hash = feature_set_hash(params.features)
    raw_sha = _validated_data_sha256(paths)
    logged = registry.log_training_run(result, params, feature_set_hash=fs_hash, symbols=params.data.symbols,
                                       raw_data_sha256=raw_sha)
    ens = result.ensemble
    info = {
        "run_id": logged["run_id"],
        "model_uri": logged["model_uri"],
        "model_name": params.train.model_name,
        "timeframe": params.data.timeframe,
        "symbols": list(params.data.symbols),
        "horizon_bars": params.labels.horizon_bars,
        "label_target": params.labels.target,
        "label_reach_bars": label_reach_bars(params.labels, params.risk),
        "train_start": result.train_range[0].isoformat(),
        "train_end": result.train_range[1].isoformat(),
        "holdout_start": result.holdout_range[0].isoformat(),
        "holdout_end": result.holdout_range[1].isoformat(),
        "feature_set_hash": fs_hash,
        "data_sha256": raw_sha,
        "training_frame_sha256": result.data_sha256,
        "config_digest": params.digest(),
        "model_digest": model_digest(params),
        "trained_at": result.trained_at,
        "rows": result.rows,
        "members": list(ens.members),
        "sequence_length": ens.sequence_length,
        "sequence_exog": ens.sequence_exog,
        "weights": ens.weights,
        "return_intercept": ens.return_intercept,
        "return_slope": ens.return_slope,
        "models": result.models,
        "seconds": round(time.perf_counter() - t0, 2),
        "fit_seconds": round(fit_seconds, 2),
    }
    registry.log_model_card(info["run_id"], render_model_card(info))
    paths.models.mkdir(parents=True, exist_ok=True)
    pred_path = paths.models / PREDICTIONS
    tmp = tmp_path(pred_path)
    result.holdout_predictions.to_parquet(tmp, index=False)
    replace_atomic(tmp, pred_path)
    importance_path = paths.models / IMPORTANCE_CSV
    tmp = tmp_path(importance_path)
    result.feature_importance.to_csv(tmp, index=False)
    replace_atomic(tmp, importance_path)
    _write_json(info, paths.models / TRAIN_JSON)
    log.info("trained run %s: holdout auc %.4f (ensemble)", info["run_id"],
             result.metrics_by_name()["ensemble"]["oos"]["auc"])
    return jsonable({"models": result.models,
            "train": {k: info[k] for k in ("run_id", "train_start", "train_end", "holdout_start", "holdout_end",
                                           "rows", "weights", "seconds", "fit_seconds")}})


# ---------------------------------------------------------------------------------------------
def evaluate_stage(params: Params, paths: StatePaths) -> dict:
    """Holdout backtests of the strategy and the baselines through ``executor.backtest``
    (perpetuals pay funding from the lake), plus the artefacts a person checks before
    approving: equity/drawdown, feature importance and calibration plots and the model card,
    all logged to the training run."""
    from features.atr import atr_only_params
    from features.compute import warmup_bars
    from training.backtest_model import evaluate_predictions
    from training.report import plot_equity_and_drawdown, render_model_card

    info = _read_handover(paths, TRAIN_JSON, "train")
    preds = pd.read_parquet(paths.models / PREDICTIONS)
    h_start, h_end = _holdout_window(info)
    # warm-ups of the RSI/MACD rule and of the signals' ATR (training.backtest_model.strategy_signals)
    lead = max(warmup_bars(RULE_FEATURES), warmup_bars(atr_only_params(params.risk.atr_period,
                                                                       params.features.warmup_memories)))
    history = _read_candles_with_history(params, paths, h_start, lead)
    funding = _holdout_funding(params, paths, h_start)
    # the same comparison `qt backtest` prints for any registered model
    evaluation, results = evaluate_predictions(history, preds, params, model_version=f"run-{info['run_id'][:8]}",
                                               funding=funding)
    returns = pd.DataFrame({name: res.bar_returns for name, res in results.items()})
    equity = pd.DataFrame({name: res.equity for name, res in results.items()})
    paths.evaluation.mkdir(parents=True, exist_ok=True)
    returns.to_parquet(paths.evaluation / RETURNS)
    equity.to_parquet(paths.evaluation / EQUITY)
    _write_json(evaluation, paths.evaluation / EVALUATION_JSON)
    _record_trial(params, paths, _challenger_identity(info), "evaluate", returns["strategy"], info["run_id"])

    paths.reports.mkdir(parents=True, exist_ok=True)
    plot = plot_equity_and_drawdown({n: r.equity for n, r in results.items()}, paths.reports / "holdout_equity.png",
                                    f"Holdout {h_start:%Y-%m-%d} .. {h_end:%Y-%m-%d}, net of costs "
                                    f"(run {info['run_id'][:8]})")
    extra = _review_plots(preds, paths)
    metrics_only = {n: {k: v for k, v in m.items() if k not in ("start", "end")} for n, m in evaluation.items()}
    registry = _registry(params, paths)
    registry.log_evaluation(info["run_id"], metrics_only, plot,
                            render_model_card(info, metrics_only, figures=[p.name for p in [plot, *extra]]))
    if extra:
        registry.log_artifacts(info["run_id"], extra)
    return jsonable({"evaluation": evaluation})


def model_feature_inputs(params: Params, paths: StatePaths, feature_params) -> dict:
    """``reference`` / ``other_venue`` / ``alt`` for ``model_predictions`` of a model whose logged feature
    params are ``feature_params``: the reference candles and Bybit's series read from the lakes the
    features stage and the service read (``features.materialise``), so the champion is re-judged
    on the input it is served. Empty when its families need neither."""
    from data.sources import lake_root, venue_lake_root
    from features.alt_features import uses_alt
    from features.materialise import read_alt_inputs, read_feature_inputs, read_other_venue
    from features.multi_input import uses_other_venue, uses_reference

    if not (uses_reference(feature_params) or uses_other_venue(feature_params) or uses_alt(feature_params)):
        return {}
    as_model = params.model_copy(update={"features": feature_params})
    symbols, timeframe = list(params.data.symbols), params.data.timeframe
    _, reference = read_feature_inputs(lake_root(params, paths), symbols, timeframe, as_model)
    return {"reference": reference,
            "other_venue": read_other_venue(venue_lake_root(params, paths, "bybit"), symbols, timeframe, as_model),
            "alt": read_alt_inputs(lake_root(params, paths), feature_params)}


def _holdout_funding(params: Params, paths: StatePaths, h_start: pd.Timestamp) -> pd.DataFrame | None:
    """Funding of the perp symbols from one funding interval before the holdout on (None
    without perps). A perp with nothing stored makes the backtest refuse it, saying what to collect."""
    from data.lake import read_lake_funding
    from executor.funding import MAX_FUNDING_INTERVAL
    from data.sources import lake_root

    return read_lake_funding(lake_root(params, paths), params.data.symbols, start=h_start - MAX_FUNDING_INTERVAL)


def _review_plots(preds: pd.DataFrame, paths: StatePaths) -> list[Path]:
    """Feature-importance and calibration PNGs in ``paths.reports``; each is skipped with a
    log line when its input is absent (no importance table / no ``up`` label column /
    only sequence members, which have no per-feature importance)."""
    from training.report import importance_columns, plot_calibration, plot_feature_importance

    out = []
    imp_path = paths.models / IMPORTANCE_CSV
    if not imp_path.is_file():
        log.info("no %s; feature-importance plot skipped", imp_path)
    else:
        importance = pd.read_csv(imp_path)
        if importance_columns(importance):
            out.append(plot_feature_importance(importance, paths.reports / "feature_importance.png"))
        else:
            log.info("no member has per-feature importances; feature-importance plot skipped")
    if "up" not in preds.columns:
        log.info("holdout predictions have no 'up' label column; calibration plot skipped")
    else:
        out.append(plot_calibration(preds["prob_up"], preds["up"], paths.reports / "calibration.png"))
    return out


def _number(v):
    return int(v) if isinstance(v, (int,)) and not isinstance(v, bool) else float(v)


# ---------------------------------------------------------------------------------------------
def promote_stage(params: Params, paths: StatePaths, search: dict | None = None) -> dict:
    """Register (alias challenger), run the gates (vs baselines and the re-evaluated champion,
    drawdown limit, the features stage's point-in-time record), tag the version with every gate.

    ``search``: the statistics of the ``qt tune`` study that selected this configuration
    (``training.tune.study_statistics``): the deflated Sharpe then uses its N (completed + pruned
    trials) and the variance of their Sharpes; without it, the ledger's N and the null variance.

    ``gates.mode`` auto: move ``champion`` when all pass (tag ``approval=auto``; the replaced
    champion is recorded for rollback). manual: never move it; a version that passes stays
    challenger with ``approval=pending`` until ``qt models approve VERSION --by NAME``.
    """
    from executor.backtest import bars_per_year
    from training.gates import evaluate_gates
    from training.report import render_model_card
    from training.trials import TrialLedger, describe

    info = _read_handover(paths, TRAIN_JSON, "train")
    evaluation = _read_handover(paths, EVALUATION_JSON, "evaluate")
    returns = pd.read_parquet(paths.evaluation / RETURNS)
    registry = _registry(params, paths)

    previous = registry.champion_version()
    version = registry.register_version(info["run_id"], model_uri=info.get("model_uri"))
    champion_returns, champion_eval = None, None
    if previous is not None and previous != version:
        champion_eval, champion_returns = _reevaluate_champion(registry, previous, params, paths, info, returns)

    _record_trial(params, paths, _challenger_identity(info), "promote", returns["strategy"], info["run_id"])
    trials = TrialLedger(paths.trials_ledger).summary()  # after the champion's re-evaluation: it is a trial too
    n_trials, variance = trials["n_trials"], None
    if search is not None:
        n_trials, variance = search["n_trials"], search.get("sharpe_variance")
    log.info("%s", describe(trials))
    report = evaluate_gates(
        returns["strategy"],
        _gate_baselines(params, evaluation, returns),
        champion_returns, evaluation["strategy"], params.gates, n_trials,
        periods_per_year=bars_per_year(timeframe_ms(params.data.timeframe)), seed=params.train.seed,
        trial_sharpe_variance=variance, point_in_time=_point_in_time_record(paths), feature_set_hash=info.get("feature_set_hash"),
        champion_refusal=(champion_eval or {}).get("refused"))
    registry.set_gate_tags(version, report)
    manual = params.gates.mode == "manual"
    promoted = report.passed and not manual
    approval = None
    if promoted:
        approval = "auto"
        registry.set_champion(version, {"approval": approval})
    elif report.passed:
        approval = "pending"
        registry.set_version_tags(version, {"approval": approval})
    reasons = report.reasons() if not report.passed else []
    summary = {
        "model_name": params.train.model_name,
        "version": version,
        "alias": "champion" if promoted else "challenger",
        "promoted": promoted,
        "mode": params.gates.mode,
        "approval": approval,
        "next_step": f"qt models approve {version} --by NAME" if approval == "pending" else None,
        "previous_champion": previous,
        "champion": version if promoted else previous,
        "n_trials": n_trials,
        "trials": trials,
        "deflated_sharpe_inputs": {"n_trials": n_trials, "trial_sharpe_variance": variance,
                                   "source": _dsr_source(search, variance)},
        "gates": report.gates,
        "reasons": reasons,
        "champion_evaluation": champion_eval,
    }
    registry.log_promotion(info["run_id"], summary,
                           render_model_card(info, {n: {k: v for k, v in m.items() if k not in ("start", "end")}
                                                    for n, m in evaluation.items()}, summary))
    if approval == "pending":  # log_promotion's "rejected" would misstate a version awaiting approval
        registry.client.set_tag(info["run_id"], "stage", "awaiting_approval")
    if promoted:
        log.info("version %s promoted to champion (was %s)", version, previous)
    elif report.passed:
        log.warning("version %s passed every gate; gates.mode is manual, so champion stays %s until "
                    "`qt models approve %s --by NAME`", version, previous, version)
    else:
        log.warning("version %s NOT promoted; champion stays %s: %s", version, previous, "; ".join(reasons))
    from qt.notify import notify_promotion

    notify_promotion(params.notify, jsonable(summary))  # best effort; nothing when no channel is set
    return jsonable({"registry": summary})


def _dsr_source(search: dict | None, variance: float | None) -> str:
    """Where the deflated Sharpe's N and variance came from, for promote.json."""
    if search is None:
        return "trial ledger; null variance 1/(T-1)"
    if variance is None:
        return f"tune study {search['study']}; fewer than two trial Sharpes, so the null variance 1/(T-1)"
    return f"tune study {search['study']}: completed + pruned trials and the variance of their Sharpes"


def _gate_baselines(params: Params, evaluation: dict, returns: pd.DataFrame) -> dict:
    """The baselines the gates compare the challenger with (``baseline_names``: with
    ``risk.allow_short`` the short-on-sell RSI/MACD rule too), from the evaluate stage's output."""
    names = baseline_names(params)
    missing = [n for n in names if n not in evaluation or n not in returns.columns]
    if missing:
        raise DataError(f"the evaluation lacks the baselines {missing} (it was made with other risk params, "
                        f"e.g. risk.allow_short); run the evaluate stage again")
    return {name: {"bar_returns": returns[name], "metrics": evaluation[name]} for name in names}


def _challenger_identity(info: dict) -> str:
    from training.trials import model_identity

    return model_identity(info.get("model_digest"), info.get("training_frame_sha256"), f"run:{info['run_id']}")


def _record_trial(params: Params, paths: StatePaths, model_id: str, origin: str, bar_returns: pd.Series,
                  run_id: str = "") -> None:
    """One holdout scoring into the trial ledger (``training.trials``): what the deflated Sharpe counts."""
    from training.gates import compute_sharpe
    from training.trials import Trial, TrialLedger, decision_digest

    r = pd.Series(bar_returns, dtype="float64").fillna(0.0).to_numpy()
    TrialLedger(paths.trials_ledger).record(Trial(model_id, decision_digest(params), origin, compute_sharpe(r),
                                                  len(r), params.train.model_name, run_id))


def _point_in_time_record(paths: StatePaths) -> dict | None:
    """The features stage's record (``features`` part of reports/features.json), None if absent."""
    path = paths.reports / "features.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("features")


def _reevaluate_champion(registry, version: str, params: Params, paths: StatePaths, info: dict,
                         challenger_returns: pd.DataFrame):
    """The champion's backtest on the challenger's holdout bars it was never fitted on
    (``training.champion_window``), on the input the champion itself logged (feature params,
    return window, columns: ``model_predictions``) -> (evaluation, bar returns).

    The evaluation carries ``overlap`` (bars used, dropped and why); when too few bars are
    left it carries ``refused`` (the reason) and the returns are None: nothing to compare."""
    from executor.backtest import run_backtest
    from features.atr import atr_warmup_bars
    from qt.config import FeatureParams
    from training.backtest_model import history_bars_needed, logged_metadata, model_predictions, strategy_signals
    from training.champion_window import champion_scoring_window
    from training.trials import model_identity

    model = registry.load_version(version)
    md = logged_metadata(model)
    if md.get("timeframe") != params.data.timeframe:
        raise DataError(f"champion v{version} trades {md.get('timeframe')} bars but this run is "
                        f"{params.data.timeframe}; they cannot be compared on one holdout - "
                        f"retrain with the champion's timeframe or remove its alias deliberately")
    h_start, h_end = _holdout_window(info)
    # the bars of the challenger's holdout backtest: what the comparison trades
    window = champion_scoring_window(challenger_returns.index, md, timeframe_ms(params.data.timeframe),
                                     params.train.embargo_bars, params.gates.min_champion_bars)
    if window["status"] == "refused":
        log.warning("champion v%s not compared: %s", version, window["why"])
        return {"version": version, "refused": window["why"], "overlap": window}, None
    h_start = max(h_start, pd.Timestamp(window["scored_from"]))
    lead = max(history_bars_needed(md), atr_warmup_bars(FeatureParams(**md["feature_params"]), params.risk.atr_period))
    history = _read_candles_with_history(params, paths, h_start, lead)
    funding = _holdout_funding(params, paths, history["timestamp"].min())
    pred_df = model_predictions(model, history, h_start, h_end, funding=funding, atr_period=params.risk.atr_period,
                                **model_feature_inputs(params, paths, FeatureParams(**md["feature_params"])))
    signals = strategy_signals(pred_df, history, params, model_version=str(version))
    candles = history[history["timestamp"] >= h_start].reset_index(drop=True)
    res = run_backtest(candles, signals, params, funding=funding)
    metrics = {k: _number(v) for k, v in res.metrics.items()}
    metrics.update(version=version, start=str(res.start), end=str(res.end), overlap=window)
    champion_id = model_identity(md.get("model_digest"), md.get("training_frame_sha256"),
                                 f"version:{registry.model_name}/{version}")
    _record_trial(params, paths, champion_id, "champion_reevaluation", res.bar_returns)
    return metrics, res.bar_returns
