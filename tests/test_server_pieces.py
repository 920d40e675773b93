"""Long requests run in pieces (serving.server.pieces): same answers, and the work stops when it is not wanted."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving.protocol.errors import ServingError
from serving.server import pieces
from serving.server.batching import SignatureBatchingPlan
from serving_helpers import (CLASSIFIER_NAME, LANGUAGE_MODEL_NAME, TAGGER_NAME, TOY_VOCABULARY, predict_request,
                             run_saved_model, running_server, session_toy_models)

# === Units ===


def _signature(inputs: dict, outputs: dict) -> meta_graph_pb2.SignatureDef:
    """A SignatureDef from {alias: (dtype, shape)} for inputs and outputs."""
    signature = meta_graph_pb2.SignatureDef()
    for tensors, specs in ((signature.inputs, inputs), (signature.outputs, outputs)):
        for alias, (dtype, shape) in specs.items():
            tensors[alias].dtype = tf.as_dtype(dtype).as_datatype_enum
            for size in shape:
                tensors[alias].tensor_shape.dim.add().size = size
    return signature


LM_SIGNATURE = _signature({"token_ids": (tf.int64, [-1, -1])},
                          {"logits": (tf.float32, [-1, -1, 100]), "lengths": (tf.int64, [-1]),
                           "words": (tf.string, [-1, -1])})
LM_PLAN = SignatureBatchingPlan.from_signature_def(LM_SIGNATURE)


def test_the_response_estimate_counts_what_the_shapes_tell():
    inputs = {"token_ids": np.zeros((3, 7), np.int64)}
    assert pieces.estimated_output_bytes(LM_SIGNATURE, LM_PLAN, inputs, ["logits"]) == 3 * 7 * 100 * 4
    assert pieces.estimated_output_bytes(LM_SIGNATURE, LM_PLAN, inputs, ["lengths", "words"]) == 3 * 8 + 3 * 7
    # Text in: the time axis is not known before the graph tokenizes, so the logits do not count.
    text_signature = _signature({"text": (tf.string, [-1])}, {"logits": (tf.float32, [-1, -1, 100]),
                                                              "scores": (tf.float32, [-1, 2])})
    text_plan = SignatureBatchingPlan.from_signature_def(text_signature)
    text = {"text": np.array([b"a b", b"c"], object)}
    assert pieces.estimated_output_bytes(text_signature, text_plan, text, ["logits", "scores"]) == 2 * 2 * 4
    assert pieces.estimated_output_bytes(LM_SIGNATURE, LM_PLAN, {"token_ids": np.zeros((), np.int64)},
                                         ["logits"]) == 0


def test_pieces_join_padding_time_axes_with_the_pad_value_of_their_dtype():
    plan = SignatureBatchingPlan(True, frozenset(), frozenset({"f", "s", "b"}))
    first = {"f": np.ones((2, 3, 2), np.float32), "s": np.full((2, 3), b"w", object),
             "b": np.ones((2, 3), bool), "n": np.arange(2)}
    second = {"f": np.ones((1, 1, 2), np.float32), "s": np.full((1, 1), b"v", object),
              "b": np.ones((1, 1), bool), "n": np.arange(1)}
    joined = pieces.join_pieces([first, second], plan)
    assert joined["f"].shape == (3, 3, 2) and joined["f"][2].tolist() == [[1, 1], [0, 0], [0, 0]]
    assert joined["s"][2].tolist() == [b"v", b"", b""] and joined["b"][2].tolist() == [True, False, False]
    assert joined["n"].tolist() == [0, 1, 0]
    with pytest.raises(ServingError) as raised:  # not a time axis: the pieces disagree
        pieces.join_pieces([{"n": np.zeros((1, 2))}, {"n": np.zeros((1, 3))}], plan)
    assert raised.value.code == grpc.StatusCode.INTERNAL


class _Servable:
    """A servable whose `serving_default` returns each row's first token id, counting its calls."""

    name, version = "fake", 1

    def __init__(self, on_run=lambda rows: None):
        self.calls, self._on_run = [], on_run
        self._signature = _signature({"token_ids": (tf.int64, [-1, -1])},
                                     {"first": (tf.int64, [-1]), "logits": (tf.float32, [-1, -1, 100])})

    def signature(self, name):
        return self._signature

    def batching_plan(self, name):
        return SignatureBatchingPlan.from_signature_def(self._signature)

    def run(self, name, inputs):
        rows, length = inputs["token_ids"].shape
        self.calls.append(rows)
        self._on_run(len(self.calls))
        return {"first": inputs["token_ids"][:, 0].copy(), "logits": np.zeros((rows, length, 100), np.float32)}


class _Client:
    """A gRPC context that turns inactive once `active` is cleared."""

    def __init__(self):
        self.active = True

    def is_active(self):
        return self.active

    def add_callback(self, callback):
        return True


