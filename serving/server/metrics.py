"""Prometheus metrics of the model server, exported on `--monitoring_port`.

A private registry keeps the page to the server's own series (plus process
metrics), so tests and scrapers see the same thing in every process.
"""

import logging
import threading

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

logger = logging.getLogger(__name__)

# Requests naming a model that is not configured share one label value, so a
# client sending random names cannot grow the number of series without bound.
UNKNOWN_MODEL_LABEL = "<unknown>"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    """The server's counters and histograms.

    Series (all prefixed `rnn_zoo_serving_`):
        requests_total{model, api, code}: requests answered, by gRPC/REST API and status code.
        request_latency_seconds{model, api}: wall time per request.
        batch_size{model, signature}: rows per merged run of the batcher.
        batch_requests{model, signature}: requests per merged run.
        model_loads_total{model, outcome}: version loads that succeeded or failed.
        model_versions_available{model}: versions serving now.
        batch_queued_requests: requests waiting in the batch queues, not yet running.

    Args:
        registry: Where the series live; a new private registry by default.
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        prometheus_client.ProcessCollector(registry=self.registry)
        prefix = "rnn_zoo_serving_"
        self.requests = Counter(prefix + "requests", "Requests answered, by model, API and status code.",
                                ["model", "api", "code"], registry=self.registry)
        self.request_latency = Histogram(prefix + "request_latency_seconds", "Request wall time in seconds.",
                                         ["model", "api"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram(prefix + "batch_size", "Rows per merged batch run.",
                                    ["model", "signature"], buckets=_BATCH_SIZE_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram(prefix + "batch_requests", "Requests per merged batch run.",
                                        ["model", "signature"], buckets=_BATCH_SIZE_BUCKETS, registry=self.registry)
        self.model_loads = Counter(prefix + "model_loads", "Model version loads, by outcome.",
                                   ["model", "outcome"], registry=self.registry)
        self.available_versions = Gauge(prefix + "model_versions_available", "Versions serving now.",
                                        ["model"], registry=self.registry)
        self.batch_queued_requests = Gauge(prefix + "batch_queued_requests",
                                           "Requests waiting in the batch queues, not yet running.",
                                           registry=self.registry)
        self._http_server = None
        self._http_thread: threading.Thread | None = None

    def observe_request(self, model: str, known_model: bool, api: str, code: str, seconds: float) -> None:
        """Counts a request; `known_model` says whether `model` is configured (else it is not a label)."""
        model = model if known_model else UNKNOWN_MODEL_LABEL
        self.requests.labels(model=model, api=api, code=code).inc()
        self.request_latency.labels(model=model, api=api).observe(seconds)

    def observe_batch(self, model: str, signature: str, rows: int, requests: int) -> None:
        self.batch_size.labels(model=model, signature=signature).observe(rows)
        self.batch_requests.labels(model=model, signature=signature).observe(requests)

    def set_queued_requests(self, count: int) -> None:
        self.batch_queued_requests.set(count)

    def set_available_versions(self, model: str, count: int) -> None:
        self.available_versions.labels(model=model).set(count)

    def exposition(self) -> bytes:
        """The metrics page in Prometheus text format."""
        return prometheus_client.generate_latest(self.registry)

    def start_http_server(self, port: int, host: str = "0.0.0.0") -> None:
        """Serves `/metrics` on a port in a background thread."""
        self._http_server, self._http_thread = prometheus_client.start_http_server(
            port, addr=host, registry=self.registry)
        logger.info("Prometheus metrics at http://%s:%d/metrics", host, port)

    def stop_http_server(self) -> None:
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
