"""Prometheus metrics of the model server, exported on `--monitoring_port`.

A private registry keeps the page to the server's own series (plus process
metrics), so tests and scrapers see the same thing in every process.
"""

import dataclasses
import logging
import os
import pathlib
import threading

import prometheus_client
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
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


# === --monitoring_config_file ===

# TF Serving's PrometheusExporter::kPrometheusPath (util/prometheus_exporter.cc).
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def _monitoring_config_class():
    """`tensorflow.serving.MonitoringConfig` (tensorflow_serving/config/monitoring_config.proto).

    The tensorflow-serving-api package does not ship this config proto, so it
    is built here from its definition (same package, messages, field names
    and numbers), and TF Serving's monitoring files parse the same.
    """
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="tensorflow_serving/config/monitoring_config.proto",
                                              package="tensorflow.serving", syntax="proto3")
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                         type_name=".tensorflow.serving.PrometheusConfig")
    pool = descriptor_pool.DescriptorPool()  # its own pool: no clash should a package ever ship it
    pool.AddSerializedFile(file.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


MonitoringConfig = _monitoring_config_class()


@dataclasses.dataclass(frozen=True)
class PrometheusSettings:
    """Where the REST port serves the Prometheus page: `path`, or nowhere when not `enabled`."""

    enabled: bool = True
    path: str = DEFAULT_PROMETHEUS_PATH


def read_monitoring_config_file(path: os.PathLike) -> PrometheusSettings:
    """Reads `--monitoring_config_file` (a MonitoringConfig text proto), as TF Serving reads it.

    An empty `path` means TF Serving's default path.

    Raises:
        ValueError: The file cannot be read or parsed (worded as TF Serving's
            ParseProtoTextFile), or its path does not start with "/".
    """
    config = MonitoringConfig()
    try:
        text_format.Parse(pathlib.Path(path).read_text(encoding="utf-8"), config)
    except (OSError, UnicodeDecodeError, text_format.ParseError) as error:
        raise ValueError(f"Invalid protobuf file: '{path}' ({error})") from None
    prometheus = config.prometheus_config
    metrics_path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if not metrics_path.startswith("/"):
        raise ValueError(f"{path}: prometheus_config.path must start with '/', got {metrics_path!r}")
    return PrometheusSettings(enabled=prometheus.enable, path=metrics_path)
