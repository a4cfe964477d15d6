"""The service's own Prometheus metrics, next to BentoML's defaults on ``/metrics``.

``prometheus_client`` is imported inside ``ServingMetrics()`` (called from the
service's ``__init__`` in the worker): BentoML sets PROMETHEUS_MULTIPROC_DIR
when the worker starts, after the service module is imported, and a client
imported earlier would write to a registry that ``/metrics`` never reads.

Every series carries ``model_version`` so a dashboard separates the champion
before and after a switch ("none" while no champion is loaded).
"""

from __future__ import annotations

PROB_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (1.0,)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServingMetrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter("qt_serving_requests", "Requests answered, by endpoint, model and HTTP status",
                                ["endpoint", "model_version", "status"])
        self.latency = Histogram("qt_serving_request_latency_seconds", "Handler time per request",
                                 ["endpoint", "model_version"], buckets=LATENCY_BUCKETS)
        self.prob_up = Histogram("qt_serving_prob_up", "prob_up of every signal served",
                                 ["model_version"], buckets=PROB_BUCKETS)
        self.reloads = Counter("qt_serving_model_reloads", "Champion versions published (the first load and every switch)",
                               ["model_version"])
        self.registry_errors = Counter("qt_serving_registry_errors",
                                       "Failed registry polls or champion loads")

    def observe_request(self, endpoint: str, model_version: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, model_version=model_version, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint, model_version=model_version).observe(seconds)

    def observe_probabilities(self, model_version: str, probs) -> None:
        hist = self.prob_up.labels(model_version=model_version)
        for p in probs:
            hist.observe(float(p))
