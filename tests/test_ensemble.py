"""zoo.Ensemble and rnn-zoo-ensemble: the mean of the members' probabilities, saved,
evaluated and exported like any run; members from other data are refused."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from serving import export
from training import ensemble as ensemble_cli
from training import evaluate as evaluate_cli
from training import train as train_cli

from tiny_corpora import write_conllu, write_sst

SMALL = ["--set", "embedding_dim=8", "--set", "hidden_dim=8", "--verbose", "0",
         "--early_stopping_patience", "0", "--batch_size", "8"]
CHARS = ["--set", "char_embedding_dim=4", "--set", "char_hidden_dim=6"]


def _softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _classifier(seed, **options):
    keras.utils.set_random_seed(seed)
    model = zoo.build("classifier", vocabulary_size=12, embedding_dim=4, hidden_dim=5,
                      bidirectional=True, pooling="max", **options)
    model(np.ones((1, 3), "int32"))
    return model


def test_classifier_ensemble_answers_the_mean_probability_and_saves(tmp_path):
    members = [_classifier(seed) for seed in (0, 1, 2)]
    ensemble = zoo.Ensemble(members)
    ids = np.array([[2, 3, 4, 0], [5, 6, 0, 0], [7, 8, 9, 10]], "int32")
    expected = np.mean([_softmax(np.asarray(m(ids))) for m in members], axis=0)
    # The members disagree, so the mean is not any one of them.
    assert np.abs(_softmax(np.asarray(members[0](ids))) - expected).max() > 1e-3
    output = np.asarray(ensemble(ids))
    np.testing.assert_allclose(np.exp(output).sum(-1), 1.0, atol=1e-6)  # log-probabilities
    np.testing.assert_allclose(_softmax(output), expected, atol=1e-6)
    assert ensemble.task == "classifier" and ensemble.num_classes == 2 and ensemble.vocabulary_size == 12

    ensemble.save(tmp_path / "ensemble.keras")
    loaded = keras.saving.load_model(tmp_path / "ensemble.keras", compile=False)
    assert isinstance(loaded, zoo.Ensemble) and len(loaded.members) == 3
    np.testing.assert_allclose(np.asarray(loaded(ids)), output, atol=1e-6)


def test_tagger_ensemble_gives_each_member_the_inputs_it_takes():
    keras.utils.set_random_seed(0)
    spelled = zoo.build("tagger", vocabulary_size=12, num_tags=4, embedding_dim=4, hidden_dim=5,
                        bidirectional=True, char_vocabulary_size=9, char_hidden_dim=3,
                        max_word_length=5)
    longer = zoo.build("tagger", vocabulary_size=12, num_tags=4, embedding_dim=4, hidden_dim=5,
                       char_vocabulary_size=9, char_hidden_dim=3, max_word_length=8)
    words_only = zoo.build("tagger", vocabulary_size=12, num_tags=4, embedding_dim=4, hidden_dim=5)
    ensemble = zoo.Ensemble([spelled, longer, words_only])
    assert ensemble.uses_characters and ensemble.max_word_length == 8
    assert ensemble.char_vocabulary_size == 9
    rng = np.random.default_rng(0)
    inputs = {"token_ids": np.array([[2, 3, 0], [4, 5, 6]], "int32"),
              "char_ids": rng.integers(0, 9, size=(2, 3, 8)).astype("int32")}
    expected = np.mean([_softmax(np.asarray(spelled(inputs))), _softmax(np.asarray(longer(inputs))),
                        _softmax(np.asarray(words_only(inputs["token_ids"])))], axis=0)
    np.testing.assert_allclose(_softmax(np.asarray(ensemble(inputs))), expected, atol=1e-6)


@pytest.mark.parametrize("members, message", [
    (lambda: [_classifier(0)], "at least two"),
    (lambda: [_classifier(0), zoo.build("classifier", vocabulary_size=13)], "vocabulary_size"),
    (lambda: [_classifier(0), zoo.build("classifier", vocabulary_size=12, num_classes=3)],
     "num_classes"),
    (lambda: [_classifier(0), zoo.build("tagger", vocabulary_size=12)], "must all be SentenceClassifiers"),
    (lambda: [zoo.build("language_model", vocabulary_size=12)] * 2, "Language models"),
])
def test_members_that_cannot_be_averaged_are_refused(members, message):
    with pytest.raises(ValueError, match=message):
        zoo.Ensemble(members())


@pytest.fixture(scope="module")
def tagger_runs(tmp_path_factory):
    """Two character taggers on the same tiny treebank, seeds 0 and 1; one on another treebank."""
    root = tmp_path_factory.mktemp("ensemble")
    data, other = write_conllu(root / "ud"), write_conllu(root / "ud_other", seed=5)
    runs = []
    for name, source, seed in (("s0", data, 0), ("s1", data, 1), ("other", other, 0)):
        run = root / name
        args = ["--preset", "ewt_char_bilstm", "--data", str(source), "--epochs", "1",
                "--seed", str(seed), "--output_dir", str(run), *SMALL, *CHARS]
        assert train_cli.main(args) == 0
        runs.append(run)
    return root, runs


def test_ensemble_run_is_evaluated_and_exported_as_the_mean_of_its_members(tagger_runs, capsys):
    root, (first, second, _) = tagger_runs
    output = root / "ensemble"
    assert ensemble_cli.main(["--runs", str(first), str(second), "--output_dir", str(output)]) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((output / "metrics.json").read_text())
    assert printed["dev"]["accuracy"] == metrics["dev"]["accuracy"]
    assert [m["seed"] for m in metrics["members"]] == [0, 1]
    for member, run in zip(metrics["members"], (first, second)):
        assert member["dev"]["accuracy"] == json.loads((run / "metrics.json").read_text())["dev"]["accuracy"]
    for name in ("vocabulary.json", "labels.json", "char_vocabulary.json"):
        assert (output / name).read_text() == (first / name).read_text()
    config = json.loads((output / "config.json").read_text())
    assert config["model"]["ensemble_members"] == 2 and config["model"]["char_hidden_dim"] == 6
    assert config["command"].startswith("rnn-zoo-ensemble --runs")

    # rnn-zoo-evaluate takes the ensemble's run directory as it takes any run.
    assert evaluate_cli.main(["--run", str(output)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["accuracy"] == pytest.approx(metrics["dev"]["accuracy"])

    # The SavedModel's probabilities are the mean of the members' own SavedModels'.
    base = root / "saved_models"
    paths = [export.export_run(run, export_base=base, model_name=name)
             for run, name in ((first, "a"), (second, "b"), (output, "ensemble"))]
    tokens = tf.constant([["the", "dog", "runs"], ["a", "zebra", ""]])
    answers = []
    for path in paths:
        loaded = tf.saved_model.load(str(path))
        answers.append(loaded.signatures["tag_tokens"](tokens=tokens))
    for key in ("lengths", "tokens"):
        np.testing.assert_array_equal(answers[2][key], answers[0][key])
    card = (paths[2] / "MODEL_CARD.md").read_text()
    assert "An ensemble of 2 models" in card and "- seed 1: `" in card
    zoo_info = json.loads((paths[2] / "assets.extra" / "zoo.json").read_text())
    assert zoo_info["max_word_length"] == 24

    model = keras.saving.load_model(output / "model.keras", compile=False)
    members = [keras.saving.load_model(run / "model.keras", compile=False) for run in (first, second)]
    vocabulary = json.loads((first / "vocabulary.json").read_text())["tokens"]
    characters = json.loads((first / "char_vocabulary.json").read_text())["tokens"]
    words = [["the", "dog", "runs"], ["a", "zebra"]]
    token_ids = np.array([[vocabulary.index(w) if w in vocabulary else 1 for w in row] + [0] * (3 - len(row))
                          for row in words], "int32")
    char_ids = np.zeros((2, 3, 24), "int32")
    for r, row in enumerate(words):
        for t, word in enumerate(row):
            char_ids[r, t, :len(word)] = [characters.index(c) if c in characters else 1 for c in word]
    inputs = {"token_ids": token_ids, "char_ids": char_ids}
    mean = np.mean([_softmax(np.asarray(m(inputs))) for m in members], axis=0)
    np.testing.assert_allclose(_softmax(np.asarray(model(inputs))), mean, atol=1e-6)
    best = mean.max(-1) * (token_ids != 0)
    np.testing.assert_allclose(np.asarray(answers[2]["probabilities"]), best, atol=1e-5)
    labels = json.loads((first / "labels.json").read_text())["names"]
    assert [[labels[i] for i in row[:n]] for row, n in zip(mean.argmax(-1), (3, 2))] == \
        [[t.decode() for t in row[:n]] for row, n in zip(answers[2]["tags"].numpy(), (3, 2))]


def test_runs_on_other_data_are_refused(tagger_runs, capsys):
    root, (first, _, other) = tagger_runs
    assert ensemble_cli.main(["--runs", str(first), str(other), "--output_dir", str(root / "x")]) == 2
    error = capsys.readouterr().err
    assert "trained on other data" in error and "source" in error
    assert not (root / "x").exists()


def test_user_errors_exit_2_with_a_message(tagger_runs, tmp_path, capsys):
    root, (first, second, _) = tagger_runs
    cases = [
        (["--runs", str(first)], "at least two runs"),
        (["--runs", str(first), str(first)], "given twice"),
        (["--runs", str(first), str(tmp_path / "missing")], "no such file"),
        (["--runs", str(first), str(second), "--output_dir", str(first)], "one of the members"),
    ]
    for args, message in cases:
        if "--output_dir" not in args:
            args = [*args, "--output_dir", str(tmp_path / "out")]
        assert ensemble_cli.main(args) == 2, args
        assert message in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert ensemble_cli.main(["--runs", str(first), str(second), "--output_dir", str(busy)]) == 2
    assert "not empty" in capsys.readouterr().err and (busy / "notes.txt").exists()


def test_classifier_runs_ensemble_and_export(tmp_path, capsys):
    data = write_sst(tmp_path / "sst")
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"sst_{seed}"
        assert train_cli.main(["--preset", "sst_bilstm", "--data", str(data), "--epochs", "1",
                               "--seed", str(seed), "--output_dir", str(run), *SMALL]) == 0
        runs.append(run)
    output = tmp_path / "sst_ensemble"
    assert ensemble_cli.main(["--runs", *map(str, runs), "--output_dir", str(output)]) == 0
    capsys.readouterr()
    path = export.export_run(output, export_base=tmp_path / "saved_models", model_name="sst")
    served = tf.saved_model.load(str(path)).signatures["serving_default"]
    sentences = tf.constant(["the film is good", "a bad plot"])
    members = [tf.saved_model.load(str(export.export_run(run, export_base=tmp_path / "m")))
               .signatures["serving_default"](sentences=sentences)["probabilities"] for run in runs]
    np.testing.assert_allclose(served(sentences=sentences)["probabilities"], np.mean(members, 0),
                               atol=1e-6)
