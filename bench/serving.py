"""Serving latency (issue #6): the real ``bentoml serve`` driven by a load generator over loopback.

Setup, in a throw-away state directory:

* a lake of 566 symbols of 1h candles from ``data.synthetic.generate_market`` (the shared data has
  8 spot symbols only), ``BARS`` bars each: enough for the model's warm-up + return window and
  ``serving.history_bars``;
* a champion with the DEFAULT four members (XGBoost, LightGBM, N-HiTS, PatchTST) and default
  architectures and tree counts, trained on 8 of the symbols with ``max_steps`` of the two networks
  cut to ``DEEP_STEPS`` and 2 walk-forward folds: a network's predict cost is one forward pass of
  the same architecture whatever its training length; registered and promoted (alias champion);
* the service started with ``serving.launcher.ServiceProcess`` on a free loopback port.

Measured (sequential requests on one keep-alive ``httpx`` client, after warm-up requests):

* ``batch``: ``POST /signals`` for all 566 symbols at the newest bar, as the executor asks every
  bar (target p99 < 100 ms); after the first request of a bar each symbol's input row comes from
  the service's feature-row cache (``serving.engine``), so this is the model call + HTTP;
* ``single``: one symbol per request, cycling through the universe (target p50 < 10 ms);
* ``batch_new_bar``: the 566-symbol batch at a different bar each request, so no symbol's
  feature rows are cached: the cost of the first request after a new candle (no target);
* ``in_process``: the same work - ``serving.engine.SignalEngine`` (lake cache -> the one feature
  code path -> the same pyfunc -> signals) - called directly in this process on the same lake and
  model version, and the ratios HTTP / in-process;
* ``http_floor``: ``GET /livez`` on the same client, no model, no middleware: what the load
  generator, loopback and the HTTP server cost per request before any work (no target).

The service is stopped by PID in a ``finally``. The machine's load average is recorded at the
start and the end: the 2 cores may be shared with other work, which every latency here feels.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_SYMBOLS = 566
BARS = 1200
TRAIN_SYMBOLS = 8
DEEP_STEPS = 5
TRAIN_FOLDS = 2
SEED = 17
BATCH_TARGET_P99_MS = 100.0
SINGLE_TARGET_P50_MS = 10.0
BATCH_REQUESTS, BATCH_WARMUP = 200, 20
SINGLE_REQUESTS, SINGLE_WARMUP = 1000, 100
NEW_BAR_REQUESTS = 20
FLOOR_REQUESTS, FLOOR_WARMUP = 300, 30


def universe() -> list[str]:
    return [f"C{i:03d}/USDT" for i in range(N_SYMBOLS)]


def build_lake(raw: Path, symbols: list[str]) -> pd.DataFrame:
    """Synthetic 1h candles for ``symbols`` written to the partitioned lake under ``raw``."""
    from qt.config import SyntheticParams
    from data.lake import write_candles
    from data.synthetic import generate_market

    candles = generate_market(symbols, "1h", SyntheticParams(bars=BARS, signal_strength=0.2), SEED)
    for sym, part in candles.groupby("symbol", sort=False):
        write_candles(raw, str(sym), "1h", part)
    return candles


def bench_params(train_symbols: list[str]):
    """Default params; only the networks' training steps and the fold count are cut."""
    from qt.config import Params

    base = Params(data={"symbols": train_symbols, "timeframe": "1h"})
    train = base.train.model_copy(update={
        "folds": TRAIN_FOLDS,
        "nhits": {**base.train.nhits, "max_steps": DEEP_STEPS},
        "patchtst": {**base.train.patchtst, "max_steps": DEEP_STEPS},
    })
    return base.model_copy(update={"train": train})


