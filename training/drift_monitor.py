"""The drift monitor's adapters: read the stores, decide with ``training.drift``, record, act.

One check (``monitor``) compares the champion's world with now:

* features: the materialised rows of the champion's training window (``train_start`` ..
  ``train_end`` from its MLflow metadata) against the newest ``drift.recent_bars`` rows per
  symbol, PSI per feature (``drift.exclude_features`` left out);
* predictions: the champion applied to the recent bars against the champion applied to its own
  holdout (both through ``training.backtest_model.model_predictions``, the one way a logged
  model's input is rebuilt), PSI and KS of ``prob_up``;
* live: the closed trades in the executor's SQLite state (its latest run) against the champion's
  holdout backtest metrics; no state or too few trades is said in the result, never invented.

The result goes to ``reports/drift.json`` and to an MLflow run in the ``drift`` experiment
(``psi.<feature>`` metrics). Past a threshold: a ``drift`` notification and ``trigger_retrain``
(given by the caller: ``flows.drift`` runs the ``retrain`` deployment or the retrain flow).
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from qt.atomic import jsonable, write_json_atomic  # jsonable: NaN/inf -> null, as every report of the pipeline
from qt.config import Params
from qt.paths import StatePaths
from training import drift

log = logging.getLogger("qt.drift")
EXPERIMENT = "drift"
REPORT = "drift.json"


@dataclass
class DriftInputs:
    """Everything the decision needs, read from the stores (or built by a test)."""

    champion: dict  # model_name, version, run_id, train_start, train_end, holdout_start, holdout_end
    feature_columns: list[str]
    train_features: pd.DataFrame
    recent_features: pd.DataFrame
    holdout_predictions: np.ndarray | None  # the champion's prob_up on its holdout
    recent_predictions: np.ndarray | None  # the champion's prob_up on the recent bars
    live_trade_pnls: np.ndarray | None  # None = no live state
    backtest_metrics: dict  # the champion's holdout strategy metrics (trades, hit_rate, net_pnl)


# -- reading --------------------------------------------------------------------------------------
def recent_rows(features: pd.DataFrame, bars: int) -> pd.DataFrame:
    """The newest ``bars`` rows of each symbol."""
    return features.sort_values(["symbol", "timestamp"]).groupby("symbol", sort=False).tail(bars)


def read_live_trade_pnls(db_path: Path) -> np.ndarray | None:
    """PnL of every closed trade of the executor's latest run; None when there is no state."""
    if not Path(db_path).is_file():
        return None
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        run = conn.execute("SELECT run_id FROM equity ORDER BY ts DESC, rowid DESC LIMIT 1").fetchone()
        if run is None:
            return None
        rows = conn.execute("SELECT pnl_usdt FROM fills WHERE run_id=? AND purpose='exit' AND pnl_usdt IS NOT NULL",
                            (run[0],)).fetchall()
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()
    return np.array([r[0] for r in rows], dtype=float)


