"""One loaded version of a model: its SignatureDefs, as TF Serving reads them, and its callable signatures."""

import pathlib

import grpc
import tensorflow as tf
from google.protobuf import message as protobuf_message
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.protocol import errors
from serving.protocol.errors import ServingError, not_found
from serving.server.batching import SignatureBatchingPlan

DEFAULT_SIGNATURE_NAME = "serving_default"
SERVE_TAG = "serve"


class Servable:
    """One loaded version of a model: its signature defs and callable signatures.

    The SignatureDefs come from `saved_model.pb` itself, as TF Serving reads
    them, so metadata, method names (Classify) and input checks see exactly
    what the exporter wrote; the callables come from `tf.saved_model.load`.

    Args:
        name: Model name.
        version: Version number.
        path: The version directory.
        signature_defs: Every SignatureDef of the `serve` MetaGraph.
        functions: Signature name -> concrete function.
    """

    def __init__(self, name: str, version: int, path: pathlib.Path,
                 signature_defs: dict[str, meta_graph_pb2.SignatureDef], functions: dict, loaded: object):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = signature_defs
        self._functions = functions
        self._loaded = loaded  # keeps variables and tables of the functions alive
        self._batching_plans = {key: SignatureBatchingPlan.from_signature_def(signature)
                                for key, signature in signature_defs.items()}

    @classmethod
    def load(cls, name: str, version: int, path: pathlib.Path) -> "Servable":
        """Loads a SavedModel version directory.

        Raises:
            ServingError: Why the version cannot be served (missing or corrupt
                files, no `serve` MetaGraph, a TensorFlow load error).
        """
        meta_graph = _read_serving_meta_graph(path)
        try:
            loaded = tf.saved_model.load(str(path), tags=[SERVE_TAG])
        except Exception as error:  # TensorFlow raises many types for broken exports
            raise errors.from_exception(error) from None
        functions = {}
        for key in meta_graph.signature_def:
            if key.startswith("__"):  # __saved_model_init_op: not callable, listed in metadata only
                continue
            if key not in loaded.signatures:
                raise errors.internal(f"Signature {key} of {path} has no function in the SavedModel")
            functions[key] = loaded.signatures[key]
        return cls(name, version, path, dict(meta_graph.signature_def), functions, loaded)

    def signature(self, signature_name: str) -> meta_graph_pb2.SignatureDef:
        """Returns a callable signature's def.

        Raises:
            ServingError: FAILED_PRECONDITION as TF Serving words it.
        """
        signature_name = signature_name or DEFAULT_SIGNATURE_NAME
        if signature_name not in self._functions:
            raise errors.failed_precondition(f"Serving signature key \"{signature_name}\" not found.")
        return self.signature_defs[signature_name]

    def batching_plan(self, signature_name: str) -> SignatureBatchingPlan:
        return self._batching_plans[signature_name]

    def run(self, signature_name: str, inputs: dict) -> dict:
        """Runs a signature on checked numpy inputs and returns numpy outputs.

        Raises:
            ServingError: TensorFlow's error with its code (a bad index is
                INVALID_ARGUMENT), INTERNAL for anything unexpected.
        """
        function = self._functions[signature_name]
        signature = self.signature_defs[signature_name]
        try:
            tensors = {alias: tf.constant(value, dtype=tf.as_dtype(signature.inputs[alias].dtype))
                       for alias, value in inputs.items()}
            outputs = function(**tensors)
            return {alias: tensor.numpy() for alias, tensor in outputs.items()}
        except UnicodeDecodeError:
            # TensorFlow failed and its message, quoting bytes of the input, is not
            # text (seen for serialized tf.Examples that do not parse).
            raise errors.invalid_argument(
                f"Signature {signature_name} could not use its inputs, and TensorFlow's message about it is not "
                "UTF-8 text: check the inputs (serialized tf.Examples must parse as tensorflow.Example)") from None
        except Exception as error:  # the model's failure becomes this request's error only
            raise errors.from_exception(error) from None

    def __repr__(self) -> str:
        return f"Servable({self.name}, {self.version})"


def _read_serving_meta_graph(path: pathlib.Path) -> meta_graph_pb2.MetaGraphDef:
    binary, text = path / "saved_model.pb", path / "saved_model.pbtxt"
    saved_model = saved_model_pb2.SavedModel()
    try:
        if binary.exists():
            saved_model.ParseFromString(binary.read_bytes())
        elif text.exists():
            text_format.Parse(text.read_text(), saved_model)
        else:
            raise not_found(f"SavedModel file does not exist at: {path}/{{saved_model.pbtxt|saved_model.pb}}")
    except (protobuf_message.DecodeError, text_format.ParseError, UnicodeDecodeError) as error:
        raise ServingError(grpc.StatusCode.DATA_LOSS, f"Could not parse SavedModel at {path}: {error}") from None
    except OSError as error:
        raise ServingError(grpc.StatusCode.UNAVAILABLE, f"Could not read SavedModel at {path}: {error}") from None
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    raise not_found(
        "Could not find meta graph def matching supplied tags: { serve }. To inspect available "
        "tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`")