def train_champion(paths, params, candles: pd.DataFrame) -> str:
    """Train, log, register and promote the ensemble; returns its version."""
    from features.compute import compute_features, feature_set_hash
    from features.labels import make_labels
    from training.registry import ModelRegistry
    from training.train import train_models

    part = candles[candles["symbol"].isin(params.data.symbols)]
    result = train_models(compute_features(part, params.features), make_labels(part, params.labels, params.costs),
                          params)
    registry = ModelRegistry(paths.tracking_uri, params.train.model_name, artifact_location=paths.mlflow_artifacts)
    logged = registry.log_training_run(result, params, feature_set_hash=feature_set_hash(params.features),
                                       symbols=list(params.data.symbols))
    version = registry.register_version(logged["run_id"], model_uri=logged["model_uri"])
    registry.promote(version)
    return version


def _summary(seconds: list[float], target: tuple[str, float] | None = None) -> dict:
    ms = np.asarray(seconds) * 1000.0
    out = {"requests": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
           "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
           "mean_ms": round(float(ms.mean()), 2)}
    if target is not None:
        key, limit = target
        out[f"target_{key}"] = limit
        out["within_target"] = bool(out[key] < limit)
    return out


def _drive(call, bodies: list[dict], warmup: int) -> list[float]:
    """Time ``call(body)`` for each body after ``warmup`` untimed calls (bodies cycled).

    ``call`` returns a checker run after the clock stops: the load generator's own JSON parsing
    and checks are not the service's latency."""
    for i in range(warmup):
        call(bodies[i % len(bodies)])()
    times = []
    for body in bodies:
        t0 = time.perf_counter()
        check = call(body)
        times.append(time.perf_counter() - t0)
        check()
    return times


def _workloads(symbols: list[str], bars: pd.DatetimeIndex) -> dict[str, list[dict]]:
    last = bars[-1].strftime("%Y-%m-%dT%H:%M:%SZ")
    earlier = [b.strftime("%Y-%m-%dT%H:%M:%SZ") for b in bars[-1 - NEW_BAR_REQUESTS:-1]]
    return {
        # read every symbol's candles once (a bar not measured): the lake cache, not the rows
        "lake_warmup": [{"symbols": symbols, "as_of": bars[-2 - NEW_BAR_REQUESTS].strftime("%Y-%m-%dT%H:%M:%SZ")}],
        "batch": [{"symbols": symbols, "as_of": last}] * BATCH_REQUESTS,
        "single": [{"symbols": [symbols[i % len(symbols)]], "as_of": last} for i in range(SINGLE_REQUESTS)],
        "batch_new_bar": [{"symbols": symbols, "as_of": t} for t in earlier],
    }


def _measure(call, work: dict[str, list[dict]]) -> dict:
    """The three workloads through ``call``; ``batch_new_bar`` first, before the rows are cached."""
    _drive(call, work["lake_warmup"], 0)
    return {
        "batch_new_bar": _summary(_drive(call, work["batch_new_bar"], 0)),
        "batch": _summary(_drive(call, work["batch"], BATCH_WARMUP), ("p99_ms", BATCH_TARGET_P99_MS)),
        "single": _summary(_drive(call, work["single"], SINGLE_WARMUP), ("p50_ms", SINGLE_TARGET_P50_MS)),
    }


