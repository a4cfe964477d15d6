"""BentoML service that serves the registry's champion as trading signals.

Run: ``bentoml serve serving.service:SignalService --host 127.0.0.1 --port 3000``
from the project root (or ``serving.launcher.ServiceProcess``, used by ``qt serve``).

Endpoints (Service HTTP contract):

* ``POST /signals`` ``{"symbols": [...], "as_of": ISO time | null}`` -> one signal per
  symbol from the features of the last bar with open time <= as_of.
* ``POST /predict`` ``{"rows": [{feature: value}, ...]}`` -> raw model output.
* ``GET``/``POST /metadata`` -> which model decides and on what data it was trained.
* ``GET /readyz`` -> 200 only while a champion is loaded; ``/metrics`` -> Prometheus.

Settings are read once, in ``__init__``, from the environment (see
``serving.settings``). There is no path that answers without the champion:
until it is loaded ``/signals`` and ``/predict`` answer 503 saying why.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

import bentoml
from fastapi import FastAPI
from starlette.responses import JSONResponse

from qt.errors import DataError
from serving.champion import ChampionWatcher, LoadedModel, ModelContractError
from serving.inference import (RequestRejected, check_symbols, compute_signals, min_history_bars, parse_as_of,
                               parse_predict_rows, select_inputs, select_windows)

log = logging.getLogger("qt.serving")

# Plain GET routes (BentoML APIs are POST-only); class views get `self` injected by BentoML.
_http_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@bentoml.asgi_app(_http_app, path="/")
@bentoml.service(name="qt_signals", workers=1, traffic={"timeout": 60})
class SignalService:
    """Champion-backed signal service; the champion is hot-swapped by a registry watcher."""

    def __init__(self) -> None:
        import mlflow
        from mlflow import MlflowClient

        from serving.candles import CandleCache, FundingCache
        from serving.champion import load_model_version, resolve_champion_version
        from serving.metrics import ServingMetrics
        from serving.settings import ServingSettings

        _ensure_log_handler()
        self.settings = ServingSettings.from_environ(os.environ)
        self.metrics = ServingMetrics()
        mlflow.set_tracking_uri(self.settings.tracking_uri)
        mlflow.set_registry_uri(self.settings.registry_uri)
        client = MlflowClient(tracking_uri=self.settings.tracking_uri, registry_uri=self.settings.registry_uri)
        name = self.settings.model_name
        self._caches: dict[str, CandleCache] = {}
        self._cache_factory = lambda tf: CandleCache(self.settings.lake, tf)
        self._funding = FundingCache(self.settings.lake)
        self.watcher = ChampionWatcher(
            resolve=lambda: resolve_champion_version(client, name),
            load=lambda version: load_model_version(client, name, version),
            interval_s=self.settings.reload_interval_s,
            model_name=name,
            on_switch=self._on_switch,
            on_poll_error=lambda: self.metrics.registry_errors.inc(),
        )
        log.info("serving %s@champion from %s (lake %s, poll every %.1fs)", name,
                 self.settings.registry_uri, self.settings.lake, self.settings.reload_interval_s)
        self.watcher.poll_once()  # load the champion before the first request if it exists
        self.watcher.start()

    def __is_ready__(self) -> bool:
        return self.watcher.current is not None

    @bentoml.on_shutdown
    def stop_watcher(self) -> None:
        self.watcher.stop()

    # ------------------------------------------------------------------ endpoints

    @bentoml.api(route="/signals")
    def signals(self, symbols: list[str], as_of: str | None = None) -> dict:
        """Signals for ``symbols`` at ``as_of`` (null = the newest candle in the lake)."""
        return self._answer("signals", lambda model: self._signals(model, symbols, as_of))

    @bentoml.api(route="/predict")
    def predict(self, rows: list[dict[str, float]]) -> dict:
        """Raw champion output for rows of feature values (exactly the model's feature columns)."""
        return self._answer("predict", lambda model: self._predict(model, rows))

    @bentoml.api(route="/metadata")
    def metadata(self) -> dict:
        """Name, version, alias, feature set and training range of the served champion."""
        return self._answer("metadata", lambda model: model.describe())

    @_http_app.get("/metadata")
    def metadata_get(self):
        return self._answer("metadata", lambda model: model.describe())

    # ------------------------------------------------------------------ internals

    def _signals(self, model: LoadedModel, symbols: list[str], as_of: str | None) -> dict:
        from features.compute import warmup_bars
        from qt.synthetic import timeframe_ms

        wanted = check_symbols(symbols)
        when = parse_as_of(as_of)
        warmup = warmup_bars(model.feature_params)
        serving = self.settings.params.serving
        cache = self._cache(model.timeframe)
        need = min_history_bars(warmup, model.sequence_length)
        windows, _ = select_windows(cache, wanted, when, bars=max(serving.history_bars, need), warmup_bars=warmup,
                                    timeframe_ms=timeframe_ms(model.timeframe),
                                    max_staleness_bars=serving.max_staleness_bars,
                                    sequence_length=model.sequence_length)
        funding, reference = select_inputs(cache, self._funding, windows, model.feature_params)
        signals, probs = compute_signals(windows, model, self.settings.params.signal, funding, reference)
        self.metrics.observe_probabilities(model.version, probs)
        return {"model_version": model.version, "signals": signals}

    def _predict(self, model: LoadedModel, rows: list[dict[str, float]]) -> dict:
        frame = parse_predict_rows(rows, model.feature_columns)
        out = model.predict(frame)
        self.metrics.observe_probabilities(model.version, out["prob_up"].to_numpy())
        return {"model_version": model.version,
                "predictions": [{"prob_up": float(p), "expected_return": float(e)}
                                for p, e in zip(out["prob_up"], out["expected_return"])]}

    def _answer(self, endpoint: str, handle: Callable[[LoadedModel], dict]):
        """Run ``handle`` with the champion taken ONCE (a reload mid-request cannot mix models)."""
        started = time.perf_counter()
        model = self.watcher.current
        version = model.version if model is not None else "none"
        if model is None:
            status, body = 503, {"error": f"no champion loaded: {self.watcher.why_not_ready}",
                                 "model_name": self.settings.model_name}
        else:
            try:
                status, body = 200, handle(model)
            except RequestRejected as exc:
                status, body = exc.status, {"error": exc.message}
            except (ModelContractError, DataError) as exc:
                log.error("%s failed: %s", endpoint, exc)
                status, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
            except Exception as exc:  # noqa: BLE001 - answer 500 with the type, log the traceback
                log.exception("%s failed", endpoint)
                status, body = 500, {"error": f"internal error ({type(exc).__name__}); see the service log"}
        self.metrics.observe_request(endpoint, version, status, time.perf_counter() - started)
        return body if status == 200 else JSONResponse(body, status_code=status)

    def _cache(self, timeframe: str):
        cache = self._caches.get(timeframe)
        if cache is None:
            cache = self._caches.setdefault(timeframe, self._cache_factory(timeframe))
        return cache

    def _on_switch(self, old: LoadedModel | None, new: LoadedModel) -> None:
        """Count every publication (the watcher logs it); ``old`` is None at the first load."""
        self.metrics.reloads.labels(model_version=new.version).inc()
        if new.timeframe != self.settings.params.data.timeframe:
            log.warning("champion v%s was trained on %s candles but params say data.timeframe=%s; "
                        "serving it on %s candles (the model's)", new.version, new.timeframe,
                        self.settings.params.data.timeframe, new.timeframe)


def _ensure_log_handler() -> None:
    """Our switch/refusal lines must reach the service log even if BentoML only configures its own loggers."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
