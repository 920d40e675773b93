"""serving/export/: every signature, run by TensorFlow alone, agrees with the Keras model.

The models are tiny and random (seeded); what is checked is that the SavedModel
computes what the Keras model computes, through the tokenizer, padding and
state plumbing of docs/serving_contract.md. One fresh subprocess that imports
only tensorflow and numpy runs every signature of every export once (TensorFlow
starts slowly, so one process serves all cases); the tests compare its outputs
with the Keras model's, computed here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import zoo
from serving import export
from serving.export import cli as export_cli
from serving.export import signatures as export_signatures
from serving.export import writer as export_writer
from training.vocab import LabelVocabulary, Vocabulary

ATOL = 1e-5
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

WORDS = Vocabulary(["<pad>", "<unk>", "the", "cat", "sat", "on", "mat", "a", "dog", "<eos>"])
CHARS = Vocabulary(["<pad>", "<unk>", " ", "a", "b", "c", "\n", "é"])
CLASS_NAMES = LabelVocabulary(["negative", "positive"])
TAG_NAMES = LabelVocabulary(["DET", "NOUN", "VERB"])

# Word texts hold an out-of-vocabulary word ("zebra"), a no-break space (a
# separator for Python's str.split, which training uses) and an empty text.
WORD_TEXTS = ["the cat sat on the mat", "a zebra\u00a0sat", "dog", "", "  the   dog  "]
CHAR_TEXTS = ["abc ab", "é\r\nz", "c", ""]
# Ids below 8 fit both vocabularies; row 2 is all padding.
PROMPTS = [[2, 3, 4, 5], [7, 1, 0, 0], [0, 0, 0, 0], [6, 0, 0, 0]]
SENTENCES = ["the cat sat", "a zebra", "", "dog on the mat sat"]
TOKEN_ROWS = [["the", "cat", "", "", ""], ["zebra", "sat", "on", "", ""], ["", "", "", "", ""]]

# A tagger with a character model, on inputs of its own: an unknown word spelled
# with known characters ("cats"), an unknown character ("é"), and a word longer
# than max_word_length ("mattresses").
LETTERS = Vocabulary(["<pad>", "<unk>", *"acdehmnorst"])
CHAR_TAGGER = {"char_vocabulary_size": len(LETTERS), "char_embedding_dim": 4,
               "char_hidden_dim": 3, "max_word_length": 6}
CHAR_TAGGER_SENTENCES = ["the cat sat", "a cats zébra", "", "dog on the mattresses sat"]
CHAR_TAGGER_TOKENS = [["the", "cats", "", ""], ["zébra", "mattresses", "on", ""], ["", "", "", ""]]

SMALL = {"embedding_dim": 6, "hidden_dim": 6}
LANGUAGE_MODELS = {
    "lm_lstm_learned": ({"cell": "lstm", "num_layers": 2, "learned_initial_state": True},
                        "word"),
    "lm_gru_char": ({"cell": "gru"}, "char"),
    "lm_gated_lstm_tied": ({"cell": "gated_lstm", "gates": "input+output", "peepholes": True,
                            "tie_weights": True}, "word"),
}

# The subprocess: TensorFlow and numpy only, no project import. It runs every
# signature on the inputs in the spec and writes each output to one .npz.
RUNNER = r"""
import json, sys
import numpy as np
import tensorflow as tf

spec = json.load(open(sys.argv[1]))
out = {}

def text(array):
    return np.vectorize(lambda b: b.decode("utf-8"), otypes=[str])(array.numpy())

def example(sentence):
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[sentence.encode()]))
    return tf.train.Example(
        features=tf.train.Features(feature={"text": feature})).SerializeToString()