def run() -> dict:
    import httpx
    import yaml

    from qt.paths import StatePaths
    from serving.launcher import ServiceProcess

    started = time.perf_counter()
    load_before = os.getloadavg()
    symbols = universe()
    with tempfile.TemporaryDirectory(prefix="qt-bench-serving-") as tmp:
        home = Path(tmp)
        paths = StatePaths(home).ensure()
        t0 = time.perf_counter()
        candles = build_lake(paths.raw, symbols)
        lake_s = time.perf_counter() - t0
        params = bench_params(symbols[:TRAIN_SYMBOLS])
        params_file = home / "params.yaml"
        params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
        t0 = time.perf_counter()
        version = train_champion(paths, params, candles)
        train_s = time.perf_counter() - t0
        bars = pd.DatetimeIndex(sorted(candles["timestamp"].unique()))
        work = _workloads(symbols, bars)

        svc = ServiceProcess(paths, params_path=params_file, extra_env={"QT_LAKE": str(paths.raw)})
        try:
            t0 = time.perf_counter()
            svc.start().wait_ready(180)
            ready_s = time.perf_counter() - t0
            with httpx.Client(base_url=svc.url, timeout=60) as client:
                def over_http(body: dict):
                    resp = client.post("/signals", json=body)  # returns once the whole body is read

                    def check() -> None:
                        if resp.status_code != 200 or len(resp.json()["signals"]) != len(body["symbols"]):
                            raise RuntimeError(f"/signals answered {resp.status_code}: {resp.text[:300]}")
                    return check

                def livez(_body: dict):
                    resp = client.get("/livez")

                    def check() -> None:
                        if resp.status_code != 200:
                            raise RuntimeError(f"/livez answered {resp.status_code}")
                    return check

                served = client.get("/metadata").json()
                http = _measure(over_http, work)
                floor = _summary(_drive(livez, [{}] * FLOOR_REQUESTS, FLOOR_WARMUP))
                check = client.post("/signals", json=work["batch"][0]).json()
        finally:
            svc.stop()

        in_process, same_answer = _in_process(paths, params, version, work, check)

    ratios = {name: {"p50": round(http[name]["p50_ms"] / in_process[name]["p50_ms"], 2),
                     "p99": round(http[name]["p99_ms"] / in_process[name]["p99_ms"], 2)} for name in http}
    return {
        "lake": {"symbols": N_SYMBOLS, "timeframe": "1h", "bars_per_symbol": BARS,
                 "source": "synthetic (data.synthetic.generate_market, seed 17)", "write_seconds": round(lake_s, 1)},
        "model": {"version": served["model_version"], "members": list(params.train.members),
                  "sequence_length": served["sequence_length"], "sequence_exog": served.get("sequence_exog", []),
                  "input_columns": len(served["feature_columns"]),
                  "trained_on": f"{TRAIN_SYMBOLS} of the symbols, {TRAIN_FOLDS} folds, default architectures and tree "
                                f"counts; networks trained {DEEP_STEPS} steps only (predict cost is one forward "
                                f"pass of the same architecture whatever the training length)",
                  "train_seconds": round(train_s, 1)},
        "service": {"cold_start_to_ready_seconds": round(ready_s, 1), "history_bars": params.serving.history_bars,
                    "client": "httpx, one keep-alive connection, sequential requests over loopback",
                    "as_of": "the newest bar (as the executor asks); batch_new_bar: a different bar per request"},
        "http": http,
        "http_floor": floor,
        "in_process": in_process,
        "ratio_http_to_in_process": ratios,
        "in_process_answer_equals_http": same_answer,
        "load_average_1m": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
        "bench_seconds": round(time.perf_counter() - started, 1),
    }


def _in_process(paths, params, version: str, work: dict, http_answer: dict) -> tuple[dict, bool]:
    """The same engine, model version and lake, called directly (no HTTP, no JSON)."""
    import mlflow
    from mlflow import MlflowClient

    from serving.champion import load_model_version
    from serving.engine import SignalEngine

    mlflow.set_tracking_uri(paths.tracking_uri)  # load_model resolves models:/ through the fluent URIs
    mlflow.set_registry_uri(paths.tracking_uri)
    client = MlflowClient(tracking_uri=paths.tracking_uri, registry_uri=paths.tracking_uri)
    model = load_model_version(client, params.train.model_name, version)
    engine = SignalEngine(paths.raw, params.serving, params.signal)
    gc.collect()  # as the service does after its first load (serving.service._freeze_heap)
    gc.freeze()

    def direct(body: dict):
        signals, _ = engine.signals(model, body["symbols"], body["as_of"])

        def check() -> None:
            if len(signals) != len(body["symbols"]):
                raise RuntimeError(f"{len(signals)} signals for {len(body['symbols'])} symbols")
        return check

    try:
        measured = _measure(direct, work)
        body = work["batch"][0]
        signals, _ = engine.signals(model, body["symbols"], body["as_of"])
    finally:
        gc.unfreeze()
    return measured, bool(http_answer["signals"] == signals)


if __name__ == "__main__":  # python -m bench.serving
    import json

    print(json.dumps(run(), indent=2))
