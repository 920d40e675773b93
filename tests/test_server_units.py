"""In-process tests of the server's parts: tensors, batching, version policies, config, flags."""

import threading
import time

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.protocol import tensors
from serving.protocol.errors import ServingError, clean_tensorflow_message
from serving.server import app, batching, cli, model_config, model_manager
from serving_helpers import session_toy_models


def _tensor_info(dtype, dims):
    info = meta_graph_pb2.TensorInfo(dtype=dtype)
    info.tensor_shape.CopyFrom(tensors.make_tensor_shape(dims))
    return info


# === tensors ===


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.int64).reshape(2, 3),
    np.array([[1.5, -2.25]], dtype=np.float32),
    np.array([1.0, 2.5], dtype=np.float64),
    np.array([[1, 2], [3, 4]], dtype=np.int32),
    np.array([7, 255], dtype=np.uint8),
    np.array([True, False]),
    np.array([0.5, -1.0], dtype=np.float16),
    np.array([1 + 2j], dtype=np.complex64),
    np.zeros((0, 4), dtype=np.float32),
])
@pytest.mark.parametrize("use_tensor_content", [False, True])
def test_numeric_tensors_round_trip(array, use_tensor_content):
    proto = tensors.numpy_to_tensor_proto(array, use_tensor_content=use_tensor_content)
    decoded = tensors.tensor_proto_to_numpy(proto, "x")
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


def test_string_tensors_round_trip_text_and_bytes():
    proto = tensors.numpy_to_tensor_proto([["héllo", ""], ["a", "b"]])
    assert proto.dtype == types_pb2.DT_STRING
    decoded = tensors.tensor_proto_to_numpy(proto, "text")
    assert decoded.shape == (2, 2)
    assert decoded.tolist() == [["héllo".encode(), b""], [b"a", b"b"]]


def test_responses_use_typed_fields_as_tf_serving():
    proto = tensors.numpy_to_tensor_proto(np.array([0.5, 1.5], dtype=np.float32))
    assert list(proto.float_val) == [0.5, 1.5] and not proto.tensor_content


def test_fewer_values_than_shape_repeat_the_last_one_as_tensorflow():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=[3, 4])
    proto.tensor_shape.dim.add(size=4)
    np.testing.assert_array_equal(tensors.tensor_proto_to_numpy(proto), [3, 4, 4, 4])


def _proto(dtype, dims, **fields):
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    return proto


@pytest.mark.parametrize("proto, reason", [
    (_proto(types_pb2.DT_INT64, [2, 3], tensor_content=b"12345"), "tensor_content has 5 bytes"),
    (_proto(types_pb2.DT_INT64, [-1]), "negative dimension"),
    (_proto(types_pb2.DT_FLOAT, [1 << 40, 1 << 40]), "only 0 values"),
    (_proto(types_pb2.DT_INT64, [1 << 30], int64_val=[1]), "only 1 values"),
    (_proto(types_pb2.DT_INT64, [1], int64_val=[1, 2]), "2 values do not fit shape [1]"),
    (_proto(999, [1]), "unsupported dtype 999"),
    (_proto(types_pb2.DT_RESOURCE, [1]), "unsupported dtype DT_RESOURCE"),
    (_proto(types_pb2.DT_STRING, [1], tensor_content=b"x"), "string tensors cannot use tensor_content"),
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT,
                            tensor_shape={"unknown_rank": True}), "unknown rank"),
])
def test_malformed_tensor_protos_are_invalid_arguments(proto, reason):
    with pytest.raises(ServingError) as raised:
        tensors.tensor_proto_to_numpy(proto, "token_ids")
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "token_ids" in raised.value.message and reason in raised.value.message