for case in spec["cases"]:
    name, model = case["name"], tf.saved_model.load(case["dir"])
    run = lambda signature, **inputs: model.signatures[signature](**inputs)
    if case["task"] == "language_model":
        ids = tf.constant(case["prompts"], tf.int64)
        batch, time = ids.shape
        out[name + "/logits"] = run("serving_default", token_ids=ids)["logits"].numpy()
        start = run("initial_state", batch_size=tf.constant(batch, tf.int32))["state"]
        out[name + "/initial_state"] = start.numpy()
        whole = run("step", token_ids=ids, state=start)
        out[name + "/step_logits"] = whole["logits"].numpy()
        out[name + "/step_state"] = whole["state"].numpy()
        state, per_step = start, []
        for t in range(time):
            one = run("step", token_ids=ids[:, t:t + 1], state=state)
            state = one["state"]
            per_step.append(one["logits"].numpy())
        out[name + "/single_step_logits"] = np.stack(per_step, axis=1)  # (batch, time, V)
        out[name + "/single_step_state"] = state.numpy()
        texts = tf.constant(case["texts"])
        tokens = run("tokenize", text=texts)
        out[name + "/token_ids"] = tokens["token_ids"].numpy()
        out[name + "/lengths"] = tokens["lengths"].numpy()
        out[name + "/detokenized"] = text(run("detokenize", token_ids=tokens["token_ids"])["text"])
        scored = run("score", text=texts)
        out[name + "/log_prob"] = scored["log_prob"].numpy()
        out[name + "/num_tokens"] = scored["num_tokens"].numpy()
    elif case["task"] == "classifier":
        sentences = case["sentences"]
        result = run("serving_default", sentences=tf.constant(sentences))
        out[name + "/probabilities"] = result["probabilities"].numpy()
        out[name + "/label_id"] = result["label_id"].numpy()
        out[name + "/label"] = text(result["label"])
        examples = tf.constant([example(sentence) for sentence in sentences])
        result = run("classify", inputs=examples)
        out[name + "/scores"] = result["scores"].numpy()
        out[name + "/classes"] = text(result["classes"])
    else:
        for signature, inputs in (("serving_default", {"sentences": case["sentences"]}),
                                  ("tag_tokens", {"tokens": case["tokens"]})):
            result = run(signature, **{key: tf.constant(value) for key, value in inputs.items()})
            for key in ("tokens", "tags"):
                out[f"{name}/{signature}/{key}"] = text(result[key])
            for key in ("probabilities", "lengths"):
                out[f"{name}/{signature}/{key}"] = result[key].numpy()

# (TensorFlow imports parts of Keras itself; the zoo's own packages must stay out.)
imported = sorted(m for m in ("zoo", "serving", "training") if m in sys.modules)
if imported:
    sys.exit(f"the SavedModels needed project imports: {imported}")
np.savez(spec["outputs"], **out)
"""


def _build(task, cell="lstm", vocabulary=WORDS, **options):
    if task == "classifier":
        options.setdefault("num_classes", len(CLASS_NAMES))
    if task == "tagger":
        options.setdefault("num_tags", len(TAG_NAMES))
    model = zoo.build(task, cell=cell, vocabulary_size=len(vocabulary), **{**SMALL, **options})
    model.build((None, None))
    # Biases start at zero; random ones make a wrongly computed pad position
    # (e.g. logits of an all-pad row) visible instead of accidentally zero.
    generator = np.random.default_rng(len(model.weights))
    for weight in model.weights:
        if "bias" in weight.path:
            weight.assign(generator.normal(size=weight.shape).astype("float32"))
    return model


def _pad(rows, value=0):
    width = max([len(row) for row in rows] + [1])
    return np.array([list(row) + [value] * (width - len(row)) for row in rows])


def _tokens(text, level):
    """Training's tokenization (training/datasets): str.split() or characters."""
    return list(text.replace("\r\n", "\n")) if level == "char" else text.split()


def _log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _softmax(logits):
    return np.exp(_log_softmax(logits))


