"""SavedModel warm-up (`--enable_model_warmup`), as TF Serving does it.

A version may carry sample requests in `assets.extra/tf_serving_warmup_requests`:
a TFRecord file of `tensorflow.serving.PredictionLog` records. With the flag,
each record's request is run on the freshly loaded version before it becomes
AVAILABLE, so that TensorFlow's lazy work (tracing, graph optimisation, the
first allocation of each kernel) is done before any client waits for it; the
first real requests then answer in their usual time instead of running into
their deadline.

The rules are TF Serving's (servables/tensorflow/saved_model_warmup.cc and
saved_model_warmup_util.cc): no file is fine; predict, classify, regress and
multi-inference logs are run, each `num_request_iterations` times; a session
run log is UNIMPLEMENTED; more than 1000 records, a record that is not a
PredictionLog, a file that is not TFRecord, or a request that fails, fails the
load, and the version never serves.
"""

import logging
import pathlib
import time

import grpc
from tensorflow_serving.apis import prediction_log_pb2

from serving.protocol import errors
from serving.protocol.errors import ServingError, invalid_argument
from serving.server.servable import Servable

logger = logging.getLogger(__name__)

# tensorflow/cc/saved_model/constants.h (kSavedModelAssetsExtraDirectory) and
# saved_model_warmup_util.h (WarmupConsts).
ASSETS_EXTRA_DIRECTORY = "assets.extra"
WARMUP_REQUESTS_FILE_NAME = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


class _OneServable:
    """Stands in for the ModelManager during warm-up: every request gets the version being loaded.

    TF Serving runs warm-up requests on the bundle it is loading, whatever
    model name or version they spell (the version is not serving yet).
    """

    def __init__(self, servable: Servable):
        self._servable = servable

    def resolve(self, model_spec) -> Servable:
        return self._servable

    def is_known_model(self, name: str) -> bool:
        return name == self._servable.name


def warmup_requests_path(version_path: pathlib.Path) -> pathlib.Path:
    """`<version>/assets.extra/tf_serving_warmup_requests`."""
    return pathlib.Path(version_path) / ASSETS_EXTRA_DIRECTORY / WARMUP_REQUESTS_FILE_NAME


def run_saved_model_warmup(servable: Servable, num_request_iterations: int = 1,
                           max_batch_size: int = 1024, method_name_check: bool = False) -> int:
    """Replays a version's warm-up records on it (before it is marked AVAILABLE).

    Args:
        servable: The version just loaded.
        num_request_iterations: Runs of each record (`--num_request_iterations_for_warmup`).
        max_batch_size: `--max_batch_size`, applied as to any request.
        method_name_check: `--enable_signature_method_name_check`.

    Returns:
        The number of records replayed (0 when the version has no warm-up file).

    Raises:
        ServingError: Why warm-up failed (the load fails with it).
    """
    from serving.server.prediction_service import InferenceService  # imports this module's neighbours

    path = warmup_requests_path(servable.path)
    if not path.is_file():
        logger.info("No warmup data file found at %s", path)
        return 0
    inference = InferenceService(_OneServable(servable), batcher=None, max_batch_size=max_batch_size,
                                 method_name_check=method_name_check)
    started = time.monotonic()
    count = 0
    for record in _tfrecords(path):
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except Exception:  # protobuf's DecodeError, or a RuntimeWarning-turned-error
            raise invalid_argument(f"Failed to parse warmup record {count + 1} from {path}: it is not a "
                                   "tensorflow.serving.PredictionLog") from None
        for _ in range(max(1, num_request_iterations)):
            _run_record(inference, servable, log)
        count += 1
        if count > MAX_WARMUP_RECORDS:  # saved_model_warmup_util.cc: counted after the record ran, as there
            raise invalid_argument(f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}")
    logger.info("Finished reading warmup data for model at %s. Number of warmup records read: %d. "
                "Elapsed time: %.3f s.", path, count, time.monotonic() - started)
    return count


def _tfrecords(path: pathlib.Path):
    """Yields the records of a TFRecord file; a file that is not TFRecord is DATA_LOSS, worded as TF Serving."""
    import tensorflow as tf

    try:
        for record in tf.data.TFRecordDataset(str(path)):
            yield record.numpy()
    except tf.errors.DataLossError as error:
        raise ServingError(grpc.StatusCode.DATA_LOSS,
                           f"{errors.clean_tensorflow_message(error.message)}. Please verify your warmup data is "
                           f"in TFRecord format.") from None
    except tf.errors.OpError as error:
        raise errors.from_exception(error) from None


def _run_record(inference, servable: Servable, log: prediction_log_pb2.PredictionLog) -> None:
    """Runs one record's request (saved_model_warmup.cc, RunWarmupRequest)."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = _with_model_spec(log.predict_log.request, servable)
        inference.predict(request)
    elif kind == "classify_log":
        inference.classify(_with_model_spec(log.classify_log.request, servable))
    elif kind == "regress_log":
        inference.regress(_with_model_spec(log.regress_log.request, servable))
    elif kind == "multi_inference_log":
        request = log.multi_inference_log.request
        for task in request.tasks:
            if not task.model_spec.name:
                task.model_spec.name = servable.name
        inference.multi_inference(request)
    elif kind == "session_run_log":
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")
    # Any other kind (none, or one TF Serving does not replay) is skipped, as there.


def _with_model_spec(request, servable: Servable):
    """The request, given the version's model name when it names none (warm-up ignores the name anyway)."""
    if not request.HasField("model_spec"):
        request.model_spec.name = servable.name
    return request
