"""tensorflow.serving.ModelService: GetModelStatus and HandleReloadConfigRequest."""

import logging
import os
import pathlib
from collections.abc import Sequence

import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2, model_service_pb2_grpc

from serving.protocol.errors import ServingError, invalid_argument
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


def check_base_paths_allowed(config, allowed_base_paths: Sequence[os.PathLike]) -> None:
    """Refuses a config naming a model outside the directories the operator allowed.

    A SavedModel is a program: a reload that could name any path would let a
    caller run any graph on the server's disk. Paths are compared after
    resolving symbolic links and `..`, so neither leads out of an allowed
    directory.

    Raises:
        ServingError: PERMISSION_DENIED naming the model, the allowed
            directories and `--allowed_model_base_paths`.
    """
    allowed = [pathlib.Path(os.path.realpath(path)) for path in allowed_base_paths]
    for entry in config.model_config_list.config:
        resolved = pathlib.Path(os.path.realpath(pathlib.Path(entry.base_path).expanduser().absolute()))
        if not any(resolved == root or resolved.is_relative_to(root) for root in allowed):
            raise ServingError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Model {entry.name}: base path {entry.base_path} is not under a directory this server may load "
                f"models from ({', '.join(map(str, allowed)) or 'none'}); the operator allows more with "
                "--allowed_model_base_paths")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """gRPC `tensorflow.serving.ModelService`.

    Args:
        manager: The ModelManager to report on and reconfigure.
        metrics: Optional ServingMetrics.
        allowed_base_paths: Directories a reload may load models from (with
            everything under them); None allows any path.
        reload_enabled: False answers every HandleReloadConfigRequest with
            PERMISSION_DENIED (`--disable_reload_config`).
    """

    def __init__(self, manager: ModelManager, metrics: ServingMetrics | None = None,
                 allowed_base_paths: Sequence[os.PathLike] | None = None, reload_enabled: bool = True):
        self._manager = manager
        self._metrics = metrics
        self._allowed_base_paths = allowed_base_paths
        self._reload_enabled = reload_enabled

    def GetModelStatus(self, request, context):
        return handle_rpc("GetModelStatus", request.model_spec.name, context,
                          get_model_status_pb2.GetModelStatusResponse(),
                          lambda: model_status_response(self._manager, request), self._metrics, self._manager)

    def HandleReloadConfigRequest(self, request, context):
        def reload():
            try:
                if not self._reload_enabled:
                    raise ServingError(grpc.StatusCode.PERMISSION_DENIED,
                                       "HandleReloadConfigRequest is switched off on this server "
                                       "(--disable_reload_config); its models come from its command line")
                if self._allowed_base_paths is not None:
                    check_base_paths_allowed(request.config, self._allowed_base_paths)
            except ServingError as error:  # worth the operator's attention: someone tried
                logger.warning("Refused HandleReloadConfigRequest from %s: %s", context.peer(), error.message)
                raise
            validate_config(request.config)
            names = [entry.name for entry in request.config.model_config_list.config]
            logger.info("Reloading the model config: %s", ", ".join(names) or "no models")
            self._manager.apply_config(request.config)
            return model_management_pb2.ReloadConfigResponse()  # status OK: error_code 0

        return handle_rpc("HandleReloadConfigRequest", "", context, model_management_pb2.ReloadConfigResponse(),
                          reload, self._metrics, None)