def gather_inputs(params: Params, paths: StatePaths) -> DriftInputs | None:
    """The champion and the windows to compare; None when there is no champion to watch."""
    from features.store import read_features
    from training.backtest_model import history_bars_needed, logged_metadata, model_predictions
    from training.registry import ModelRegistry

    registry = ModelRegistry(paths.tracking_uri, params.train.model_name)
    version = registry.champion_version()
    if version is None:
        return None
    model = registry.load_version(version)
    md = logged_metadata(model)
    run_id = registry.client.get_model_version(params.train.model_name, version).run_id
    symbols = [s for s in md.get("symbols", params.data.symbols) if s in params.data.symbols] or \
        list(params.data.symbols)
    feats = read_features(paths.features, symbols)
    t0, t1 = pd.Timestamp(md["train_start"]), pd.Timestamp(md["train_end"])
    train = feats[(feats["timestamp"] >= t0) & (feats["timestamp"] <= t1)]
    recent = recent_rows(feats, params.drift.recent_bars)
    columns = [c for c in md["feature_columns"] if c in feats.columns]
    champion = {"model_name": params.train.model_name, "version": version, "run_id": run_id,
                **{k: md.get(k) for k in ("train_start", "train_end", "holdout_start", "holdout_end")}}

    candles, funding = _candles(params, paths, min(pd.Timestamp(md["holdout_start"]), recent["timestamp"].min()),
                                history_bars_needed(md), symbols)
    from qt.config import FeatureParams
    from training.stages import model_feature_inputs

    inputs = model_feature_inputs(params, paths, FeatureParams(**md["feature_params"]))  # basis, cross, xv
    holdout = model_predictions(model, candles, md["holdout_start"], md["holdout_end"], funding=funding, **inputs)
    now = model_predictions(model, candles, recent["timestamp"].min(), None, funding=funding, **inputs)
    now = now.merge(recent[["symbol", "timestamp"]], on=["symbol", "timestamp"])
    m = registry.run_metrics(run_id)
    backtest = {k: m.get(f"holdout_strategy_{k}") for k in ("trades", "hit_rate", "net_pnl")}
    return DriftInputs(champion, columns, train, recent, holdout["prob_up"].to_numpy(), now["prob_up"].to_numpy(),
                       read_live_trade_pnls(paths.executor_db), backtest)


def _candles(params: Params, paths: StatePaths, start: pd.Timestamp, history_bars: int, symbols: list[str]):
    from data.sources import lake_root
    from data.lake import read_candles, read_lake_funding
    from qt.timeframes import timeframe_ms

    lead = pd.Timedelta(milliseconds=timeframe_ms(params.data.timeframe) * (history_bars + 1))
    root = lake_root(params, paths)
    candles = read_candles(root, symbols, params.data.timeframe, start=start - lead)
    return candles, read_lake_funding(root, symbols, start=start - lead)


# -- the check ------------------------------------------------------------------------------------
def evaluate(inputs: DriftInputs, params: Params) -> dict:
    """The result document (``reports/drift.json``) of one check; pure given the inputs."""
    t = params.drift
    columns = drift.monitored_columns(inputs.feature_columns, t.exclude_features)
    psi = drift.feature_psi(inputs.train_features, inputs.recent_features, columns, t.bins)
    pred: dict = {"psi": None, "ks": None}
    if inputs.holdout_predictions is not None and inputs.recent_predictions is not None \
            and len(inputs.holdout_predictions) and len(inputs.recent_predictions):
        pred = {"psi": drift.psi(inputs.holdout_predictions, inputs.recent_predictions, t.bins),
                "ks": drift.ks_statistic(inputs.holdout_predictions, inputs.recent_predictions),
                "holdout_mean_prob_up": float(np.mean(inputs.holdout_predictions)),
                "recent_mean_prob_up": float(np.mean(inputs.recent_predictions)),
                "holdout_rows": int(len(inputs.holdout_predictions)),
                "recent_rows": int(len(inputs.recent_predictions))}
    live = None if inputs.live_trade_pnls is None else drift.live_performance(inputs.live_trade_pnls)
    expected = drift.backtest_expectation(inputs.backtest_metrics)
    verdict = drift.assess(psi, pred["psi"], live, expected, t)
    rec, tr = inputs.recent_features, inputs.train_features
    return {
        "status": "drifted" if verdict.drifted else "ok",
        "checked_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "champion": inputs.champion,
        "windows": {"train": _span(tr), "train_rows": int(len(tr)), "recent": _span(rec), "recent_rows": int(len(rec))},
        "features": {"psi": psi, "monitored": len(columns),
                     "excluded": sorted(set(inputs.feature_columns) - set(columns)), "threshold": t.feature_psi},
        "predictions": pred,
        "live": live if live is not None else {"status": "no live state"},
        "backtest_expectation": expected,
        **verdict.to_dict(),
    }