def _subprocess_env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Exports every case, runs the subprocess once; returns models, paths and outputs."""
    base = tmp_path_factory.mktemp("saved_models")
    keras.utils.set_random_seed(7)
    cases, models, paths = [], {}, {}
    for name, (options, level) in LANGUAGE_MODELS.items():
        vocabulary = CHARS if level == "char" else WORDS
        model = _build("language_model", vocabulary=vocabulary, **options)
        if options.get("learned_initial_state"):
            vector = model.backbone.initial_state_vector
            vector.assign(np.random.default_rng(0).normal(size=vector.shape).astype("float32"))
        paths[name] = export.export_model(model, vocabulary, task="language_model",
                                          export_base=base, model_name=name, level=level)
        cases.append({"name": name, "task": "language_model", "prompts": PROMPTS,
                      "texts": CHAR_TEXTS if level == "char" else WORD_TEXTS})
        models[name] = (model, vocabulary, level)
    # Dropout in both: the signatures must run the model in inference mode.
    models["classifier"] = (_build("classifier", bidirectional=True, pooling="max", dropout=0.5),
                            WORDS, "word")
    models["tagger"] = _build("tagger", cell="gru", bidirectional=True, dropout=0.5), WORDS, "word"
    for task, labels in (("classifier", CLASS_NAMES), ("tagger", TAG_NAMES)):
        paths[task] = export.export_model(models[task][0], WORDS, task=task, export_base=base,
                                          model_name=task, labels=labels)
        cases.append({"name": task, "task": task, "sentences": SENTENCES, "tokens": TOKEN_ROWS})
    models["char_tagger"] = (_build("tagger", bidirectional=True, dropout=0.5, **CHAR_TAGGER),
                             WORDS, "word")
    paths["char_tagger"] = export.export_model(
        models["char_tagger"][0], WORDS, task="tagger", char_vocabulary=LETTERS, export_base=base,
        model_name="char_tagger", labels=TAG_NAMES)
    cases.append({"name": "char_tagger", "task": "tagger", "sentences": CHAR_TAGGER_SENTENCES,
                  "tokens": CHAR_TAGGER_TOKENS})
    models["char_classifier"] = (_build("classifier", bidirectional=True, pooling="max", dropout=0.5,
                                        **CHAR_TAGGER), WORDS, "word")
    paths["char_classifier"] = export.export_model(
        models["char_classifier"][0], WORDS, task="classifier", char_vocabulary=LETTERS,
        export_base=base, model_name="char_classifier", labels=CLASS_NAMES)
    cases.append({"name": "char_classifier", "task": "classifier",
                  "sentences": CHAR_TAGGER_SENTENCES})
    for case in cases:
        case["dir"] = str(paths[case["name"]])

    spec_path = base / "spec.json"
    outputs_path = base / "outputs.npz"
    spec_path.write_text(json.dumps({"cases": cases, "outputs": str(outputs_path)}))
    completed = subprocess.run([sys.executable, "-c", RUNNER, str(spec_path)], cwd=base,
                               env=_subprocess_env(), capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    with np.load(outputs_path) as outputs:
        return {"models": models, "paths": paths, "outputs": dict(outputs)}


# === Language models ===


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_language_model_logits_and_initial_state(exported, name):
    model, _, _ = exported["models"][name]
    out = exported["outputs"]
    prompts = np.array(PROMPTS)
    expected = np.asarray(model(prompts))  # (batch, time, V)
    real = (prompts != 0)[:, :, None]
    np.testing.assert_allclose(out[f"{name}/logits"], np.where(real, expected, 0.0), atol=ATOL)
    np.testing.assert_allclose(out[f"{name}/initial_state"],
                               np.asarray(model.initial_state(len(PROMPTS))), atol=ATOL)
    if LANGUAGE_MODELS[name][0].get("learned_initial_state"):
        assert np.abs(out[f"{name}/initial_state"]).min() > 0, "the learned state, not zeros"


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_step_matches_per_row_keras_calls(exported, name):
    model, _, _ = exported["models"][name]
    out = exported["outputs"]
    start = out[f"{name}/initial_state"]
    for row, prompt in enumerate(PROMPTS):
        length = sum(1 for token in prompt if token)
        if length == 0:
            # All padding: the state comes back unchanged and the logits are zero.
            np.testing.assert_array_equal(out[f"{name}/step_state"][row], start[row])
            np.testing.assert_array_equal(out[f"{name}/step_logits"][row], 0.0)
            continue
        logits, state = model(np.array([prompt[:length]]), initial_state=start[row:row + 1],
                              return_state=True)
        np.testing.assert_allclose(out[f"{name}/step_logits"][row], np.asarray(logits)[0, -1],
                                   atol=ATOL)
        np.testing.assert_allclose(out[f"{name}/step_state"][row], np.asarray(state)[0],
                                   atol=ATOL)


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_one_step_of_k_tokens_equals_k_single_steps(exported, name):
    out = exported["outputs"]
    np.testing.assert_allclose(out[f"{name}/single_step_state"], out[f"{name}/step_state"],
                               atol=ATOL)
    prompts = np.array(PROMPTS)
    single = out[f"{name}/single_step_logits"]  # (batch, time, V)
    assert np.all(single[prompts == 0] == 0.0), "a pad-only step returns zero logits"
    for row, prompt in enumerate(PROMPTS):
        length = int((prompts[row] != 0).sum())
        if length:
            np.testing.assert_allclose(single[row, length - 1], out[f"{name}/step_logits"][row],
                                       atol=ATOL)


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_tokenize_detokenize_and_score(exported, name):
    model, vocabulary, level = exported["models"][name]
    out = exported["outputs"]
    texts = CHAR_TEXTS if level == "char" else WORD_TEXTS
    encoded = [vocabulary.encode(_tokens(text, level)) for text in texts]
    ids = _pad(encoded)
    np.testing.assert_array_equal(out[f"{name}/token_ids"], ids)
    np.testing.assert_array_equal(out[f"{name}/lengths"], [len(row) for row in encoded])
    assert 1 in ids[1], "an unseen token becomes <unk>, id 1"
    joiner = "" if level == "char" else " "
    assert list(out[f"{name}/detokenized"]) == [
        joiner.join(vocabulary.decode(row)) for row in encoded]
    if level == "word":
        assert out[f"{name}/detokenized"][0] == WORD_TEXTS[0]

    log_probs = _log_softmax(np.asarray(model(ids)))  # (batch, time, V)
    for row, tokens in enumerate(encoded):
        expected = sum(log_probs[row, i - 1, tokens[i]] for i in range(1, len(tokens)))
        assert out[f"{name}/num_tokens"][row] == max(len(tokens) - 1, 0)
        np.testing.assert_allclose(out[f"{name}/log_prob"][row], expected, atol=ATOL)


# === Classifier and tagger ===


def test_classifier_predict_and_classify(exported):
    model, vocabulary, _ = exported["models"]["classifier"]
    out = exported["outputs"]
    ids = _pad([vocabulary.encode(sentence.split()) for sentence in SENTENCES])
    probabilities = _softmax(np.asarray(model(ids)))
    np.testing.assert_allclose(out["classifier/probabilities"], probabilities, atol=ATOL)
    np.testing.assert_array_equal(out["classifier/label_id"], probabilities.argmax(axis=-1))
    assert list(out["classifier/label"]) == [CLASS_NAMES.names[i]
                                             for i in probabilities.argmax(axis=-1)]
    np.testing.assert_allclose(out["classifier/scores"], probabilities, atol=ATOL)
    assert out["classifier/classes"].tolist() == [CLASS_NAMES.names] * len(SENTENCES)


@pytest.mark.parametrize("signature", ["serving_default", "tag_tokens"])
def test_tagger_matches_keras_with_padding_masked(exported, signature):
    model, vocabulary, _ = exported["models"]["tagger"]
    out = exported["outputs"]
    rows = ([sentence.split() for sentence in SENTENCES] if signature == "serving_default"
            else [[token for token in row if token] for row in TOKEN_ROWS])
    tokens = (_pad(rows, "") if signature == "serving_default"
              else np.array(TOKEN_ROWS))  # tag_tokens keeps the input's width
    ids = np.array([[vocabulary.encode([token])[0] if token else 0 for token in row]
                    for row in tokens])
    probabilities = _softmax(np.asarray(model(ids)))  # (batch, time, tags)
    real = tokens != ""
    expected_tags = np.where(real, np.array(TAG_NAMES.names)[probabilities.argmax(axis=-1)], "")
    expected_probabilities = np.where(real, probabilities.max(axis=-1), 0.0)

    prefix = f"tagger/{signature}"
    assert out[f"{prefix}/tokens"].tolist() == tokens.tolist()
    assert out[f"{prefix}/tags"].tolist() == expected_tags.tolist()
    np.testing.assert_allclose(out[f"{prefix}/probabilities"], expected_probabilities, atol=ATOL)
    np.testing.assert_array_equal(out[f"{prefix}/lengths"], [len(row) for row in rows])


def _spell(tokens, characters, max_word_length):
    """Training's character ids of (batch, time) tokens: list(token), cut, padded with 0."""
    words = [[characters.encode(list(token[:max_word_length])) for token in row] for row in tokens]
    width = max([len(word) for row in words for word in row] + [1])
    return np.array([[word + [0] * (width - len(word)) for word in row] for row in words])


