"""One loaded version of a model: its SignatureDefs, as TF Serving reads them, and its callable signatures."""

import logging
import pathlib
from collections.abc import Sequence

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import message as protobuf_message
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.protocol import errors, tensors
from serving.protocol.errors import ServingError, not_found
from serving.server.batching import SignatureBatchingPlan

DEFAULT_SIGNATURE_NAME = "serving_default"
SERVE_TAG = "serve"


class Servable:
    """One loaded version of a model: its signature defs and callable signatures.

    The SignatureDefs come from `saved_model.pb` itself, as TF Serving reads
    them, so metadata, method names (Classify, Regress) and input checks see
    exactly what the exporter wrote. A TF2 SavedModel (one with an object
    graph) runs its signatures through `tf.saved_model.load`; a TF1 one
    (`SavedModelBuilder`, reference variables, `saved_model_half_plus_two`,
    `saved_model_counter`) runs in a `tf.compat.v1.Session`, as TF Serving
    runs every model, so stateful reference variables keep their state
    between requests.

    Args:
        name: Model name.
        version: Version number.
        path: The version directory.
        signature_defs: Every SignatureDef of the loaded MetaGraph.
        functions: Signature name -> callable taking and returning
            {alias: tensor or array} (the callable signatures only).
        loaded: What keeps the functions' variables, tables and session alive.
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
    def load(cls, name: str, version: int, path: pathlib.Path,
             tags: Sequence[str] = (SERVE_TAG,)) -> "Servable":
        """Loads a SavedModel version directory.

        Args:
            tags: The MetaGraph to load, by its tag set (`--saved_model_tags`).

        Raises:
            ServingError: Why the version cannot be served (missing or corrupt
                files, no MetaGraph with these tags, a TensorFlow load error).
        """
        tags = tuple(tags)
        meta_graph = _read_meta_graph(path, tags)
        callable_keys = [key for key in meta_graph.signature_def
                         if not key.startswith("__")]  # __saved_model_init_op: listed in metadata only
        try:
            if meta_graph.object_graph_def.nodes:
                loaded = tf.saved_model.load(str(path), tags=list(tags))
                functions = {}
                for key in callable_keys:
                    if key not in loaded.signatures:
                        raise errors.internal(f"Signature {key} of {path} has no function in the SavedModel")
                    functions[key] = _Tf2Signature(loaded.signatures[key], meta_graph.signature_def[key])
            else:
                loaded = _Tf1Session(path, tags)
                functions = {key: loaded.signature(meta_graph.signature_def[key]) for key in callable_keys}
        except ServingError:
            raise
        except Exception as error:  # TensorFlow raises many types for broken exports
            raise errors.from_exception(error) from None
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
        try:
            return function(inputs)
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


def _read_meta_graph(path: pathlib.Path, tags: Sequence[str]) -> meta_graph_pb2.MetaGraphDef:
    """Reads `saved_model.pb` (or `.pbtxt`) and returns the MetaGraph whose tag set is exactly `tags`.

    Raises:
        ServingError: NOT_FOUND for a missing file or tag set, DATA_LOSS for a
            corrupt one, UNAVAILABLE when it cannot be read.
    """
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
    for meta_graph in saved_model.meta_graphs:  # TensorFlow's loader matches the tag set exactly
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    # Worded as TensorFlow's SavedModel loader (tensorflow/cc/saved_model/loader_util / reader.cc).
    available = "; ".join("{ " + " ".join(meta_graph.meta_info_def.tags) + " }"
                          for meta_graph in saved_model.meta_graphs)
    raise not_found(
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(tags)} }}. To inspect available "
        f"tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli` (this one has: "
        f"{available or 'none'}; choose with --saved_model_tags)")


class _Tf2Signature:
    """A TF2 signature function called with numpy inputs, returning numpy outputs.

    Inputs are given the signature's dtypes; their shapes are passed as they
    came, so the function's graph decides whether it can use them.
    """

    def __init__(self, function, signature: meta_graph_pb2.SignatureDef):
        self._function = function
        self._dtypes = {alias: tf.as_dtype(info.dtype) for alias, info in signature.inputs.items()}

    def __call__(self, inputs: dict) -> dict:
        feeds = {alias: tf.constant(value, dtype=self._dtypes[alias]) for alias, value in inputs.items()}
        outputs = self._function(**feeds)
        return {alias: tensor.numpy() for alias, tensor in outputs.items()}


class _Tf1Session:
    """A TF1 SavedModel loaded into its own graph and `tf.compat.v1.Session`, as TF Serving loads every model.

    `loader.load` restores the variables (reference variables included) and
    runs the main/legacy init op (tables); each signature becomes a session
    callable feeding its inputs' tensor names and fetching its outputs'. A
    callable, like TF Serving's C++ `Session::Run`, feeds any shape and lets
    the graph's kernels decide; state held in variables (`saved_model_counter`)
    persists between calls, as there.
    """

    def __init__(self, path: pathlib.Path, tags: Sequence[str]):
        from tensorflow.python.saved_model import loader_impl  # the v1 loader without its deprecation notice

        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        tensorflow_logger = logging.getLogger("tensorflow")
        level = tensorflow_logger.level
        tensorflow_logger.setLevel(max(level, logging.WARNING))  # no "Restoring parameters from ..." per load
        try:
            with self.graph.as_default():
                loader_impl.SavedModelLoader(str(path)).load(self.session, list(tags))
        finally:
            tensorflow_logger.setLevel(level)

    def signature(self, signature: meta_graph_pb2.SignatureDef):
        """The callable running one SignatureDef: {input alias: array} -> {output alias: array}."""
        input_aliases = sorted(signature.inputs)
        output_aliases = sorted(signature.outputs)
        dtypes = {alias: tensors.numpy_dtype(signature.inputs[alias].dtype) for alias in input_aliases}
        with self.graph.as_default():
            run = self.session.make_callable([signature.outputs[alias].name for alias in output_aliases],
                                             feed_list=[signature.inputs[alias].name for alias in input_aliases])

        def call(inputs: dict) -> dict:
            values = [np.asarray(inputs[alias], dtype=dtypes[alias]) for alias in input_aliases]
            return {alias: np.asarray(value) for alias, value in zip(output_aliases, run(*values))}

        return call

    def close(self) -> None:
        self.session.close()