def monitor(params: Params, paths: StatePaths, *, inputs: DriftInputs | None = None, notifier=None,
            trigger_retrain: Callable[[str], dict] | None = None) -> dict:
    """One drift check: decide, record (reports/drift.json, MLflow), alert and retrain on a trip.

    ``notifier`` defaults to one built from ``notify:``; ``trigger_retrain(reason) -> dict`` is
    what a trip starts (None: alert only). A retrain that fails is recorded in the report, then
    re-raised, so the run that asked for it fails visibly.
    """
    paths.ensure()
    inputs = inputs if inputs is not None else gather_inputs(params, paths)
    if inputs is None:
        result = {"status": "no_champion", "checked_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
                  "model_name": params.train.model_name, "drifted": False,
                  "notes": [f"model {params.train.model_name!r} has no champion: nothing to monitor"]}
        _write(paths, result)
        return result
    result = evaluate(inputs, params)
    result["mlflow_run_id"] = log_to_mlflow(paths, result)
    result["alert_sent"] = False
    result["retrain"] = None
    failure = None
    if result["drifted"]:
        reason = "; ".join(b["message"] for b in result["breaches"])
        log.warning("drift: champion v%s tripped the monitor: %s", inputs.champion.get("version"), reason)
        result["alert_sent"] = _alert(params, notifier, result, reason)
        if trigger_retrain is not None:
            try:
                result["retrain"] = trigger_retrain(reason)
            except Exception as exc:  # noqa: BLE001 - recorded, then re-raised below
                result["retrain"] = {"error": f"{type(exc).__name__}: {exc}"}
                failure = exc
    _write(paths, result)
    if failure is not None:
        raise failure
    return result


def _alert(params: Params, notifier, result: dict, reason: str) -> bool:
    from qt.notify import Event, Notifier

    own = notifier is None
    notifier = Notifier.from_params(params.notify, os.environ) if own else notifier
    try:
        champ = result["champion"]
        return notifier.notify(Event("drift", f"drift: {champ['model_name']} v{champ['version']}", reason, {
            "breaches": result["breaches"], "drifted_features": result["drifted_features"],
            "retrain": params.drift.retrain}))
    finally:
        if own:
            notifier.close()


def log_to_mlflow(paths: StatePaths, result: dict) -> str:
    """One run in the ``drift`` experiment: ``psi.<feature>``, prediction PSI/KS, live figures."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=paths.tracking_uri, registry_uri=paths.tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(
        EXPERIMENT, artifact_location=(paths.mlflow_artifacts / EXPERIMENT).resolve().as_uri())
    champ = result["champion"]
    run = client.create_run(exp_id, tags={"model_name": str(champ["model_name"]),
                                          "champion_version": str(champ["version"]),
                                          "champion_run_id": str(champ["run_id"]), "status": result["status"]})
    now_ms = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
    values = {f"psi.{k}": v for k, v in result["features"]["psi"].items()}
    values["drifted_features"] = len(result["drifted_features"])
    values["drifted"] = float(result["drifted"])
    for key in ("psi", "ks"):
        values[f"prediction_{key}"] = result["predictions"].get(key)
    for key in ("trades", "hit_rate", "pnl_per_trade_usdt"):
        values[f"live_{key}"] = result["live"].get(key)
    metrics = [Metric(k, float(v), now_ms, 0) for k, v in values.items()
               if isinstance(v, (int, float)) and math.isfinite(float(v))]
    client.log_batch(run.info.run_id, metrics=metrics)
    client.log_dict(run.info.run_id, jsonable(result), REPORT)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _write(paths: StatePaths, result: dict) -> Path:
    out = paths.reports / REPORT
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, jsonable(result), indent=2, default=str)
    return out


def _span(frame: pd.DataFrame) -> list[str | None]:
    if frame.empty:
        return [None, None]
    return [pd.Timestamp(frame["timestamp"].min()).isoformat(), pd.Timestamp(frame["timestamp"].max()).isoformat()]