def _inference(**options):
    from serving.server.prediction_service import InferenceService

    return InferenceService(manager=None, max_batch_size=10_000, **options)


TOKENS = {"token_ids": np.arange(1000, dtype=np.int64).reshape(1000, 1)}


def test_a_long_request_runs_in_pieces_and_answers_as_one_run():
    servable = _Servable()
    outputs = _inference().predict_arrays(servable, "serving_default", TOKENS, ["first"])
    assert servable.calls == [256, 256, 256, 232]
    assert outputs["first"].tolist() == list(range(1000))
    servable = _Servable()
    _inference().predict_arrays(servable, "serving_default", {"token_ids": TOKENS["token_ids"][:256]}, ["first"])
    assert servable.calls == [256]  # up to one piece: one run
    servable = _Servable()
    _inference(piece_rows=0).predict_arrays(servable, "serving_default", TOKENS, ["first"])
    assert servable.calls == [1000]  # --max_rows_per_run=0: one call


def test_the_pieces_stop_when_the_client_leaves():
    client = _Client()
    servable = _Servable(on_run=lambda calls: calls == 2 and setattr(client, "active", False))
    with pytest.raises(ServingError) as raised:
        _inference().predict_arrays(servable, "serving_default", TOKENS, ["first"], timeout_seconds=60,
                                    client=client)
    assert raised.value.code == grpc.StatusCode.CANCELLED
    assert "after 512 of its 1000 rows" in raised.value.message and servable.calls == [256, 256]


def test_the_pieces_stop_at_the_deadline(monkeypatch):
    from serving.server import prediction_service

    class Clock:  # each piece "takes" 1 s
        now = 100.0

        def monotonic(self):
            return self.now

    clock = Clock()
    monkeypatch.setattr(prediction_service, "time", clock)
    servable = _Servable(on_run=lambda calls: setattr(clock, "now", clock.now + 1.0))
    with pytest.raises(ServingError) as raised:
        _inference().predict_arrays(servable, "serving_default", TOKENS, ["first"], timeout_seconds=2.5)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "after 768 of the request's 1000 rows" in raised.value.message and servable.calls == [256] * 3


def test_a_response_over_the_limit_is_refused_before_running_or_stopped_when_it_passes():
    servable = _Servable()
    with pytest.raises(ServingError) as raised:  # 1000 x 1 x 100 float32 logits: known before running
        _inference(max_response_bytes=100_000).predict_arrays(servable, "serving_default", TOKENS, ["logits"])
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at least 400000 bytes" in raised.value.message and "--max_message_bytes" in raised.value.message
    assert servable.calls == []
    # The estimate is a lower bound; the pieces count what really comes out.
    monkeypatched = _Servable()
    monkeypatched._signature.outputs["logits"].tensor_shape.dim[2].size = -1  # size unknown before running
    with pytest.raises(ServingError) as raised:
        _inference(max_response_bytes=250_000).predict_arrays(monkeypatched, "serving_default", TOKENS,
                                                              ["logits"])
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "after 768 of its 1000 rows" in raised.value.message and monkeypatched.calls == [256] * 3


# === Through a real server ===


@pytest.fixture(scope="module")
def toy_server(tmp_path_factory):
    models_root = session_toy_models(tmp_path_factory)
    with running_server(model_base_dir=models_root, log_dir=tmp_path_factory.mktemp("pieces"), rest=False,
                        monitoring=False) as server:
        yield server, models_root


def _sentences(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    words = TOY_VOCABULARY[2:]
    return np.array([" ".join(rng.choice(words, size=rng.integers(1, 12))).encode() for _ in range(count)], object)


@pytest.mark.parametrize("model, signature, inputs", [
    (TAGGER_NAME, "serving_default", lambda: {"sentences": _sentences(700)}),
    (CLASSIFIER_NAME, "serving_default", lambda: {"sentences": _sentences(700, seed=1)}),
    (LANGUAGE_MODEL_NAME, "serving_default",
     lambda: {"token_ids": np.random.default_rng(2).integers(2, len(TOY_VOCABULARY), (600, 9))}),
])
def test_a_request_of_more_rows_than_a_piece_answers_what_one_run_gives(toy_server, model, signature, inputs):
    server, models_root = toy_server
    values = inputs()
    with server.channel() as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            predict_request(model, signature, **values), timeout=60)
    expected = run_saved_model(models_root / model / "2", signature, **values)
    assert sorted(response.outputs) == sorted(expected)
    for alias, array in expected.items():
        served = tf.make_ndarray(response.outputs[alias])
        assert served.shape == array.shape, alias
        if array.dtype.kind == "f":
            np.testing.assert_allclose(served, array, rtol=1e-5, atol=1e-6, err_msg=alias)
        else:
            assert np.array_equal(served, array), alias