def test_check_input_says_what_was_expected_and_what_came():
    info = _tensor_info(types_pb2.DT_INT64, [-1, -1])
    tensors.check_input("token_ids", np.zeros((2, 5), np.int64), info)
    with pytest.raises(ServingError, match=r'Input "token_ids": expected dtype DT_INT64, got DT_FLOAT\.'):
        tensors.check_input("token_ids", np.zeros((2, 5), np.float32), info)
    with pytest.raises(ServingError, match=r'Input "token_ids": expected shape \[\?,\?\], got \[5\]\.'):
        tensors.check_input("token_ids", np.zeros(5, np.int64), info)
    with pytest.raises(ServingError, match=r"expected shape \[\?,3\], got \[1,4\]"):
        tensors.check_input("state", np.zeros((1, 4), np.float32), _tensor_info(types_pb2.DT_FLOAT, [-1, 3]))


def test_json_values_become_arrays_of_the_signature_dtype():
    array = tensors.json_to_numpy([[1, 2], [3, 4]], types_pb2.DT_INT32, "x")
    assert array.dtype == np.int32 and array.tolist() == [[1, 2], [3, 4]]
    strings = tensors.json_to_numpy(["a", {"b64": "AAE="}], types_pb2.DT_STRING, "s")
    assert strings.tolist() == [b"a", b"\x00\x01"]
    with pytest.raises(ServingError, match="ragged"):
        tensors.json_to_numpy([[1, 2], [3]], types_pb2.DT_INT64, "x")
    # TF Serving's wording (json_tensor.cc), then what to send.
    with pytest.raises(ServingError, match=r'Input "x": JSON Value: 1.5 Type: Number is not of expected type: int64 '
                                           r'\(send integers\)'):
        tensors.json_to_numpy([1.5], types_pb2.DT_INT64, "x")
    with pytest.raises(ServingError, match="JSON Value: true Type: True is not of expected type: int64"):
        tensors.json_to_numpy([True], types_pb2.DT_INT64, "x")
    assert tensors.json_to_numpy([True, False], types_pb2.DT_BOOL, "x").tolist() == [True, False]
    assert tensors.numpy_to_json(np.array([b"ok", b"\xff"], dtype=object)) == ["ok", {"b64": "/w=="}]


def test_make_example_builds_typed_features():
    example = tensors.make_example({"text": "good", "ids": [1, 2], "weight": 0.5})
    features = example.features.feature
    assert features["text"].bytes_list.value == [b"good"]
    assert features["ids"].int64_list.value == [1, 2]
    assert features["weight"].float_list.value == [0.5]
    with pytest.raises(ValueError):
        tensors.make_example({"bad": [1, "a"]})


def test_tensorflow_messages_lose_the_python_preamble():
    eager = ("Graph execution error:\n\nDetected at node Gather defined at (most recent call last):\n"
             "<stack traces unavailable>\nindices[1,0] = 255 is not in [0, 16)\n\t [[{{node Gather}}]] "
             "[Op:__inference_signature_wrapper_serving_default_1099]")
    assert clean_tensorflow_message(eager) == "indices[1,0] = 255 is not in [0, 16)\n\t [[{{node Gather}}]]"
    assert clean_tensorflow_message("{{function_node __wrapped__X}} Dimension -1 must be >= 0 [Op:Fill] name: ") \
        == "Dimension -1 must be >= 0"


# === batching ===


def test_batching_parameters_read_tf_serving_text_format():
    parameters = batching.parse_batching_parameters("""
        max_batch_size { value: 16 }   # TF Serving's wrapper form
        batch_timeout_micros { value: 5000 }
        max_enqueued_batches: 3
        num_batch_threads { value: 2 }
        pad_variable_length_inputs: true
    """)
    assert parameters == batching.BatchingParameters(16, 5000, 3, 2)
    with pytest.raises(ValueError, match="unknown batching parameter"):
        batching.parse_batching_parameters("max_batch_sise { value: 4 }")
    with pytest.raises(ValueError, match="at least 1"):
        batching.parse_batching_parameters("max_batch_size { value: 0 }")
    with pytest.raises(ValueError, match="cannot parse"):
        batching.parse_batching_parameters("max_batch_size { value: 4 } }")


