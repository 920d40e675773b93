"""A run directory says what it was made from: the same command resumes, another corpus or config stops.

Before this, a second corpus trained into a used directory silently reused the
first corpus's vocabulary (most characters became `<unk>`, the perplexity
still looked fine).
"""

import json

import keras
import pytest

from training import run as run_module
from training import run_directory
from training import train as train_cli
from training.vocab import Vocabulary

from tiny_corpora import write_sst


SMALL = ["--set", "embedding_dim=4", "--set", "hidden_dim=4", "--verbose", "0"]


def write_characters(directory, text):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.txt").write_text(text * 40, encoding="utf-8")
    return directory


def char_args(data, run, *extra):
    return ["--task", "language_model", "--cell", "gru", "--level", "char", "--data", str(data),
            "--epochs", "1", "--batch_size", "2", "--num_steps", "8", "--output_dir", str(run),
            *SMALL, *extra]


def test_a_second_corpus_into_a_used_directory_stops_and_names_both(tmp_path, capsys):
    first = write_characters(tmp_path / "first", "abc abc cab\n")
    second = write_characters(tmp_path / "second", "xyz zyx qrs\n")
    run = tmp_path / "run"
    assert train_cli.main(char_args(first, run)) == 0
    vocabulary_before = (run / "vocabulary.json").read_text()
    capsys.readouterr()

    assert train_cli.main(char_args(second, run)) == 2
    err = capsys.readouterr().err
    assert str(first) in err and str(second) in err
    assert "--output_dir" in err and "--overwrite" in err and "Traceback" not in err
    assert (run / "vocabulary.json").read_text() == vocabulary_before, "the old run is left alone"

    assert train_cli.main(char_args(second, run, "--overwrite")) == 0
    tokens = Vocabulary.load(run / "vocabulary.json").tokens
    assert set("xyzqrs") <= set(tokens) and not set("abc") & set(tokens)
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["data"]["source"] == str(second)


def test_the_same_corpus_edited_in_place_is_another_run(tmp_path, capsys):
    data = write_characters(tmp_path / "text", "abc abc cab\n")
    run = tmp_path / "run"
    assert train_cli.main(char_args(data, run)) == 0
    write_characters(data, "abd abd dab\n")
    capsys.readouterr()
    assert train_cli.main(char_args(data, run)) == 2
    err = capsys.readouterr().err
    assert "train split" in err and "sha256" in err


def test_another_config_into_a_used_directory_names_the_option(tmp_path, capsys):
    data = write_characters(tmp_path / "text", "abc abc cab\n")
    run = tmp_path / "run"
    assert train_cli.main(char_args(data, run)) == 0
    capsys.readouterr()
    args = char_args(data, run)
    args[args.index("hidden_dim=4")] = "hidden_dim=6"
    assert train_cli.main(args) == 2
    assert "model.hidden_dim was 4, now 6" in capsys.readouterr().err


def test_the_same_command_on_a_finished_run_trains_it_again_and_more_epochs_are_the_same_run(tmp_path):
    data = write_characters(tmp_path / "text", "abc abc cab\n")
    run = tmp_path / "run"
    assert train_cli.main(char_args(data, run)) == 0
    assert train_cli.main(char_args(data, run)) == 0
    args = char_args(data, run)
    args[args.index("--epochs") + 1] = "2"
    assert train_cli.main(args) == 0
    history = (run / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1"], "a fresh history, not appended"


def test_leftover_files_without_a_manifest_are_not_taken_for_this_run(tmp_path, capsys):
    data = write_characters(tmp_path / "text", "abc abc cab\n")
    run = tmp_path / "run"
    run.mkdir()
    Vocabulary(["<pad>", "<unk>", "q"]).save(run / "vocabulary.json")
    assert train_cli.main(char_args(data, run)) == 2
    err = capsys.readouterr().err
    assert "vocabulary.json" in err and f"no {run_directory.MANIFEST}" in err
    assert train_cli.main(char_args(data, run, "--overwrite")) == 0
    assert "a" in Vocabulary.load(run / "vocabulary.json").tokens


class _StopInFirstEpoch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise KeyboardInterrupt


@pytest.mark.parametrize("existing", [False, True])
def test_a_run_stopped_before_its_first_epoch_leaves_nothing_behind(tmp_path, monkeypatch, existing):
    data = write_sst(tmp_path / "sst")
    run = tmp_path / "run"
    if existing:
        run.mkdir()
    original = run_module.make_callbacks
    monkeypatch.setattr(run_module, "make_callbacks", lambda c, d: original(c, d) + [_StopInFirstEpoch()])
    args = ["--task", "classifier", "--cell", "simple_rnn", "--data", str(data), "--epochs", "2",
            "--output_dir", str(run), *SMALL]
    with pytest.raises(KeyboardInterrupt):
        train_cli.main(args)
    assert run.exists() == existing
    assert not existing or not any(run.iterdir())


def test_identity_leaves_out_epochs_and_where_tfds_caches_data():
    class Split:
        sentences = [["a", "b"]]
        labels = [0]
        label_names = ["negative", "positive"]

    config = {"task": "classifier", "cell": "lstm", "model": {}, "seed": 0, "preset": None,
              "output_dir": "x", "command": "y",
              "training": {"epochs": 3, "batch_size": 8},
              "data": {"source": "s", "data_dir": "/cache", "download": True}}
    other = {**config, "output_dir": "z", "training": {"epochs": 9, "batch_size": 8},
             "data": {"source": "s", "data_dir": "/elsewhere", "download": False}}
    assert run_directory.identity(config, Split, Split) == run_directory.identity(other, Split, Split)
    changed = {**config, "training": {"epochs": 3, "batch_size": 16}}
    differences = run_directory.describe_differences(run_directory.identity(config, Split, Split),
                                                     run_directory.identity(changed, Split, Split))
    assert differences == ["training.batch_size was 8, now 16"]


@pytest.mark.parametrize("value, expected", [("abc", "an integer"), ("2.5", "an integer"),
                                             ("true", "an integer")])
def test_a_badly_typed_model_option_is_named(value, expected, tmp_path, capsys):
    data = write_sst(tmp_path / "sst")
    args = ["--task", "classifier", "--data", str(data), "--set", f"hidden_dim={value}",
            "--output_dir", str(tmp_path / "run")]
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "hidden_dim" in err and expected in err and "invalid literal" not in err
    assert not (tmp_path / "run").exists()


def test_the_command_lines_optimizer_choices_are_the_trainers():
    assert set(train_cli._OPTIMIZERS) == set(run_module.OPTIMIZERS)
