"""Warm-up requests written into every export, in TensorFlow Serving's format.

A version's first request pays for TensorFlow's lazy work: graph optimisation
of each signature on its first call, the first allocation of every kernel. On
this CPU that is one to several seconds per signature, enough for a client's
first call to run past its deadline. TF Serving's answer is a file of sample
requests, `assets.extra/tf_serving_warmup_requests` (a TFRecord of
`tensorflow.serving.PredictionLog`), that a server replays before it marks the
version AVAILABLE. Our server does (`serving.server.warmup`, on by default as
`--enable_model_warmup` is in TF Serving), and so does TF Serving's own.

The export writes one small request per signature (a Classify request for the
classifier's `classify`, Predict for every other), made from the model's own
vocabulary so that every lookup hits a real entry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2

ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"  # TF Serving's WarmupConsts::kRequestsFileName
CLASSIFY_SIGNATURE = "classify"
FIRST_REAL_ID = 2  # ids 0 and 1 are <pad> and <unk> (training.vocab)


def warmup_logs(saved_model_dir: Path, *, model_name: str, task: str, tokens: list[str],
                state_size: int | None = None) -> list[prediction_log_pb2.PredictionLog]:
    """One PredictionLog per callable signature of the SavedModel in `saved_model_dir`.

    Args:
        saved_model_dir: The export, signatures saved already.
        model_name: The name the requests carry (a server ignores it in warm-up).
        task: "language_model", "classifier" or "tagger".
        tokens: The vocabulary, `<pad>` and `<unk>` first.
        state_size: A language model's packed state width.

    Raises:
        ValueError: A signature input this module does not know how to fill
            (a new signature needs a sample here).
    """
    words = [token for token in tokens[FIRST_REAL_ID:FIRST_REAL_ID + 3] if token] or ["<unk>"]
    # A character vocabulary's entries are characters: glue them into one word.
    text = "".join(words) if all(len(word) == 1 for word in words) else " ".join(words)
    samples = {
        "text": np.array([text], dtype=object),
        "sentences": np.array([text], dtype=object),
        "tokens": np.array([words], dtype=object),
        "token_ids": np.array([[FIRST_REAL_ID + i for i in range(len(words))]]),
        "batch_size": np.array(1),
        # The `sample` signature: one draw at temperature 1 from the top 10.
        "uniforms": np.array([0.5]),
        "temperature": np.array([1.0]),
        "top_k": np.array([10]),
    }
    if state_size is not None:
        samples["state"] = np.zeros((1, state_size), dtype=np.float32)
    logs = []
    for name, signature in sorted(_signature_defs(saved_model_dir).items()):
        if name.startswith("__"):
            continue
        log = prediction_log_pb2.PredictionLog()
        if task == "classifier" and name == CLASSIFY_SIGNATURE:
            request = classification_pb2.ClassificationRequest()
            request.model_spec.name, request.model_spec.signature_name = model_name, name
            example = request.input.example_list.examples.add()
            example.features.feature["text"].bytes_list.value.append(text.encode("utf-8"))
            log.classify_log.request.CopyFrom(request)
        else:
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = model_name, name
            for alias, info in signature.inputs.items():
                if alias not in samples:
                    raise ValueError(f"no warm-up sample for input {alias!r} of signature {name!r}")
                value = samples[alias].astype(tf.as_dtype(info.dtype).as_numpy_dtype)
                request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
            log.predict_log.request.CopyFrom(request)
        logs.append(log)
    return logs


def write_warmup_requests(saved_model_dir: Path, **options) -> Path:
    """Writes `warmup_logs(saved_model_dir, **options)` to `assets.extra/tf_serving_warmup_requests`."""
    path = Path(saved_model_dir) / ASSETS_EXTRA / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in warmup_logs(Path(saved_model_dir), **options):
            writer.write(log.SerializeToString())
    return path


def _signature_defs(saved_model_dir: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    return dict(saved_model.meta_graphs[0].signature_def)
