"""The stages of the pipeline as plain functions ``stage(params, paths) -> dict``.

Each returns its part of ``reports/summary.json``. The CLI runs one stage per
command (that is what ``dvc repro`` calls); ``qt run`` composes them all into the
Prefect flow of ``flows/pipeline.py`` (as tasks: ``flows/stage_tasks.py``); nothing here
imports a flow. Stages hand data over through the state
directory, so any stage can run in a fresh process.

Stages doing the same independent work per symbol (collect, validate, features) take a
fan-out callable (``qt.fanout``): in order / on threads by default, Prefect tasks on the
``runner:`` task runner (threads or a Dask cluster) in the flows - the same per-symbol
functions either way, so the outputs are byte-identical.

Training, serving and the executor are imported inside the stages that need them: they pull in
MLflow, XGBoost/LightGBM, BentoML and Redis clients, which ``qt collect`` / ``qt validate`` (the
same module) must not pay for at start-up.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import yaml

from data.alt_collect import collect_alt
from data.lake import read_candles, read_lake_funding
from data.quarantine import require_alt_passed, require_validated, validate_stage, validated_symbols
from data.sources import collect_stage, lake_root, venue_lake_root, with_collected_universe
from features.alt_features import alt_series_needed
from features.compute import feature_columns
from features.materialise import materialise, read_alt_inputs, read_feature_inputs, read_other_venue
from features.pit import check_point_in_time
from qt.atomic import write_json_atomic
from qt.config import Params
from qt.errors import DataError
from qt.paths import StatePaths

log = logging.getLogger("flows.stages")


def _recorded(stage):
    """Also write the stage's summary part to ``reports/<stage>.json`` (DVC outs and metrics)."""
    @functools.wraps(stage)
    def wrapper(params: Params, paths: StatePaths, *args, **kwargs) -> dict:
        result = stage(params, paths, *args, **kwargs)
        paths.reports.mkdir(parents=True, exist_ok=True)
        write_json_atomic(paths.reports / f"{stage.__name__.replace('_', '-')}.json", result, indent=2, default=str)
        return result

    return wrapper


def collect(params: Params, paths: StatePaths, collect_symbols=None) -> dict:
    """``collect_symbols`` fans out over symbols (threads by default; Prefect tasks in the flow).

    With ``alt.series`` set, the alt series too (``data.alt_collect``), into the same lake's ``alt/``
    and recorded under ``data.alt``. Recorded in ``reports/collect.json``; a collection from Bybit (an input of the cross-venue
    features, not the candles the pipeline decides on) in ``reports/collect-bybit.json``, so it
    never replaces the record later stages read (universe, collection time)."""
    result = collect_stage(params, paths, collect_symbols)
    venue = params.collect.venue
    paths.reports.mkdir(parents=True, exist_ok=True)
    name = "collect.json" if venue == "binance" else f"collect-{venue}.json"
    write_json_atomic(paths.reports / name, result, indent=2, default=str)
    if venue == "binance" and params.features.xv:
        result["data"]["cross_venue"] = _collect_cross_venue(params, paths, result["data"]["symbols"], collect_symbols)
        write_json_atomic(paths.reports / name, result, indent=2, default=str)
    if venue == "binance" and params.alt.series:  # alternative data beside the candles (off by default)
        result["data"]["alt"] = collect_alt(params, Path(result["data"]["lake"]))
        write_json_atomic(paths.reports / name, result, indent=2, default=str)
    return result


def _collect_cross_venue(params: Params, paths: StatePaths, symbols: list[str], collect_symbols=None) -> dict:
    """With the cross-venue features on, Bybit's series of the same perpetuals too (same source:
    the local exchange serves both venues from one data dir): without them the features stage
    would stop. Recorded in ``reports/collect-bybit.json``; a short summary goes into collect's."""
    if params.data.source.startswith("synthetic"):
        raise DataError("features.xv needs Bybit's candles and funding, which the synthetic market has not; "
                        "use --source parquet:DIR (with ohlcv/bybit, funding/bybit) or ccxt, or turn features.xv off")
    perps = [s for s in symbols if ":" in s]
    if not perps:
        return {"exchange": "bybit", "symbols": [], "note": "no perpetual in data.symbols"}
    on_bybit = params.model_copy(update={
        "collect": params.collect.model_copy(update={"exchange": "bybit", "universe": "list"}),
        "data": params.data.model_copy(update={"symbols": perps})})
    summary = collect(on_bybit, paths, collect_symbols)["data"]
    return {k: summary[k] for k in ("exchange", "symbols", "rows", "start", "end", "sha256")}


