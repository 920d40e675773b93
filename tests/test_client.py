"""serving.client against a real server: library calls and the CLI (run in-process)."""

import json
import math

import grpc
import numpy as np
import pytest

from serving.client import cli as serving_client
from serving.client import ServingClient, ServingClientError, VersionState
from serving_helpers import (CLASSIFIER_NAME, LANGUAGE_MODEL_NAME, TAGGER_NAME, TOY_CLASS_NAMES, TOY_STATE_SIZE,
                             free_port, run_saved_model, running_server, session_toy_models)

LATEST = 2


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    return session_toy_models(tmp_path_factory)


@pytest.fixture(scope="module")
def server(models_root, tmp_path_factory):
    with running_server(model_base_dir=models_root, rest=False, monitoring=False,
                        log_dir=tmp_path_factory.mktemp("client-server-log")) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    with ServingClient(server.grpc_target, timeout_seconds=10) as opened:
        yield opened


def _saved_model(models_root, name):
    return models_root / name / str(LATEST)


def test_predict_sends_numpy_and_returns_numpy(client, models_root):
    token_ids = np.array([[2, 4, 6], [3, 0, 0]], np.int64)
    state = np.full((2, TOY_STATE_SIZE), 0.25, np.float32)
    result = client.predict(LANGUAGE_MODEL_NAME, {"token_ids": token_ids, "state": state}, signature_name="step")
    assert (result.model_name, result.version, result.signature_name) == (LANGUAGE_MODEL_NAME, LATEST, "step")
    expected = run_saved_model(_saved_model(models_root, LANGUAGE_MODEL_NAME), "step", token_ids=token_ids, state=state)
    for alias in ("logits", "state"):
        np.testing.assert_array_equal(result.outputs[alias], expected[alias])


def test_predict_json_casts_to_the_signature_dtypes(client, models_root):
    result = client.predict_json(LANGUAGE_MODEL_NAME, {"token_ids": [[2, 4]], "state": [[0.5, 0.0, -0.5]]},
                                 signature_name="step", output_filter=["state"])
    expected = run_saved_model(_saved_model(models_root, LANGUAGE_MODEL_NAME), "step",
                               token_ids=np.array([[2, 4]], np.int64), state=np.array([[0.5, 0.0, -0.5]], np.float32))
    assert set(result.outputs) == {"state"}
    np.testing.assert_array_equal(result.outputs["state"], expected["state"])


def test_task_helpers(client, models_root):
    sentences = ["good movie", "very bad"]
    expected = run_saved_model(_saved_model(models_root, CLASSIFIER_NAME), "serving_default",
                               sentences=np.array(sentences, dtype=object))
    by_predict = client.classify_sentences(CLASSIFIER_NAME, sentences)
    by_classify = client.classify_sentences_with_examples(CLASSIFIER_NAME, sentences)
    for index, (first, second) in enumerate(zip(by_predict, by_classify)):
        assert first.label == second.label == expected["label"][index].decode()
        assert list(first.probabilities) == list(second.probabilities) == list(TOY_CLASS_NAMES)
        np.testing.assert_allclose(list(first.probabilities.values()), expected["probabilities"][index], rtol=1e-6)
        np.testing.assert_allclose(list(second.probabilities.values()), expected["probabilities"][index], rtol=1e-6)

    tagged = client.tag(TAGGER_NAME, ["the cat sat", "a dog"])
    tags = run_saved_model(_saved_model(models_root, TAGGER_NAME), "serving_default",
                           sentences=np.array(["the cat sat", "a dog"], dtype=object))["tags"]
    assert tagged == [[("the", tags[0][0].decode()), ("cat", tags[0][1].decode()), ("sat", tags[0][2].decode())],
                      [("a", tags[1][0].decode()), ("dog", tags[1][1].decode())]]

    scores = client.score(LANGUAGE_MODEL_NAME, ["the cat sat", "dog"])
    expected_scores = run_saved_model(_saved_model(models_root, LANGUAGE_MODEL_NAME), "score",
                                      text=np.array(["the cat sat", "dog"], dtype=object))
    assert scores[0].num_tokens == 2 and scores[0].log_prob == pytest.approx(float(expected_scores["log_prob"][0]))
    assert scores[0].perplexity == pytest.approx(math.exp(-scores[0].log_prob / 2))
    assert scores[1].num_tokens == 0 and math.isnan(scores[1].perplexity)