def _language_model_signature():
    signature = meta_graph_pb2.SignatureDef()
    signature.inputs["token_ids"].CopyFrom(_tensor_info(types_pb2.DT_INT64, [-1, -1]))
    signature.outputs["logits"].CopyFrom(_tensor_info(types_pb2.DT_FLOAT, [-1, -1, 4]))
    signature.outputs["last"].CopyFrom(_tensor_info(types_pb2.DT_FLOAT, [-1, 4]))
    return signature


def _toy_run(inputs):
    """Depends on each row only, and zeroes padding: what the contract promises."""
    token_ids = inputs["token_ids"]
    logits = np.repeat(token_ids[:, :, None].astype(np.float32), 4, axis=2) * np.arange(1, 5, dtype=np.float32)
    return {"logits": logits, "last": logits.sum(axis=1)}


def test_signature_plan_finds_paddable_inputs_and_time_axis_outputs():
    plan = batching.SignatureBatchingPlan.from_signature_def(_language_model_signature())
    assert plan.batchable
    assert plan.paddable_inputs == {"token_ids"} and plan.time_axis_outputs == {"logits"}
    scalar = meta_graph_pb2.SignatureDef()
    scalar.inputs["batch_size"].CopyFrom(_tensor_info(types_pb2.DT_INT32, []))
    assert not batching.SignatureBatchingPlan.from_signature_def(scalar).batchable


def test_merge_pads_with_contract_values_and_split_cuts_back():
    plan = batching.SignatureBatchingPlan.from_signature_def(_language_model_signature())
    requests = [{"token_ids": np.array([[5, 6]], np.int64)},
                {"token_ids": np.array([[1, 2, 3, 4], [7, 0, 0, 0]], np.int64)}]
    tasks = [batching._Task(inputs, *batching._layout(inputs, plan)[:2]) for inputs in requests]
    merged, padded_length = batching.merge_inputs(tasks, plan)
    assert padded_length == 4
    assert merged["token_ids"].tolist() == [[5, 6, 0, 0], [1, 2, 3, 4], [7, 0, 0, 0]]
    for inputs, result in zip(requests, batching.split_outputs(_toy_run(merged), tasks, plan, padded_length)):
        expected = _toy_run(inputs)
        for alias in expected:
            np.testing.assert_array_equal(result[alias], expected[alias])


def test_strings_pad_with_empty_string_and_trailing_model_padding_is_removed():
    signature = meta_graph_pb2.SignatureDef()
    signature.inputs["sentences"].CopyFrom(_tensor_info(types_pb2.DT_STRING, [-1]))
    signature.outputs["tokens"].CopyFrom(_tensor_info(types_pb2.DT_STRING, [-1, -1]))
    plan = batching.SignatureBatchingPlan.from_signature_def(signature)

    def split_words(inputs):
        rows = [sentence.split() for sentence in inputs["sentences"]]
        width = max(len(row) for row in rows)
        tokens = np.full((len(rows), width), b"", dtype=object)
        for index, row in enumerate(rows):
            tokens[index, :len(row)] = row
        return {"tokens": tokens}

    requests = [{"sentences": np.array([b"a b"], dtype=object)},
                {"sentences": np.array([b"a b c d", b"e"], dtype=object)}]
    tasks = [batching._Task(inputs, *batching._layout(inputs, plan)[:2]) for inputs in requests]
    merged, padded_length = batching.merge_inputs(tasks, plan)
    results = batching.split_outputs(split_words(merged), tasks, plan, padded_length)
    for inputs, result in zip(requests, results):
        assert result["tokens"].tolist() == split_words(inputs)["tokens"].tolist()


