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
import math
import os
import time
from pathlib import Path

import pandas as pd

from qt.config import FeatureParams, Params
from qt.errors import DataError
from qt.lake import read_candles
from qt.paths import StatePaths
from qt.synthetic import timeframe_ms

log = logging.getLogger("qt.training")

TRAIN_JSON = "train.json"
PREDICTIONS = "holdout_predictions.parquet"
EVALUATION_JSON = "evaluation.json"
RETURNS = "holdout_returns.parquet"
EQUITY = "holdout_equity.parquet"
BASELINES = ("flat", "buy_and_hold", "rule_rsi_macd")
_RULE_FEATURES = FeatureParams(rsi=[14], ema=[], sma=[], macd=(12, 26, 9), atr=[], log_return=[1],
                               realised_vol=[], volume_z=[])


def _registry(params: Params, paths: StatePaths):
    from training.registry import ModelRegistry

    return ModelRegistry(paths.tracking_uri, params.train.model_name, artifact_location=paths.mlflow_artifacts)


def _jsonable(obj):
    """NaN/inf -> None (strict JSON: an undefined metric, e.g. AUC of a one-class fold, is null)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_json(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2, default=str, allow_nan=False))
    os.replace(tmp, path)


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
    from qt.collect import lake_root

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
    from features.store import read_features, read_labels
    from training.report import render_model_card
    from training.train import train_models

    paths.ensure()
    feats = read_features(paths.features, params.data.symbols)
    labels = read_labels(paths.features, params.data.symbols)
    t0 = time.perf_counter()
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
        "train_start": result.train_range[0].isoformat(),
        "train_end": result.train_range[1].isoformat(),
        "holdout_start": result.holdout_range[0].isoformat(),
        "holdout_end": result.holdout_range[1].isoformat(),
        "feature_set_hash": fs_hash,
        "data_sha256": raw_sha,
        "training_frame_sha256": result.data_sha256,
        "config_digest": params.digest(),
        "trained_at": result.trained_at,
        "rows": result.rows,
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
    tmp = pred_path.with_name(f".{pred_path.name}.{os.getpid()}.tmp")
    result.holdout_predictions.to_parquet(tmp, index=False)
    os.replace(tmp, pred_path)
    _write_json(info, paths.models / TRAIN_JSON)
    log.info("trained run %s: holdout auc %.4f (ensemble)", info["run_id"],
             result.metrics_by_name()["ensemble"]["oos"]["auc"])
    return _jsonable({"models": result.models,
            "train": {k: info[k] for k in ("run_id", "train_start", "train_end", "holdout_start", "holdout_end",
                                           "rows", "weights", "seconds", "fit_seconds")}})


# ---------------------------------------------------------------------------------------------
def evaluate_stage(params: Params, paths: StatePaths) -> dict:
    """Holdout backtests of the strategy and the baselines through ``executor.backtest``."""
    from executor.backtest import buy_and_hold, flat_baseline, run_backtest
    from executor.signals import signals_from_predictions
    from features.compute import warmup_bars
    from training.baselines import make_rule_signals
    from training.report import plot_equity_and_drawdown, render_model_card

    info = _read_handover(paths, TRAIN_JSON, "train")
    preds = pd.read_parquet(paths.models / PREDICTIONS)
    h_start, h_end = _holdout_window(info)
    history = _read_candles_with_history(params, paths, h_start, warmup_bars(_RULE_FEATURES))
    candles = history[history["timestamp"] >= h_start].reset_index(drop=True)

    signals = signals_from_predictions(preds, params.signal, model_version=f"run-{info['run_id'][:8]}")
    results = {"strategy": run_backtest(candles, signals, params)}
    strat = results["strategy"]
    rule = make_rule_signals(history)
    rule = rule[(rule["timestamp"] >= h_start) & (rule["timestamp"] <= h_end)]
    results["rule_rsi_macd"] = run_backtest(candles, rule, params)
    results["buy_and_hold"] = buy_and_hold(candles, params, strat.start, strat.end)
    results["flat"] = flat_baseline(candles, params, strat.start, strat.end)

    evaluation = {name: {k: _number(v) for k, v in res.metrics.items()} for name, res in results.items()}
    for name, res in results.items():
        evaluation[name]["start"] = str(res.start)
        evaluation[name]["end"] = str(res.end)
    returns = pd.DataFrame({name: res.bar_returns for name, res in results.items()})
    equity = pd.DataFrame({name: res.equity for name, res in results.items()})
    paths.evaluation.mkdir(parents=True, exist_ok=True)
    returns.to_parquet(paths.evaluation / RETURNS)
    equity.to_parquet(paths.evaluation / EQUITY)
    _write_json(evaluation, paths.evaluation / EVALUATION_JSON)

    paths.reports.mkdir(parents=True, exist_ok=True)
    plot = plot_equity_and_drawdown({n: r.equity for n, r in results.items()}, paths.reports / "holdout_equity.png",
                                    f"Holdout {h_start:%Y-%m-%d} .. {h_end:%Y-%m-%d}, net of costs "
                                    f"(run {info['run_id'][:8]})")
    metrics_only = {n: {k: v for k, v in m.items() if k not in ("start", "end")} for n, m in evaluation.items()}
    _registry(params, paths).log_evaluation(info["run_id"], metrics_only, plot,
                                            render_model_card(info, metrics_only))
    return _jsonable({"evaluation": evaluation})


def _number(v):
    return int(v) if isinstance(v, (int,)) and not isinstance(v, bool) else float(v)


# ---------------------------------------------------------------------------------------------
def promote_stage(params: Params, paths: StatePaths) -> dict:
    """Register (alias challenger), run the gates (vs baselines and the re-evaluated champion),
    tag the version with every gate, move ``champion`` only when all pass."""
    from executor.backtest import bars_per_year
    from training.gates import evaluate_gates
    from training.report import render_model_card

    info = _read_handover(paths, TRAIN_JSON, "train")
    evaluation = _read_handover(paths, EVALUATION_JSON, "evaluate")
    returns = pd.read_parquet(paths.evaluation / RETURNS)
    registry = _registry(params, paths)

    previous = registry.champion_version()
    version = registry.register_version(info["run_id"], model_uri=info.get("model_uri"))
    champion_returns, champion_eval = None, None
    if previous is not None and previous != version:
        champion_eval, champion_returns = _reevaluate_champion(registry, previous, params, paths, info)

    n_trials = registry.count_trials()
    report = evaluate_gates(
        returns["strategy"],
        {name: {"bar_returns": returns[name], "metrics": evaluation[name]} for name in BASELINES},
        champion_returns, evaluation["strategy"], params.gates, n_trials,
        periods_per_year=bars_per_year(timeframe_ms(params.data.timeframe)), seed=params.train.seed)
    registry.set_gate_tags(version, report)
    if report.passed:
        registry.promote(version)
    reasons = report.reasons() if not report.passed else []
    summary = {
        "model_name": params.train.model_name,
        "version": version,
        "alias": "champion" if report.passed else "challenger",
        "promoted": report.passed,
        "previous_champion": previous,
        "champion": version if report.passed else previous,
        "n_trials": n_trials,
        "gates": report.gates,
        "reasons": reasons,
        "champion_evaluation": champion_eval,
    }
    registry.log_promotion(info["run_id"], summary,
                           render_model_card(info, {n: {k: v for k, v in m.items() if k not in ("start", "end")}
                                                    for n, m in evaluation.items()}, summary))
    if report.passed:
        log.info("version %s promoted to champion (was %s)", version, previous)
    else:
        log.warning("version %s NOT promoted; champion stays %s: %s", version, previous, "; ".join(reasons))
    return _jsonable({"registry": summary})


def _reevaluate_champion(registry, version: str, params: Params, paths: StatePaths, info: dict):
    """The champion's holdout backtest on the challenger's holdout window, with the champion's
    own feature params (from its logged metadata) and the registered artefact's predictions."""
    from executor.backtest import run_backtest
    from executor.signals import signals_from_predictions
    from features.compute import compute_features, warmup_bars

    model = registry.load_version(version)
    md = dict(model.metadata.metadata or {})
    if md.get("timeframe") != params.data.timeframe:
        raise DataError(f"champion v{version} trades {md.get('timeframe')} bars but this run is "
                        f"{params.data.timeframe}; they cannot be compared on one holdout - "
                        f"retrain with the champion's timeframe or remove its alias deliberately")
    fp = FeatureParams(**md["feature_params"])
    h_start, h_end = _holdout_window(info)
    history = _read_candles_with_history(params, paths, h_start, warmup_bars(fp))
    feats = compute_features(history, fp)
    feats = feats[(feats["timestamp"] >= h_start) & (feats["timestamp"] <= h_end)].reset_index(drop=True)
    pred = model.predict(feats[list(md["feature_columns"])])
    pred_df = pd.concat([feats[["symbol", "timestamp"]], pred[["prob_up", "expected_return"]]], axis=1)
    signals = signals_from_predictions(pred_df, params.signal, model_version=str(version))
    candles = history[history["timestamp"] >= h_start].reset_index(drop=True)
    res = run_backtest(candles, signals, params)
    metrics = {k: _number(v) for k, v in res.metrics.items()}
    metrics["version"] = version
    return metrics, res.bar_returns