def test_metadata_and_status(client):
    signatures = client.get_model_metadata(TAGGER_NAME)
    assert {"serving_default", "tag_tokens"} <= set(signatures)
    assert client.get_model_status(TAGGER_NAME) == [VersionState(LATEST, "AVAILABLE", "OK", "")]
    assert client.wait_until_available(TAGGER_NAME, timeout_seconds=5).version == LATEST


def test_errors_carry_code_and_message(client, server):
    with pytest.raises(ServingClientError) as raised:
        client.predict("nope", {"token_ids": np.array([[1]], np.int64)})
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert raised.value.message == "Servable not found for request: Latest(nope)"
    assert str(raised.value) == "NOT_FOUND: Servable not found for request: Latest(nope)"

    with ServingClient(f"127.0.0.1:{free_port()}", timeout_seconds=2) as nobody:
        with pytest.raises(ServingClientError) as raised:
            nobody.get_model_status(LANGUAGE_MODEL_NAME)
    assert raised.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


# === CLI ===


def run_cli(server, capsys, *arguments):
    code = serving_client.main(["--server", server.grpc_target, "--timeout", "10", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_predict_prints_json(server, capsys):
    code, out, _ = run_cli(server, capsys, "predict", LANGUAGE_MODEL_NAME, "--signature", "tokenize",
                           "--inputs", '{"text": ["the cat sat", "a"]}')
    assert code == 0
    assert json.loads(out) == {"model_spec": {"name": "lm", "version": LATEST, "signature_name": "tokenize"},
                               "outputs": {"lengths": [3, 1], "token_ids": [[2, 4, 6], [3, 0, 0]]}}


def test_cli_task_commands(server, capsys):
    code, out, _ = run_cli(server, capsys, "classify", CLASSIFIER_NAME, "good movie", "bad")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [line["sentence"] for line in lines] == ["good movie", "bad"]
    assert all(line["label"] in TOY_CLASS_NAMES for line in lines)

    code, out, _ = run_cli(server, capsys, "classify", CLASSIFIER_NAME, "good movie", "--api", "classify")
    line = json.loads(out)
    assert code == 0 and set(line["probabilities"]) == set(TOY_CLASS_NAMES)

    code, out, _ = run_cli(server, capsys, "tag", TAGGER_NAME, "the cat sat")
    pairs = out.split()
    assert code == 0 and [pair.split("/")[0] for pair in pairs] == ["the", "cat", "sat"]

    code, out, _ = run_cli(server, capsys, "score", LANGUAGE_MODEL_NAME, "the cat sat")
    scored = json.loads(out)
    assert code == 0 and scored["num_tokens"] == 2
    assert scored["perplexity"] == pytest.approx(math.exp(-scored["log_prob"] / 2))

    code, out, _ = run_cli(server, capsys, "metadata", LANGUAGE_MODEL_NAME)
    step = json.loads(out)["signatures"]["step"]
    assert code == 0 and step["inputs"]["state"] == {"dtype": "DT_FLOAT", "shape": [-1, TOY_STATE_SIZE]}

    code, out, _ = run_cli(server, capsys, "status", LANGUAGE_MODEL_NAME, "--version", str(LATEST))
    assert code == 0 and json.loads(out)["versions"] == [
        {"version": LATEST, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}]


def test_cli_reports_errors_on_stderr(server, capsys):
    code, out, err = run_cli(server, capsys, "status", "nope")
    assert code == 1 and out == "" and "NOT_FOUND: Could not find any versions of model nope" in err
    code, _, err = run_cli(server, capsys, "predict", LANGUAGE_MODEL_NAME, "--inputs", '{"bogus": [1]}')
    assert code == 1 and "'bogus' is not an input of serving_default" in err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as raised:
        serving_client.main(["--help"])
    assert raised.value.code == 0
    out = capsys.readouterr().out
    for command in ("predict", "classify", "tag", "score", "metadata", "status"):
        assert command in out
