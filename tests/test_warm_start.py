"""rnn-zoo-train --init_from: a classifier or tagger started from language models
trained on the classifier's own sentences (Dai & Le 2015), --reverse for the
backward one, and the errors a user can make with them."""

import json

import keras
import numpy as np
import pytest

import zoo  # noqa: F401  (registers the zoo's classes for loading)
from serving import export
from training import train as train_cli
from training.datasets import load_split
from training.errors import DataError
from training.run import load_splits
from training.vocab import Vocabulary

from tiny_corpora import write_conllu, write_sst

SMALL = ["--set", "embedding_dim=8", "--set", "hidden_dim=8", "--verbose", "0", "--batch_size", "4",
         "--num_steps", "5"]


@pytest.fixture(scope="module")
def language_models(tmp_path_factory):
    """Left-to-right and right-to-left sst_lm runs on a tiny SST corpus's sentences."""
    root = tmp_path_factory.mktemp("warm_start")
    data = write_sst(root / "sst")
    runs = {}
    for name, extra in (("forward", []), ("backward", ["--reverse"])):
        runs[name] = root / name
        assert train_cli.main(["--preset", "sst_lm", "--data", str(data), "--epochs", "1",
                               "--output_dir", str(runs[name]), *SMALL, *extra]) == 0
    return root, data, runs


def test_a_sentiment_corpus_reads_as_language_model_text(tmp_path):
    data = write_sst(tmp_path / "sst")
    (data / "stsa.binary.train").write_text("1 a -lrb- good -rrb- film\n0 bad\n", encoding="utf-8")
    train = load_split("language_model", data, "train")
    assert train.tokens == ["a", "(", "good", ")", "film", "<eos>", "bad", "<eos>"]
    characters = load_split("language_model", data, "train", level="char")
    assert "".join(characters.tokens) == "a ( good ) film\nbad\n"
    dev = load_split("language_model", data, "dev")
    assert dev.source.endswith("stsa.binary.dev") and dev.tokens[-1] == "<eos>"
    with pytest.raises(DataError, match="no test file"):
        load_split("language_model", data, "test")


def test_reverse_reads_each_split_right_to_left(language_models):
    _, data, runs = language_models
    forward = load_split("language_model", data, "train").tokens
    config = json.loads((runs["backward"] / "config.json").read_text())
    assert config["data"]["reverse"] is True
    identity = json.loads((runs["backward"] / "run.json").read_text())
    # The reversed run's train split is the forward stream read from its end.
    train, dev = load_splits(config)
    assert train.tokens == forward[::-1]
    assert identity["data"]["train"]["size"] == len(forward)
    with pytest.raises(DataError, match="right to left"):
        export.export_run(runs["backward"], export_base=language_models[0] / "saved_models")