@pytest.mark.parametrize("signature", ["serving_default", "tag_tokens"])
def test_char_tagger_spells_tokens_in_the_graph_as_training_does(exported, signature):
    model, vocabulary, _ = exported["models"]["char_tagger"]
    out = exported["outputs"]
    tokens = (_pad([sentence.split() for sentence in CHAR_TAGGER_SENTENCES], "")
              if signature == "serving_default" else np.array(CHAR_TAGGER_TOKENS))
    inputs = {"token_ids": np.array([[vocabulary.encode([token])[0] if token else 0
                                      for token in row] for row in tokens]),
              "char_ids": _spell(tokens, LETTERS, model.max_word_length)}
    assert 1 in inputs["char_ids"], "é is an unknown character"
    probabilities = _softmax(np.asarray(model(inputs)))  # (batch, time, tags)
    real = tokens != ""

    prefix = f"char_tagger/{signature}"
    assert out[f"{prefix}/tokens"].tolist() == tokens.tolist()
    expected_tags = np.where(real, np.array(TAG_NAMES.names)[probabilities.argmax(axis=-1)], "")
    assert out[f"{prefix}/tags"].tolist() == expected_tags.tolist()
    np.testing.assert_allclose(out[f"{prefix}/probabilities"],
                               np.where(real, probabilities.max(axis=-1), 0.0), atol=ATOL)
    np.testing.assert_array_equal(out[f"{prefix}/lengths"], real.sum(axis=1))
    # Without its spelling the same model tags differently: the characters count.
    blind = _softmax(np.asarray(model({**inputs, "char_ids": np.zeros_like(inputs["char_ids"])})))
    assert not np.allclose(np.where(real, blind.max(axis=-1), 0.0),
                           out[f"{prefix}/probabilities"], atol=1e-3)


