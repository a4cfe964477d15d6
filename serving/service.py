"""BentoML service that serves the registry's champion as trading signals.

Run: ``bentoml serve serving.service:SignalService --host 127.0.0.1 --port 3000``
from the project root (or ``serving.launcher.ServiceProcess``, used by ``qt serve``).

Endpoints (Service HTTP contract):

* ``POST /signals`` ``{"symbols": [...], "as_of": ISO time | null}`` -> one signal per
  symbol from the features of the last bar with open time <= as_of.
* ``POST /predict`` ``{"rows": [{feature: value}, ...]}`` -> raw model output.
* ``GET``/``POST /metadata`` -> which model decides and on what data it was trained.
* ``GET /readyz`` -> 200 only while a champion is loaded; ``/metrics`` -> Prometheus.

The per-request work of ``/signals`` (lake cache -> feature rows -> one model call) is
``serving.engine.SignalEngine``. Settings are read once, in ``__init__``, from the environment (see
``serving.settings``). There is no path that answers without the champion:
until it is loaded ``/signals`` and ``/predict`` answer 503 saying why.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
import time
from collections.abc import Callable

import anyio
import bentoml
from fastapi import FastAPI
from pydantic_core import to_json
from starlette.responses import Response

from qt.errors import DataError
from serving.champion import ChampionWatcher, LoadedModel, ModelContractError
from serving.engine import RowsNotCached
from serving.inference import RequestRejected, parse_predict_rows
from serving.refresher import Refresher

log = logging.getLogger("qt.serving")

# Plain GET routes (BentoML APIs are POST-only); class views get `self` injected by BentoML.
_http_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


# Tracing: BentoML wraps every request in an OpenTelemetry span, exported nowhere unless an exporter
# is configured (none is: sample rate 0). For /signals that wrapper alone measured ~0.5 ms of a ~6.5 ms
# single-symbol answer over loopback, so /signals is left out; configuring an exporter means
# removing it from ``excluded_urls`` too.
@bentoml.asgi_app(_http_app, path="/")
@bentoml.service(name="qt_signals", workers=1, traffic={"timeout": 60}, tracing={"excluded_urls": ["/signals"]})
class SignalService:
    """Champion-backed signal service; the champion is hot-swapped by a registry watcher."""

    def __init__(self) -> None:
        import mlflow
        from mlflow import MlflowClient

        from serving.champion import load_model_version, resolve_champion_version
        from serving.engine import SignalEngine
        from serving.metrics import ServingMetrics
        from serving.settings import ServingSettings

        _ensure_log_handler()
        self.settings = ServingSettings.from_environ(os.environ)
        self.metrics = ServingMetrics()
        mlflow.set_tracking_uri(self.settings.tracking_uri)
        mlflow.set_registry_uri(self.settings.registry_uri)
        client = MlflowClient(tracking_uri=self.settings.tracking_uri, registry_uri=self.settings.registry_uri)
        name = self.settings.model_name
        self.engine = SignalEngine(self.settings.lake, self.settings.params.serving, self.settings.params.signal,
                                   bybit_lake=self.settings.bybit_lake,
                                   atr_period=self.settings.params.risk.atr_period)
        self._compute_limiter: anyio.CapacityLimiter | None = None  # see ``signals``
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
        _freeze_heap()
        self.watcher.start()
        self.refresher = Refresher(self.engine.refresh_candles,
                                   self.settings.params.serving.lake_refresh_seconds).start()

    def __is_ready__(self) -> bool:
        return self.watcher.current is not None

    @bentoml.on_shutdown
    def stop_watcher(self) -> None:
        self.watcher.stop()
        self.refresher.stop()

    # ------------------------------------------------------------------ endpoints

    @bentoml.api(route="/signals")
    async def signals(self, symbols: list[str], as_of: str | None = None) -> dict:
        """Signals for ``symbols`` at ``as_of`` (null = the newest candle in the lake).

        Why ``async``: BentoML runs a sync API in a worker thread, and the two thread hand-offs
        per request cost ~0.4 ms on this 2-core machine (more under load), a tenth of a
        single-symbol answer. Every request of a bar after the first is answered from cached rows
        in a few ms, so it runs right here on the event loop; only a request that must compute
        features (the first of a bar: ~0.15 s for 566 symbols, ``serving.newbar``) goes to a worker thread, one at
        a time, leaving the loop free for health probes and ``/metrics``.
        """
        try:
            return self._answer("signals", lambda model: self._signals(model, symbols, as_of, compute=False))
        except RowsNotCached:
            if self._compute_limiter is None:  # created on the event loop (anyio needs one running)
                self._compute_limiter = anyio.CapacityLimiter(1)
            return await anyio.to_thread.run_sync(
                functools.partial(self._answer, "signals", lambda model: self._signals(model, symbols, as_of)),
                limiter=self._compute_limiter)

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

    def _signals(self, model: LoadedModel, symbols: list[str], as_of: str | None, compute: bool = True) -> dict:
        signals, probs = self.engine.signals(model, symbols, as_of, compute)
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
            except RowsNotCached:
                raise  # not an answer: the caller computes the rows elsewhere (``signals``)
            except RequestRejected as exc:
                status, body = exc.status, {"error": exc.message}
            except (ModelContractError, DataError) as exc:
                log.error("%s failed: %s", endpoint, exc)
                status, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
            except Exception as exc:  # noqa: BLE001 - answer 500 with the type, log the traceback
                log.exception("%s failed", endpoint)
                status, body = 500, {"error": f"internal error ({type(exc).__name__}); see the service log"}
        self.metrics.observe_request(endpoint, version, status, time.perf_counter() - started)
        return _json_response(body, status)

    def _on_switch(self, old: LoadedModel | None, new: LoadedModel) -> None:
        """Count every publication (the watcher logs it); ``old`` is None at the first load."""
        self.metrics.reloads.labels(model_version=new.version).inc()
        log.info("champion v%s: /signals calls the model %s", new.version,
                 "directly (answers its input example identically without MLflow's schema check)"
                 if new.direct is not None else "through MLflow's schema check (no proof it may skip it)")
        if new.timeframe != self.settings.params.data.timeframe:
            log.warning("champion v%s was trained on %s candles but params say data.timeframe=%s; "
                        "serving it on %s candles (the model's)", new.version, new.timeframe,
                        self.settings.params.data.timeframe, new.timeframe)


def _json_response(body: dict, status: int) -> Response:
    """The body as a ready JSON response (compact, as BentoML would write it). BentoML passes a
    Response through untouched; for a plain ``dict`` it would rebuild the output model's JSON
    schema on every request only to learn the media type (~1 ms a request here)."""
    return Response(to_json(body), status_code=status, media_type="application/json")


def _freeze_heap() -> None:
    """Move everything alive at start-up (the imported libraries and the first champion: ~600k
    objects) out of the cyclic garbage collector's reach. Otherwise every full collection walks
    them all - measured 350 ms on this machine - a pause landing on whichever request allocated
    last. Done once, before serving: a later champion is a few thousand objects, and freezing at a
    switch would also pin the replaced model for ever."""
    gc.collect()
    gc.freeze()


def _ensure_log_handler() -> None:
    """Our switch/refusal lines must reach the service log even if BentoML only configures its own loggers."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