def test_classifier_starts_from_both_language_models(language_models, tmp_path):
    root, data, runs = language_models
    run = tmp_path / "classifier"
    # Zero epochs is not allowed; one epoch at learning rate 0 keeps the start as it was.
    assert train_cli.main(["--preset", "sst_bilstm", "--data", str(data), "--epochs", "1",
                           "--learning_rate", "0", "--output_dir", str(run),
                           "--init_from", str(runs["forward"]), str(runs["backward"]), *SMALL]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    report = metrics["init_from"]
    assert [entry["direction"] for entry in report["runs"]] == ["forward", "backward"]
    assert report["runs"][0]["layers"] == [0] and report["runs"][1]["layers"] == [0]

    classifier = keras.saving.load_model(run / "model.keras", compile=False).backbone
    vocabulary = Vocabulary.load(run / "vocabulary.json")
    for direction, lm_run in runs.items():
        lm = keras.saving.load_model(lm_run / "model.keras", compile=False).backbone
        layer = getattr(classifier.recurrent_layers[0], f"{direction}_layer")
        for mine, theirs in zip(layer.get_weights(), lm.recurrent_layers[0].get_weights()):
            np.testing.assert_array_equal(mine, theirs)
    lm = keras.saving.load_model(runs["forward"] / "model.keras", compile=False).backbone
    lm_vocabulary = Vocabulary.load(runs["forward"] / "vocabulary.json")
    shared = [t for t in vocabulary.tokens[1:] if t in lm_vocabulary.tokens]
    assert report["runs"][0]["words_copied"] == len(shared) > 5
    mine, theirs = classifier.embedding.get_weights()[0], lm.embedding.get_weights()[0]
    for token in shared:
        np.testing.assert_array_equal(mine[vocabulary.tokens.index(token)],
                                      theirs[lm_vocabulary.tokens.index(token)])


def test_tagger_takes_the_word_rows_of_its_first_layer(language_models, tmp_path):
    root, _, runs = language_models
    data = write_conllu(tmp_path / "ud")
    run = tmp_path / "tagger"
    assert train_cli.main(["--preset", "ewt_char_bilstm", "--data", str(data), "--epochs", "1",
                           "--learning_rate", "0", "--set", "char_embedding_dim=4",
                           "--set", "char_hidden_dim=3", "--output_dir", str(run),
                           "--init_from", str(runs["forward"]), *SMALL]) == 0
    report = json.loads((run / "metrics.json").read_text())["init_from"]
    assert [entry["direction"] for entry in report["runs"]] == ["forward"]
    tagger = keras.saving.load_model(run / "model.keras", compile=False).backbone
    lm = keras.saving.load_model(runs["forward"] / "model.keras", compile=False).backbone
    kernel = tagger.recurrent_layers[0].forward_layer.get_weights()[0]
    source = lm.recurrent_layers[0].get_weights()[0]
    assert kernel.shape[0] == 8 + 6  # the word vector, then both directions of the characters
    np.testing.assert_array_equal(kernel[:8], source)
    assert np.abs(kernel[8:]).sum() > 0  # the character rows keep their own start
    # The backward direction had no right-to-left model: it is not the forward one's copy.
    backward = tagger.recurrent_layers[0].backward_layer.get_weights()[1]
    assert not np.array_equal(backward, lm.recurrent_layers[0].get_weights()[1])


@pytest.mark.parametrize("case, message", [
    ("order", "must read text left to right"),
    ("sizes", "its hidden_dim is 8, this model's 16"),
    ("missing", "no run there"),
    ("classifier", "not a language model"),
    ("three", "one or two language-model runs"),
])
def test_user_errors_exit_2_with_a_message(language_models, tmp_path, capsys, case, message):
    root, data, runs = language_models
    init = {"order": [runs["backward"], runs["forward"]], "sizes": [runs["forward"]],
            "missing": [tmp_path / "nowhere"], "three": [runs["forward"]] * 3}.get(case)
    options = list(SMALL)
    if case == "sizes":
        options += ["--set", "hidden_dim=16"]
    if case == "classifier":
        # A finished classifier run, as far as --init_from looks before it loads anything.
        source = tmp_path / "source"
        source.mkdir()
        for name in ("model.keras", "vocabulary.json"):
            (source / name).write_bytes((runs["forward"] / name).read_bytes())
        config = json.loads((runs["forward"] / "config.json").read_text())
        (source / "config.json").write_text(json.dumps({**config, "task": "classifier"}))
        init = [source]
    capsys.readouterr()
    output = tmp_path / "out"
    assert train_cli.main(["--preset", "sst_bilstm", "--data", str(data), "--epochs", "1",
                           "--output_dir", str(output), "--init_from", *map(str, init), *options]) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_options_for_the_wrong_task_are_refused(language_models, capsys):
    root, data, runs = language_models
    assert train_cli.main(["--preset", "sst_bilstm", "--data", str(data), "--reverse",
                           "--dry_run"]) == 2
    assert "reverse" in capsys.readouterr().err
    assert train_cli.main(["--preset", "sst_lm", "--data", str(data), "--dry_run",
                           "--init_from", str(runs["forward"])]) == 2
    assert "init_from starts a classifier or tagger" in capsys.readouterr().err


def test_a_treebank_reads_as_language_model_text(tmp_path):
    data = write_conllu(tmp_path / "ud", train_size=3, dev_size=2)
    train = load_split("language_model", data, "train")
    assert train.tokens.count("<eos>") == 3 and len(train.tokens) == 3 * 4
    assert train.source.endswith("en_ewt-ud-train.conllu")
    assert load_split("language_model", data, "dev").tokens.count("<eos>") == 2


def test_init_layers_0_copies_the_word_vectors_only(language_models, tmp_path, capsys):
    _, data, runs = language_models
    run = tmp_path / "words_only"
    assert train_cli.main(["--preset", "sst_bilstm", "--data", str(data), "--epochs", "1",
                           "--learning_rate", "0", "--output_dir", str(run), "--init_layers", "0",
                           "--init_from", str(runs["forward"]), *SMALL]) == 0
    report = json.loads((run / "metrics.json").read_text())["init_from"]
    assert report["runs"][0]["layers"] == [] and report["runs"][0]["words_copied"] > 5
    classifier = keras.saving.load_model(run / "model.keras", compile=False).backbone
    lm = keras.saving.load_model(runs["forward"] / "model.keras", compile=False).backbone
    assert not np.array_equal(classifier.recurrent_layers[0].forward_layer.get_weights()[1],
                              lm.recurrent_layers[0].get_weights()[1])
    vocabulary = Vocabulary.load(run / "vocabulary.json")
    lm_vocabulary = Vocabulary.load(runs["forward"] / "vocabulary.json")
    np.testing.assert_array_equal(classifier.embedding.get_weights()[0][vocabulary.tokens.index("good")],
                                  lm.embedding.get_weights()[0][lm_vocabulary.tokens.index("good")])
    assert train_cli.main(["--preset", "sst_bilstm", "--data", str(data), "--init_layers", "1",
                           "--dry_run"]) == 2
    assert "give --init_from too" in capsys.readouterr().err
