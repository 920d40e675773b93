"""Server-side batching must never change a result.

A real server with `--enable_batching` (models from a `--model_config_file`)
gets bursts of concurrent requests of different batch sizes and lengths; each
answer must equal running that request alone on the SavedModel, and the
metrics must show that requests were in fact merged.
"""

import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving_helpers import (LANGUAGE_MODEL_NAME, predict_request, assert_float32_close, TAGGER_NAME, TOY_STATE_SIZE, run_saved_model, running_server,
                             session_toy_models)

TIMEOUT_SECONDS = 30
BATCHING_PARAMETERS = """
max_batch_size { value: 16 }
batch_timeout_micros { value: 100000 }
max_enqueued_batches { value: 8 }
num_batch_threads { value: 2 }
"""


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    return session_toy_models(tmp_path_factory)


@pytest.fixture(scope="module")
def server(models_root, tmp_path_factory):
    directory = tmp_path_factory.mktemp("batching")
    (directory / "batching.config").write_text(BATCHING_PARAMETERS)
    (directory / "models.config").write_text(f"""
        model_config_list {{
          config {{
            name: "{LANGUAGE_MODEL_NAME}"
            base_path: "{models_root / LANGUAGE_MODEL_NAME}"
            model_platform: "tensorflow"
            model_version_policy {{ latest {{ num_versions: 2 }} }}
            version_labels {{ key: "stable" value: 1 }}
          }}
          config {{ name: "{TAGGER_NAME}" base_path: "{models_root / TAGGER_NAME}" model_platform: "tensorflow" }}
        }}""")
    with running_server(model_config_file=directory / "models.config", rest=False, log_dir=directory,
                        extra_arguments=["--enable_batching",
                                         f"--batching_parameters_file={directory / 'batching.config'}"]) as process:
        yield process


@pytest.fixture(scope="module")
def prediction(server):
    with server.channel() as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


_request = predict_request


def _right_padded_ids(generator, rows, length):
    """Random ids 2..15 with a random number of trailing pads per row (contract padding)."""
    token_ids = generator.integers(2, 16, size=(rows, length), dtype=np.int64)
    for row in range(rows):
        token_ids[row, generator.integers(1, length + 1):] = 0
    return token_ids


def _words(generator, count):
    vocabulary = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "zebra"]
    return " ".join(generator.choice(vocabulary, size=count))


def _burst(generator):
    """(model, signature, inputs) for many requests that differ in rows and lengths."""
    cases = []
    for rows, length in [(1, 3), (2, 1), (3, 6), (1, 2), (2, 4), (1, 1)]:
        cases.append((LANGUAGE_MODEL_NAME, "serving_default",
                      {"token_ids": _right_padded_ids(generator, rows, length)}))
        cases.append((LANGUAGE_MODEL_NAME, "step", {
            "token_ids": _right_padded_ids(generator, rows, length),
            "state": generator.normal(size=(rows, TOY_STATE_SIZE)).astype(np.float32)}))
        cases.append((LANGUAGE_MODEL_NAME, "tokenize", {
            "text": np.array([_words(generator, generator.integers(0, 7)) for _ in range(rows)], dtype=object)}))
        tokens = np.full((rows, length), b"", dtype=object)
        for row in range(rows):
            count = generator.integers(1, length + 1)
            tokens[row, :count] = [word.encode() for word in _words(generator, count).split()]
        cases.append((TAGGER_NAME, "tag_tokens", {"tokens": tokens}))
        cases.append((TAGGER_NAME, "serving_default", {
            "sentences": np.array([_words(generator, generator.integers(1, 8)) for _ in range(rows)], dtype=object)}))
    cases.append((LANGUAGE_MODEL_NAME, "initial_state", {"batch_size": np.array(2, np.int32)}))
    return cases


def _assert_same(actual, expected, context):
    assert set(actual) == set(expected), context
    for alias, value in expected.items():
        if value.dtype == object:
            assert actual[alias].tolist() == value.tolist(), (context, alias)
        else:
            # Equal to float32 rounding, not bit for bit: merged requests run at
            # another batch size, whose kernels may sum in another order.
            assert_float32_close(actual[alias], value, err_msg=f"{context} {alias}")


def test_batched_answers_equal_unbatched_runs(server, prediction, models_root):
    generator = np.random.default_rng(7)
    cases = _burst(generator) + _burst(generator)
    futures = [prediction.Predict.future(_request(model, signature, **inputs), timeout=TIMEOUT_SECONDS)
               for model, signature, inputs in cases]
    for (model, signature, inputs), future in zip(cases, futures):
        response = future.result()
        assert response.model_spec.version.value == 2
        actual = {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}
        _assert_same(actual, run_saved_model(models_root / model / "2", signature, **inputs), (model, signature))

    page = urllib.request.urlopen(server.monitoring_url, timeout=TIMEOUT_SECONDS).read().decode()
    labels = '{model="lm",signature="serving_default"}'
    merged_requests = _sample(page, "rnn_zoo_serving_batch_requests_sum" + labels)
    batches = _sample(page, "rnn_zoo_serving_batch_requests_count" + labels)
    assert merged_requests == 12 and batches < merged_requests  # requests were really merged


def _sample(page, name):
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith(name + " "))


def test_a_bad_request_fails_alone_inside_a_batch(prediction, models_root):
    good = [np.array([[2, 3, 4]], np.int64), np.array([[5, 0], [6, 7]], np.int64)]
    bad = np.array([[2, 99]], np.int64)
    futures = [prediction.Predict.future(_request(LANGUAGE_MODEL_NAME, "serving_default", token_ids=token_ids),
                                         timeout=TIMEOUT_SECONDS) for token_ids in good + [bad]]
    for token_ids, future in zip(good, futures):
        expected = run_saved_model(models_root / LANGUAGE_MODEL_NAME / "2", "serving_default", token_ids=token_ids)
        assert_float32_close(tf.make_ndarray(future.result().outputs["logits"]), expected["logits"])
    with pytest.raises(grpc.RpcError) as raised:
        futures[-1].result()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "indices[0,1] = 99 is not in [0, 16)" in raised.value.details()


def test_config_file_versions_and_labels(prediction, models_root):
    token_ids = np.array([[2, 4]], np.int64)
    request = _request(LANGUAGE_MODEL_NAME, "serving_default", token_ids=token_ids)
    request.model_spec.version_label = "stable"
    response = prediction.Predict(request, timeout=TIMEOUT_SECONDS)
    assert response.model_spec.version.value == 1
    expected = run_saved_model(models_root / LANGUAGE_MODEL_NAME / "1", "serving_default", token_ids=token_ids)
    assert_float32_close(tf.make_ndarray(response.outputs["logits"]), expected["logits"])
