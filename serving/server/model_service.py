"""tensorflow.serving.ModelService: GetModelStatus and HandleReloadConfigRequest."""

import logging

from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2, model_service_pb2_grpc

from serving.protocol.errors import invalid_argument
from serving.server.metrics import ServingMetrics
from serving.server.model_config import validate_config
from serving.server.model_manager import ModelManager
from serving.server.prediction_service import handle_rpc

logger = logging.getLogger(__name__)


def model_status_response(manager: ModelManager, request: get_model_status_pb2.GetModelStatusRequest
                          ) -> get_model_status_pb2.GetModelStatusResponse:
    """Builds a GetModelStatusResponse: one row per version, newest first.

    A version that failed to load is in state END with its error in `status`,
    as TF Serving reports it.

    Raises:
        ServingError: INVALID_ARGUMENT without a model spec, NOT_FOUND for an
            unknown model or version.
    """
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    response = get_model_status_pb2.GetModelStatusResponse()
    for row in manager.model_status(request.model_spec):
        version_status = response.model_version_status.add(version=row.version, state=row.state)
        version_status.status.error_code = 0  # TF Serving always fills status; OK unless the load failed
        if row.error is not None:
            version_status.status.error_code = row.error.tensorflow_code
            version_status.status.error_message = row.error.message
    return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """gRPC `tensorflow.serving.ModelService`.

    Args:
        manager: The ModelManager to report on and reconfigure.
        metrics: Optional ServingMetrics.
    """

    def __init__(self, manager: ModelManager, metrics: ServingMetrics | None = None):
        self._manager = manager
        self._metrics = metrics

    def GetModelStatus(self, request, context):
        return handle_rpc("GetModelStatus", request.model_spec.name, context,
                          get_model_status_pb2.GetModelStatusResponse(),
                          lambda: model_status_response(self._manager, request), self._metrics, self._manager)

    def HandleReloadConfigRequest(self, request, context):
        def reload():
            validate_config(request.config)
            names = [entry.name for entry in request.config.model_config_list.config]
            logger.info("Reloading the model config: %s", ", ".join(names) or "no models")
            self._manager.apply_config(request.config)
            return model_management_pb2.ReloadConfigResponse()  # status OK: error_code 0

        return handle_rpc("HandleReloadConfigRequest", "", context, model_management_pb2.ReloadConfigResponse(),
                          reload, self._metrics, None)