def test_char_classifier_spells_tokens_in_the_graph_as_training_does(exported):
    from training.datasets import ClassificationData, classification_dataset

    model, vocabulary, _ = exported["models"]["char_classifier"]
    out = exported["outputs"]
    # The batches training builds, characters included, for the same sentences.
    data = ClassificationData(sentences=[sentence.split() for sentence in CHAR_TAGGER_SENTENCES],
                              labels=[0] * len(CHAR_TAGGER_SENTENCES), label_names=["0", "1"],
                              source="test")
    (inputs, _), = classification_dataset(data, vocabulary, 8, characters=LETTERS,
                                          max_word_length=model.max_word_length)
    assert 1 in inputs["char_ids"].numpy(), "é is an unknown character"
    probabilities = _softmax(np.asarray(model(inputs)))  # (batch, classes)
    for key in ("probabilities", "scores"):
        np.testing.assert_allclose(out[f"char_classifier/{key}"], probabilities, atol=ATOL)
    assert list(out["char_classifier/label"]) == [CLASS_NAMES.names[i]
                                                  for i in probabilities.argmax(axis=-1)]
    # Without its spelling the same model answers differently: the characters count.
    blind = _softmax(np.asarray(model({**inputs, "char_ids": np.zeros_like(inputs["char_ids"])})))
    assert not np.allclose(blind, out["char_classifier/probabilities"], atol=1e-4)
    zoo_info = json.loads((exported["paths"]["char_classifier"] / "assets.extra" / "zoo.json")
                          .read_text())
    assert (zoo_info["char_vocabulary_size"], zoo_info["max_word_length"]) == (len(LETTERS), 6)


def test_char_tagger_export_arguments(exported, tmp_path):
    model, _, _ = exported["models"]["char_tagger"]
    common = {"task": "tagger", "labels": TAG_NAMES, "export_base": tmp_path, "model_name": "m"}
    with pytest.raises(ValueError, match="pass char_vocabulary"):
        export.export_model(model, WORDS, **common)
    with pytest.raises(ValueError, match="char_vocabulary_size is 13"):
        export.export_model(model, WORDS, char_vocabulary=CHARS, **common)
    word_tagger, _, _ = exported["models"]["tagger"]
    with pytest.raises(ValueError, match="only for a tagger or classifier with a character model"):
        export.export_model(word_tagger, WORDS, char_vocabulary=LETTERS, **common)
    path = exported["paths"]["char_tagger"]
    assert json.loads((path / "assets.extra" / "char_vocabulary.json").read_text()) == {
        "tokens": LETTERS.tokens}
    zoo_info = json.loads((path / "assets.extra" / "zoo.json").read_text())
    assert (zoo_info["char_vocabulary_size"], zoo_info["max_word_length"]) == (len(LETTERS), 6)
    assert "char_vocabulary_size" not in json.loads(
        (exported["paths"]["tagger"] / "assets.extra" / "zoo.json").read_text())


# === What tools see ===