def validate(params: Params, paths: StatePaths, map_symbols=None) -> dict:
    """Both suites per symbol (``data.validate.validate_lake_batch`` through ``map_symbols``);
    writes ``reports/validation.json`` itself (also when it fails)."""
    return validate_stage(params, paths, map_symbols=map_symbols)


def only_validated(params: Params, paths: StatePaths) -> Params:
    """``params`` with the universe cut to the symbols that passed validation (quarantine)."""
    passed = validated_symbols(params, paths)
    if passed != list(params.data.symbols):
        dropped = [s for s in params.data.symbols if s not in passed]
        log.error("quarantined by validation, left out of this run: %s", ", ".join(dropped))
    return params.model_copy(update={"data": params.data.model_copy(update={"symbols": passed})})


def _validated_lake(params: Params, paths: StatePaths) -> tuple[Params, Path, pd.DataFrame]:
    """(params cut to the validated symbols, the lake they were collected into, their candles).

    The lake is located before the universe is cut: a synthetic market's lake is keyed by the
    whole universe it was generated for, so the cut params would point at a lake that does not exist.
    """
    root = lake_root(with_collected_universe(params, paths), paths)
    params = only_validated(params, paths)
    data = params.data
    return params, root, read_candles(root, data.symbols, data.timeframe, data.start, data.end)


@_recorded
def features(params: Params, paths: StatePaths, map_symbols=None) -> dict:
    """Point-in-time-checked features and labels from validated candles, materialised to Parquet
    (incrementally: only partitions whose candles changed are recomputed).

    The point-in-time check runs here, once, on a sample of every symbol (it judges the declared
    feature set, not a symbol); materialisation runs per symbol through ``map_symbols``
    (``features.materialise.materialise_symbol``)."""
    params, root, candles = _validated_lake(params, paths)
    require_validated(candles, paths)
    t0 = time.perf_counter()
    funding, reference = read_feature_inputs(root, list(params.data.symbols), params.data.timeframe, params)
    bybit_root = venue_lake_root(params, paths, "bybit")  # the cross-venue family's Bybit series
    other = read_other_venue(bybit_root, list(params.data.symbols), params.data.timeframe, params)
    require_alt_passed(paths, alt_series_needed(params.features))  # a quarantined alt series stops here
    alt = read_alt_inputs(root, params.features)  # the alt families' market-wide series (lake's alt/)
    pit = check_point_in_time(candles, params, funding=funding, reference=reference, other_venue=other, alt=alt)
    pit["seconds"] = round(time.perf_counter() - t0, 3)
    out = materialise(root, list(params.data.symbols), params.data.timeframe, params, paths.features,
                      map_symbols=map_symbols, bybit_root=bybit_root)
    if not out["rows"]:
        raise DataError("no feature rows left after the warm-up; collect a longer history (--start earlier)")
    return {"features": {"rows": int(out["rows"]), "columns": feature_columns(params.features),
                         "seconds": round(out["seconds"], 3), "rows_computed": int(out["rows_computed"]),
                         "feature_set_hash": out["feature_set_hash"], "label_set_hash": out["label_set_hash"],
                         "label_rows": int(out["label_rows"]), "point_in_time": pit}}


@_recorded
def train(params: Params, paths: StatePaths) -> dict:
    from training.stages import train_stage

    return train_stage(only_validated(params, paths), paths)


@_recorded
def evaluate(params: Params, paths: StatePaths) -> dict:
    from training.stages import evaluate_stage

    return evaluate_stage(only_validated(params, paths), paths)


