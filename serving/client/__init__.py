"""The client library and its command line.

    from serving.client import ServingClient

    with ServingClient("localhost:8500", timeout_seconds=5) as client:
        client.classify_sentences("sst2_bilstm", ["a good movie"])[0].label

    serving_client.py   ServingClient and its result types, through the official TF Serving stubs
    connection.py       TLS files, bearer token and the connection flags every client command takes
    cli.py              rnn-zoo-client

The library's names are imported on first use: it imports gRPC and the TF
Serving protos, which import TensorFlow, and this `__init__` runs before
`rnn-zoo-client --help`.
"""

from serving._lazy import lazy_exports

# Shared by the library and the command line's defaults.
DEFAULT_TARGET = "localhost:8500"
DEFAULT_TIMEOUT_SECONDS = 10.0

_EXPORTS = {name: "serving.client.serving_client" for name in (
    "PredictResult", "SentenceClassification", "ServingClient", "ServingClientError", "TextScore", "VersionState",
    "make_model_spec")}
__all__ = ["DEFAULT_TARGET", "DEFAULT_TIMEOUT_SECONDS", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