@pytest.mark.parametrize("name", ["lm_lstm_learned", "classifier", "tagger"])
def test_saved_model_cli_lists_every_signature(exported, name):
    task = "language_model" if name.startswith("lm") else name
    completed = subprocess.run(
        [str(BIN / "saved_model_cli"), "show", "--dir", str(exported["paths"][name]), "--all"],
        env=_subprocess_env(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    listing = completed.stdout
    for signature in export.SIGNATURES[task]:
        assert f"signature_def['{signature}']" in listing
    if task == "classifier":
        classify = listing.split("signature_def['classify']")[1].split("signature_def[")[0]
        assert "Method name is: tensorflow/serving/classify" in classify
        assert "inputs['inputs']" in classify and "DT_STRING" in classify
        assert "outputs['scores']" in classify and "outputs['classes']" in classify


def test_side_files(exported):
    for name, path in exported["paths"].items():
        model, vocabulary, level = exported["models"][name]
        zoo_info = json.loads((path / "assets.extra" / "zoo.json").read_text())
        config = json.loads((path / "config.json").read_text())
        task = config["task"]
        assert zoo_info["task"] == task and zoo_info["tokenizer"] == level
        assert zoo_info["vocabulary_size"] == len(vocabulary)
        assert zoo_info["signatures"] == list(export.SIGNATURES[task])
        if task == "language_model":
            assert zoo_info["state_size"] == model.state_size
            assert zoo_info.get("end_token") == ("<eos>" if level == "word" else None)
        else:
            assert zoo_info["labels"] == (CLASS_NAMES if task == "classifier" else TAG_NAMES).names
        # The default config rebuilds the same model.
        rebuilt = zoo.build(task, cell=config["cell"], **config["model"])
        assert {**rebuilt.get_config(), "name": None} == {**model.get_config(), "name": None}
        assert json.loads((path / "training.json").read_text()) == {"metrics": {}}
        assert (path / "MODEL_CARD.md").read_text().startswith(f"# {name} (version 1)")
        assert not [entry.name for entry in path.parent.iterdir() if entry.name != "1"]
        assert path.stat().st_mode & 0o777 == 0o755, "readable by a server of another user"


def test_every_export_carries_warmup_requests_the_server_replays(exported):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from serving.server.servable import Servable
    from serving.server.warmup import run_saved_model_warmup

    for name, path in exported["paths"].items():
        task = json.loads((path / "config.json").read_text())["task"]
        records = [record.numpy() for record in
                   tf.data.TFRecordDataset(str(path / "assets.extra" / "tf_serving_warmup_requests"))]
        logs = [prediction_log_pb2.PredictionLog.FromString(record) for record in records]
        kinds = {(log.WhichOneof("log_type"),
                  getattr(log, log.WhichOneof("log_type")).request.model_spec.signature_name) for log in logs}
        expected = {("classify_log" if (task, signature) == ("classifier", "classify") else "predict_log",
                     signature) for signature in export.SIGNATURES[task]}
        assert kinds == expected, name
        # The server's warm-up runs every one of them on the loaded version without an error.
        assert run_saved_model_warmup(Servable.load(name, 1, path)) == len(expected), name


# === Versions ===


def test_versions_increment_atomically_and_refuse_overwrite(tmp_path, monkeypatch):
    model = _build("classifier", cell="simple_rnn")
    write = lambda **kw: export.export_model(  # noqa: E731
        model, WORDS, task="classifier", export_base=tmp_path, model_name="sst",
        labels=CLASS_NAMES, **kw)
    (tmp_path / "sst" / ".tmp-7-leftover").mkdir(parents=True)  # never a version
    assert write().name == "1"
    assert write(config={"task": "classifier", "note": "second"}).name == "2"
    with pytest.raises(ValueError, match="already exists"):
        write(version=2)
    replaced = write(version=2, overwrite=True, config={"task": "classifier", "note": "third"})
    assert json.loads((replaced / "config.json").read_text())["note"] == "third"

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_writer, "write_side_files", fail)
    with pytest.raises(OSError, match="disk full"):
        write()
    assert sorted(entry.name for entry in (tmp_path / "sst").iterdir()) == [
        ".tmp-7-leftover", "1", "2"]


def test_bad_arguments_raise_clear_errors(tmp_path):
    model = _build("classifier")
    common = {"export_base": tmp_path, "model_name": "m"}
    with pytest.raises(ValueError, match="needs a LanguageModel"):
        export.export_model(model, WORDS, task="language_model", **common)
    with pytest.raises(ValueError, match="needs labels"):
        export.export_model(model, WORDS, task="classifier", **common)
    with pytest.raises(ValueError, match="vocabulary_size"):
        export.export_model(model, CHARS, task="classifier", labels=CLASS_NAMES, **common)
    with pytest.raises(ValueError, match="model_name"):
        export.export_model(model, WORDS, task="classifier", labels=CLASS_NAMES,
                            export_base=tmp_path, model_name="../escape")
    with pytest.raises(ValueError, match="level"):
        export.export_model(model, WORDS, task="classifier", labels=CLASS_NAMES, level="byte",
                            **common)
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").iterdir())


def test_classifier_tokenizer_unescapes_brackets_as_the_sst_readers_do():
    import tensorflow as tf

    from training.datasets.sst import BRACKET_ESCAPES, unescape_brackets

    tokens = ["<pad>", "<unk>", "a", *BRACKET_ESCAPES.values()]
    text = "a -lrb- -RRB- -Lsb- -rsb- -lcb- -rcb- -lrb-x ( zebra"
    expected = Vocabulary(tokens).encode(unescape_brackets(text.split()))
    assert expected[1:7] == [3, 4, 5, 6, 7, 8] and expected[7] == 1, "-lrb-x is a word, not an escape"
    classifier = export_signatures._Tokenizer(tokens, "word", unescape_brackets=True)
    ids, lengths = classifier.encode(tf.constant([text]))
    assert ids.numpy()[0].tolist() == expected and lengths.numpy().tolist() == [len(expected)]
    # Other tasks keep what the client sent.
    plain, _ = export_signatures._Tokenizer(tokens, "word").encode(tf.constant(["-lrb- ("]))
    assert plain.numpy()[0].tolist() == [1, 3]


def test_whitespace_is_what_str_split_splits_on():
    python_whitespace = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    assert export_signatures._PYTHON_WHITESPACE == python_whitespace


# === Training runs and the command line ===


def test_export_run_and_cli(tmp_path):
    run = tmp_path / "runs" / "ewt_tiny"
    run.mkdir(parents=True)
    model = _build("tagger", cell="lstm", bidirectional=True)
    model.save(run / "model.keras")
    WORDS.save(run / "vocabulary.json")
    TAG_NAMES.save(run / "labels.json")
    config = {"task": "tagger", "preset": None, "cell": "lstm",
              "model": {**SMALL, "bidirectional": True},
              "training": {"batch_size": 32, "epochs": 1, "optimizer": "adam"},
              "data": {"source": "/data/ud_english_ewt", "level": "word"},
              "command": "rnn-zoo-train --task tagger"}
    (run / "config.json").write_text(json.dumps(config))
    metrics = {"dev": {"accuracy": 0.25, "loss": 1.1}, "epochs": 1}
    (run / "metrics.json").write_text(json.dumps(metrics))

    base = tmp_path / "saved_models"
    path = export.export_run(run, export_base=base)
    assert path == base / "ewt_tiny" / "1"
    assert json.loads((path / "config.json").read_text()) == config
    training = json.loads((path / "training.json").read_text())
    assert training["metrics"] == metrics and training["command"] == config["command"]
    card = (path / "MODEL_CARD.md").read_text()
    assert "CC BY-SA 4.0" in card and "accuracy: 0.25" in card and "tagger" in card

    assert export_cli.main(["--run", str(run), "--model_name", "ewt_tiny", "--export_base",
                            str(base), "--version", "1"]) == 2  # exists, no --overwrite
    completed = subprocess.run(
        [sys.executable, "-m", "serving.export.cli", "--run", str(run), "--model_name", "pos",
         "--export_base", str(base)],
        cwd=REPOSITORY_ROOT, env=_subprocess_env(), capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == str(base / "pos" / "1")
    assert (base / "pos" / "1" / "saved_model.pb").exists()


# TensorFlow Serving's C++ server and `saved_model_cli run` load a SavedModel into
# a TF1 Session and restore variables through the graph's saver, not through the
# TF2 object graph. This runs one signature per task that way.
SESSION_RUNNER = r"""
import json, sys
import numpy as np
import tensorflow as tf

spec = json.loads(open(sys.argv[1]).read())
results = {}
for name, (signature, feeds) in spec.items():
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], feeds.pop("__dir__"))
        signature_def = meta.signature_def[signature]
        feed = {signature_def.inputs[key].name: np.asarray(value, dtype=dtype)
                for key, (value, dtype) in feeds.items()}
        fetches = {key: info.name for key, info in signature_def.outputs.items()}
        values = session.run(fetches, feed_dict=feed)
        results[name] = {key: np.asarray(value).tolist() for key, value in values.items()
                         if np.asarray(value).dtype.kind == "f"}
print(json.dumps(results))
"""


def test_tf1_session_loader_as_tf_serving_uses_restores_every_variable(exported, tmp_path):
    state_size = exported["models"]["lm_lstm_learned"][0].state_size
    spec = {
        "lm_lstm_learned": ("step", {"__dir__": str(exported["paths"]["lm_lstm_learned"]),
                                     "token_ids": (PROMPTS, "int64"),
                                     "state": (np.zeros((len(PROMPTS), state_size)).tolist(), "float32")}),
        "classifier": ("serving_default", {"__dir__": str(exported["paths"]["classifier"]),
                                           "sentences": (SENTENCES, "object")}),
        "tagger": ("serving_default", {"__dir__": str(exported["paths"]["tagger"]),
                                       "sentences": (SENTENCES, "object")}),
    }
    spec_path = tmp_path / "session_spec.json"
    spec_path.write_text(json.dumps(spec))
    completed = subprocess.run([sys.executable, "-c", SESSION_RUNNER, str(spec_path)],
                               env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])

    model, _, _ = exported["models"]["lm_lstm_learned"]
    zeros = np.zeros((len(PROMPTS), state_size), dtype="float32")
    for row, prompt in enumerate(PROMPTS):
        length = sum(1 for token in prompt if token)
        if length:
            logits, state = model(np.array([prompt[:length]]), initial_state=zeros[row:row + 1], return_state=True)
            np.testing.assert_allclose(results["lm_lstm_learned"]["logits"][row], logits[0, -1], atol=ATOL)
            np.testing.assert_allclose(results["lm_lstm_learned"]["state"][row], state[0], atol=ATOL)

    classifier, vocabulary, _ = exported["models"]["classifier"]
    ids = _pad([vocabulary.encode(sentence.split()) or [0] for sentence in SENTENCES])
    expected = _softmax(np.asarray(classifier(np.array(ids))))
    for row, sentence in enumerate(SENTENCES):
        if sentence:
            np.testing.assert_allclose(results["classifier"]["probabilities"][row], expected[row], atol=ATOL)
    assert np.asarray(results["tagger"]["probabilities"]).shape[0] == len(SENTENCES)


def test_tf1_session_loader_runs_the_char_tagger(exported, tmp_path):
    directory = str(exported["paths"]["char_tagger"])
    spec = {
        "serving_default": ("serving_default", {"__dir__": directory,
                                                "sentences": (CHAR_TAGGER_SENTENCES, "object")}),
        "tag_tokens": ("tag_tokens", {"__dir__": directory,
                                      "tokens": (CHAR_TAGGER_TOKENS, "object")}),
    }
    spec_path = tmp_path / "session_spec.json"
    spec_path.write_text(json.dumps(spec))
    completed = subprocess.run([sys.executable, "-c", SESSION_RUNNER, str(spec_path)],
                               env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    for signature in spec:
        # The TF2 loader's outputs, which the test above checks against Keras.
        np.testing.assert_allclose(results[signature]["probabilities"],
                                   exported["outputs"][f"char_tagger/{signature}/probabilities"],
                                   atol=ATOL)


def test_a_language_models_card_says_where_its_dev_region_starts():
    from serving.export.side_files import _model_card

    zoo_info = {"task": "language_model", "tokenizer": "char", "vocabulary_size": 67, "state_size": 8,
                "signatures": ["step"]}
    data = {"source": "../shared/data/tinyshakespeare", "level": "char", "valid_fraction": 0.1,
            "valid_start": "^SLY:$"}
    card = _model_card(model_name="chars", version=3, config={"task": "language_model", "cell": "lstm"},
                       zoo_info=zoo_info, training_info={"data": data}, metrics={"dev": {"cross_entropy": 1.5}})
    assert ("- Dev: the text from the first line matching `^SLY:$` after the last 10% mark of the source; "
            "train is the text before it") in card
    without = _model_card(model_name="chars", version=3, config={"task": "language_model", "cell": "lstm"},
                          zoo_info=zoo_info, training_info={"data": {**data, "valid_start": None}},
                          metrics={})
    assert "- Dev:" not in without