def test_scheduler_merges_concurrent_requests_without_changing_results():
    plan = batching.SignatureBatchingPlan.from_signature_def(_language_model_signature())
    calls = []

    def run(inputs):
        calls.append(inputs["token_ids"].shape[0])
        return _toy_run(inputs)

    scheduler = batching.BatchScheduler(batching.BatchingParameters(16, 100_000, 10, 1))
    requests = [{"token_ids": np.arange(1, 1 + rows * length, dtype=np.int64).reshape(rows, length)}
                for rows, length in [(1, 3), (2, 1), (3, 5), (1, 2)]]
    results = [None] * len(requests)

    def send(index):
        results[index] = scheduler.run(("lm", 1, "serving_default"), requests[index], plan, run)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    scheduler.close()
    assert sum(calls) == 7 and len(calls) < len(requests)  # merged at least once
    for inputs, result in zip(requests, results):
        for alias, expected in _toy_run(inputs).items():
            np.testing.assert_array_equal(result[alias], expected)


def test_scheduler_isolates_a_failing_request():
    plan = batching.SignatureBatchingPlan.from_signature_def(_language_model_signature())

    def run(inputs):
        if (inputs["token_ids"] < 0).any():
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "negative id")
        return _toy_run(inputs)

    scheduler = batching.BatchScheduler(batching.BatchingParameters(16, 100_000, 10, 1))
    outcomes = {}

    def send(name, token_ids):
        try:
            outcomes[name] = scheduler.run(("lm", 1, "s"), {"token_ids": token_ids}, plan, run)
        except ServingError as error:
            outcomes[name] = error

    threads = [threading.Thread(target=send, args=("good", np.array([[1, 2]], np.int64))),
               threading.Thread(target=send, args=("bad", np.array([[-1]], np.int64)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    scheduler.close()
    assert isinstance(outcomes["bad"], ServingError) and outcomes["bad"].message == "negative id"
    np.testing.assert_array_equal(outcomes["good"]["last"], _toy_run({"token_ids": np.array([[1, 2]])})["last"])


def test_an_output_that_only_looks_like_a_time_axis_is_not_cut():
    signature = meta_graph_pb2.SignatureDef()
    signature.inputs["token_ids"].CopyFrom(_tensor_info(types_pb2.DT_INT64, [-1, -1]))
    signature.outputs["scores"].CopyFrom(_tensor_info(types_pb2.DT_FLOAT, [-1, -1]))  # (batch, 4), size unknown
    plan = batching.SignatureBatchingPlan.from_signature_def(signature)

    def run(inputs):
        return {"scores": np.ones((inputs["token_ids"].shape[0], 4), np.float32)}

    scheduler = batching.BatchScheduler(batching.BatchingParameters(16, 200_000, 10, 1))
    results = {}
    requests = {"short": np.array([[1, 2]], np.int64), "long": np.array([[1, 2, 3, 4]], np.int64)}
    threads = [threading.Thread(target=lambda name=name, ids=ids: results.__setitem__(
        name, scheduler.run(("m", 1, "s"), {"token_ids": ids}, plan, run))) for name, ids in requests.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    scheduler.close()
    assert results["short"]["scores"].shape == (1, 4) and results["long"]["scores"].shape == (1, 4)


def _wait_until(condition, timeout_seconds=20.0):
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_full_queue_is_unavailable():
    plan = batching.SignatureBatchingPlan.from_signature_def(_language_model_signature())
    release, running = threading.Event(), threading.Event()

    def slow_run(inputs):
        running.set()
        release.wait(10)
        return _toy_run(inputs)

    scheduler = batching.BatchScheduler(batching.BatchingParameters(2, 0, 1, 1))
    request = {"token_ids": np.array([[1, 2]], np.int64)}
    threads = [threading.Thread(target=scheduler.run, args=(("m", 1, "s"), request, plan, slow_run))
               for _ in range(3)]
    # One runs (held in slow_run), two fill the queue (capacity 2 rows); wait
    # for each state instead of sleeping, so a slow machine cannot reorder them.
    threads[0].start()
    _wait_until(lambda: running.is_set())
    for thread in threads[1:]:
        thread.start()
    _wait_until(lambda: scheduler.queued_requests() == 2)
    with pytest.raises(ServingError) as raised:
        scheduler.run(("m", 1, "s"), request, plan, slow_run)
    release.set()
    for thread in threads:
        thread.join(10)
    scheduler.close()
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert raised.value.message == batching.QUEUE_FULL_MESSAGE


# === model config and version policies ===


def test_version_policies_choose_from_the_versions_on_disk():
    policy = model_server_config_pb2.ModelConfig().model_version_policy
    assert model_config.aspired_versions(policy, [1, 3, 2]) == [3]
    policy.latest.num_versions = 2
    assert model_config.aspired_versions(policy, [1, 3, 2]) == [3, 2]
    policy.all.SetInParent()
    assert model_config.aspired_versions(policy, [1, 3, 2]) == [3, 2, 1]
    policy.specific.versions.extend([1, 7])
    assert model_config.aspired_versions(policy, [1, 3, 2]) == [1]


def test_model_config_text_proto_is_parsed_and_validated():
    config = model_config.parse_model_config("""
        model_config_list {
          config { name: "lm" base_path: "/models/lm" model_platform: "tensorflow"
                   model_version_policy { specific { versions: 1 versions: 2 } }
                   version_labels { key: "stable" value: 1 } }
        }""")
    entry = config.model_config_list.config[0]
    assert entry.name == "lm" and list(entry.model_version_policy.specific.versions) == [1, 2]
    assert dict(entry.version_labels) == {"stable": 1}
    for text, message in [("model_config_list { config { name: 'a' } }", "has no base_path"),
                          ("model_config_list { config { name: 'a' base_path: '/x' } "
                           "config { name: 'a' base_path: '/y' } }", "multiple times"),
                          ("model_config_list { config { name: 'a' base_path: '/x' model_platform: 'onnx' } }",
                           "model_platform"),
                          ("model_config_list { confg {} }", "Invalid ModelServerConfig")]:
        with pytest.raises(ServingError, match=message):
            model_config.parse_model_config(text)


def test_a_changed_config_file_is_applied(tmp_path_factory, tmp_path):
    models_root = session_toy_models(tmp_path_factory)
    config_file = tmp_path / "models.config"

    def write_config(*names):
        entries = " ".join(f'config {{ name: "{name}" base_path: "{models_root / name}" }}' for name in names)
        config_file.write_text(f"model_config_list {{ {entries} }}")

    write_config("lm")
    availability = []
    manager = model_manager.ModelManager(config_file=config_file, poll_wait_seconds=0,
                                         config_file_poll_wait_seconds=0.1,
                                         on_availability_change=availability.append)
    manager.start()
    try:
        assert manager.model_names() == ["lm"] and availability[-1] == {"lm": True}
        write_config("lm", "tagger")
        deadline = time.monotonic() + 20
        while availability[-1] != {"lm": True, "tagger": True} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert manager.model_names() == ["lm", "tagger"]
        assert manager.resolve(model_pb2.ModelSpec(name="tagger")).version == 2
    finally:
        manager.stop()
    assert availability[-1] == {"lm": False, "tagger": False}


def test_single_model_flags_make_tf_servings_config(tmp_path):
    parser = cli.build_parser()
    arguments = parser.parse_args(["--model_name=lm", f"--model_base_path={tmp_path}"])
    manager = app.make_model_manager(arguments, metrics=None, on_availability_change=None)
    config = manager._current_config()
    assert [(entry.name, entry.base_path) for entry in config.model_config_list.config] == [("lm", str(tmp_path))]


def test_an_invalid_config_file_stops_the_server_before_it_opens_ports(tmp_path):
    (tmp_path / "models.config").write_text("model_config_list { config { name: 'lm' } }")
    arguments = cli.build_parser().parse_args([f"--model_config_file={tmp_path / 'models.config'}",
                                                           "--port=0"])
    assert app.serve(arguments, threading.Event()) == 1


def test_server_help_lists_tf_serving_flags(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["--help"])
    assert raised.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--port", "--rest_api_port", "--model_name", "--model_base_path", "--model_config_file",
                 "--file_system_poll_wait_seconds", "--enable_batching", "--batching_parameters_file",
                 "--monitoring_port", "--model_base_dir"):
        assert flag in text