@_recorded
def promote(params: Params, paths: StatePaths, search: dict | None = None) -> dict:
    """``search``: a tune study's statistics (N, Sharpe variance) for the deflated Sharpe."""
    from training.stages import promote_stage

    return promote_stage(only_validated(params, paths), paths, search)


def holdout_start(paths: StatePaths):
    """First bar of the out-of-sample slice, written by the train stage."""
    info = json.loads((paths.models / "train.json").read_text())
    return pd.Timestamp(info["holdout_start"])


@_recorded
def serve_and_execute(params: Params, paths: StatePaths, redis_url: str | None) -> dict:
    """Start ``bentoml serve`` on the champion, replay the holdout through the paper executor.

    If no champion exists the service starts but never becomes ready; the executor
    then opens nothing and every bar is recorded as a NO_SIGNAL rejection - there is
    no fallback signal.
    """
    from executor.daemon import run_paper_replay
    from executor.signals import HttpSignalSource
    from serving.launcher import ServiceProcess
    from training.registry import champion_version

    params, root, candles = _validated_lake(params, paths)
    start = holdout_start(paths)
    has_champion = champion_version(paths.tracking_uri, params.train.model_name) is not None
    funding = read_lake_funding(root, params.data.symbols)  # None without perps
    bybit_root = venue_lake_root(params, paths, "bybit")  # the cross-venue features' Bybit series

    with ServiceProcess(paths, params_path=write_effective_params(params, paths),
                        extra_env={"QT_LAKE": str(root), "QT_BYBIT_LAKE": str(bybit_root)}) as service:
        if has_champion:
            service.wait_ready(timeout_s=180)
        else:
            service.wait_live(timeout_s=180)
            log.warning("no champion model: the executor will open nothing (NO_SIGNAL)")
        source = _TimedSource(HttpSignalSource(service.url, timeout_s=10.0))
        report = run_paper_replay(candles, source, params, state_db=paths.executor_db,
                                  redis_url=redis_url, start=start, funding=funding)
        meta = _get_json(service.url + "/metadata") if has_champion else {}
    parity = None
    if has_champion:
        from qt.config import FeatureParams
        from training.backtest_model import logged_metadata
        from training.parity import check_parity, read_replay_fills
        from training.registry import load_champion
        from training.stages import model_feature_inputs

        champion = load_champion(paths.tracking_uri, params.train.model_name)
        # the reference candles and Bybit series the service read for the champion's features
        inputs = model_feature_inputs(params, paths, FeatureParams(**logged_metadata(champion)["feature_params"]))
        parity = check_parity(candles, champion, params, start, report, meta.get("model_version"), funding=funding,
                              replay_fills=read_replay_fills(paths.executor_db, report.run_id), **inputs)
        if not parity["match"]:
            log.error("PARITY BROKEN: paper replay %s vs in-process backtest %s", parity["replay_net_pnl"],
                      parity["backtest_net_pnl"])
    lat = np.array(source.latencies_ms) if source.latencies_ms else np.array([np.nan])
    return {
        "serving": {"url": service.url, "model_version": meta.get("model_version"),
                    "requests": len(source.latencies_ms),
                    "p50_ms": _round(np.nanpercentile(lat, 50)), "p99_ms": _round(np.nanpercentile(lat, 99))},
        "executor": report.to_dict() | {"parity_with_backtest": parity},
    }


def write_effective_params(params: Params, paths: StatePaths) -> Path:
    """The exact config of this run (CLI overrides included), for processes we start."""
    out = paths.home / "params.effective.yaml"
    out.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return out


def _get_json(url: str) -> dict:
    return httpx.get(url, timeout=10.0).json()


class _TimedSource:
    """Wraps a signal source to record client-side request latency (what the executor waits)."""

    def __init__(self, inner):
        self.inner = inner
        self.latencies_ms: list[float] = []

    def fetch(self, symbols, as_of):
        t0 = time.perf_counter()
        try:
            return self.inner.fetch(symbols, as_of)
        finally:
            self.latencies_ms.append((time.perf_counter() - t0) * 1000.0)


def _round(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 3)
