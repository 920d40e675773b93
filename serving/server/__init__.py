"""The model server: TensorFlow Serving's gRPC and REST APIs for the zoo's SavedModels.

    cli.py                  rnn-zoo-serve: flags and main()
    app.py                  serve(): the services on a gRPC server, REST, metrics, graceful shutdown
    prediction_service.py   PredictionService: Predict, Classify, GetModelMetadata
    model_service.py        ModelService: GetModelStatus, HandleReloadConfigRequest
    rest.py                 TF Serving's REST API over the same services
    access.py               bearer tokens, request limits and the gRPC interceptor that applies them
    tls.py                  TLS and mutual TLS from TF Serving's SSLConfig (--ssl_config_file)
    model_config.py         ModelServerConfig from flags, files or a directory; version policies
    model_manager.py        which versions are loaded: polling, loading, unloading, labels
    servable.py             one loaded version and its signatures
    batching.py             dynamic batching: pad, merge, split back
    metrics.py              Prometheus metrics
    launch.py               running_server(): start the server as a real process (demo, notebook, tests)

Importing this package imports the standard library only; the server's
modules import gRPC and TensorFlow.

    from serving.server import running_server

    with running_server(model_base_dir="saved_models") as server:
        client = ServingClient(server.grpc_target)
"""

from serving.server.launch import ServerProcess, free_port, running_server, stop_server, wait_for_health

__all__ = ["ServerProcess", "free_port", "running_server", "stop_server", "wait_for_health"]
