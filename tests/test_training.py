"""Training: carried state, perplexity, schedules, the CLIs end to end, resume."""

import csv
import json
import math

import keras
import numpy as np
import pytest

import zoo
from serving import export
from training import evaluate as evaluate_cli
from training import run as run_module
from training import train as train_cli
from training.language_model import CarriedStateTrainer, evaluate_language_model
from training.lm_batching import lm_dataset
from training.metrics import Perplexity, per_tag_accuracy, perplexity
from training.schedules import zaremba_learning_rate

from tiny_corpora import write_conllu, write_spelled_sst, write_sst, write_text


def tiny_language_model(cell="lstm", **options):
    keras.utils.set_random_seed(3)
    return zoo.build("language_model", cell=cell, vocabulary_size=11, embedding_dim=4,
                     hidden_dim=4, **options)


# === Carried state ===


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_trainer_carries_state_from_batch_to_batch(cell):
    model = tiny_language_model(cell)
    ids = np.arange(2, 2 + 2 * 9 + 1) % 9 + 2  # two streams of 9, windows of 4
    batches = list(lm_dataset(ids, batch_size=2, num_steps=4))
    trainer = CarriedStateTrainer(model, batch_size=2)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainer.reset_state()

    # With a zero learning rate the weights stay put, so the carried state after
    # two batches must equal running both windows back to back in one call.
    trainer.train_on_batch(*batches[0])
    trainer.train_on_batch(*batches[1])
    both = np.concatenate([batches[0][0], batches[1][0]], axis=1)
    _, expected_state = model(both, return_state=True)
    np.testing.assert_allclose(trainer.train_state.numpy(), expected_state, rtol=1e-5, atol=1e-6)

    trainer.reset_state("train")
    trainer.train_on_batch(*batches[1])
    _, fresh_state = model(batches[1][0], return_state=True)
    np.testing.assert_allclose(trainer.train_state.numpy(), fresh_state, rtol=1e-5, atol=1e-6)


def test_learned_initial_state_gets_gradients_only_after_reset():
    model = tiny_language_model(learned_initial_state=True)
    ids = np.arange(40) % 9 + 2
    batches = list(lm_dataset(ids, batch_size=2, num_steps=4))
    trainer = CarriedStateTrainer(model, batch_size=2)
    trainer.compile(optimizer=keras.optimizers.SGD(1.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainer.reset_state()
    trainer.train_on_batch(*batches[0])
    after_first = model.backbone.initial_state_vector.numpy().copy()
    assert np.abs(after_first).sum() > 0, "the first batch after a reset trains the learned state"
    trainer.train_on_batch(*batches[1])
    np.testing.assert_array_equal(model.backbone.initial_state_vector.numpy(), after_first)


def test_perplexity_is_exp_of_mean_cross_entropy():
    model = tiny_language_model()
    ids = np.arange(200) % 9 + 2
    trainer = CarriedStateTrainer(model, batch_size=4)
    trainer.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=[Perplexity()])
    trainer.reset_state()
    results = trainer.evaluate(lm_dataset(ids, 4, 5), return_dict=True, verbose=0)
    assert results["perplexity"] == pytest.approx(math.exp(results["loss"]), rel=1e-5)

    direct = evaluate_language_model(model, ids, batch_size=4, num_steps=5)
    assert direct["perplexity"] == pytest.approx(math.exp(direct["cross_entropy"]), rel=1e-9)
    assert direct["cross_entropy"] == pytest.approx(results["loss"], rel=1e-5)
    # Windows carry the state, so this equals one pass over each whole stream.
    streams = ids[: 4 * 49 + 1]
    logits = model(streams[:-1].reshape(1, -1)[:, :49])  # stream 0 only, as a spot check
    assert np.isfinite(np.asarray(logits)).all()


def test_trainer_takes_perplexity_from_the_loss_with_one_softmax_per_step():
    import tensorflow as tf

    model = tiny_language_model()
    ids = np.arange(200) % 9 + 2
    trainer = CarriedStateTrainer(model, batch_size=4)
    trainer.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=[Perplexity()])  # dropped as a duplicate of the trainer's own
    assert [metric.name for metric in trainer.metrics] == ["loss", "perplexity"]
    history = trainer.fit(lm_dataset(ids, 4, 5), epochs=2, verbose=0, shuffle=False).history
    for loss, value in zip(history["loss"], history["perplexity"]):
        assert value == pytest.approx(math.exp(loss), rel=1e-5)
    tokens = tf.zeros((4, 5), tf.int32)
    graph = tf.function(trainer.train_step).get_concrete_function((tokens, tokens)).graph
    softmaxes = [op for op in graph.get_operations() if op.type == "SparseSoftmaxCrossEntropyWithLogits"]
    assert len(softmaxes) == 1, "the loss's softmax only; the metric must not run a second one"


def test_perplexity_from_a_known_mean():
    metric = Perplexity()
    metric.update_from_mean(2.0, 30)
    metric.update_from_mean(1.0, 10)
    assert float(metric.result()) == pytest.approx(math.exp((2.0 * 30 + 1.0 * 10) / 40), rel=1e-6)


def test_perplexity_metric_values():
    metric = Perplexity()
    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]], dtype="float32"))
    metric.update_state(np.array([[0, 1]]), logits)
    assert float(metric.result()) == pytest.approx(math.exp(-(math.log(0.5) + math.log(0.8)) / 2), rel=1e-5)
    assert perplexity(0.0) == 1.0 and perplexity(1e6) == float("inf")


def test_zaremba_schedule_matches_the_paper():
    # Small model: lr 1 for epochs 1-4, then halved every epoch (0-based below).
    rates = [zaremba_learning_rate(e, 1.0, 0.5, 5) for e in range(7)]
    assert rates == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125]
    assert zaremba_learning_rate(10, 0.001) == 0.001


def test_per_tag_accuracy_values():
    result = per_tag_accuracy([[0, 1, 1], [2]], [[0, 1, 0], [1]], ["A", "B", "C"])
    assert result == {"A": {"accuracy": 1.0, "count": 1}, "B": {"accuracy": 0.5, "count": 2},
                      "C": {"accuracy": 0.0, "count": 1}}


# === The CLIs on tiny corpora ===

SMALL = ["--set", "embedding_dim=8", "--set", "hidden_dim=8", "--verbose", "0"]


def read_history(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_and_evaluate_word_language_model(tmp_path, capsys):
    data = write_text(tmp_path / "ptb", "ptb.train.txt", "ptb.valid.txt", level="word")
    run = tmp_path / "run_lm"
    code = train_cli.main(["--task", "language_model", "--cell", "gru", "--data", str(data),
                           "--epochs", "2", "--batch_size", "4", "--num_steps", "5",
                           "--output_dir", str(run), *SMALL])
    assert code == 0
    for name in ("model.keras", "vocabulary.json", "config.json", "metrics.json", "history.csv", "curves.png"):
        assert (run / name).exists(), name
    assert (run / "tensorboard").is_dir()
    metrics = json.loads((run / "metrics.json").read_text())
    history = read_history(run / "history.csv")
    assert [row["epoch"] for row in history] == ["0", "1"]
    # The dev perplexity written after training is the last epoch's validation perplexity.
    assert metrics["dev"]["perplexity"] == pytest.approx(float(history[-1]["val_perplexity"]), rel=1e-4)
    assert metrics["dev"]["perplexity"] < 20  # 13-word vocabulary; chance is ~13
    capsys.readouterr()
    assert evaluate_cli.main(["--run", str(run)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["perplexity"] == pytest.approx(metrics["dev"]["perplexity"], rel=1e-5)


def test_train_character_language_model_from_a_single_file_dir(tmp_path):
    data = write_text(tmp_path / "shakespeare", "train.txt", None, level="char")
    run = tmp_path / "run_char"
    assert train_cli.main(["--preset", "shakespeare_char_small", "--data", str(data), "--epochs", "1",
                           "--batch_size", "4", "--num_steps", "8", "--output_dir", str(run), *SMALL]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["level"] == "char" and config["cell"] == "gru"
    vocabulary = json.loads((run / "vocabulary.json").read_text())["tokens"]
    assert "\n" in vocabulary and all(len(token) == 1 for token in vocabulary[2:])


def test_train_classifier_learns_a_separable_task(tmp_path, capsys):
    data = write_sst(tmp_path / "sst")
    run = tmp_path / "run_sst"
    assert train_cli.main(["--preset", "sst_bilstm", "--data", str(data), "--epochs", "6",
                           "--batch_size", "8", "--learning_rate", "0.02", "--output_dir", str(run),
                           *SMALL]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] >= 0.9  # "good"/"bad" words decide the label
    assert json.loads((run / "labels.json").read_text())["names"] == ["negative", "positive"]
    history = read_history(run / "history.csv")
    assert "val_accuracy" in history[0]


def test_train_tagger_and_per_tag_evaluation(tmp_path, capsys):
    data = write_conllu(tmp_path / "ud")
    run = tmp_path / "run_tagger"
    assert train_cli.main(["--preset", "ewt_bilstm", "--data", str(data), "--epochs", "8",
                           "--batch_size", "8", "--learning_rate", "0.02", "--output_dir", str(run),
                           *SMALL]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] >= 0.9  # each word has one tag
    assert set(metrics["dev"]["per_tag"]) == {"DET", "NOUN", "VERB"}
    capsys.readouterr()
    assert evaluate_cli.main(["--run", str(run), "--per_tag"]) == 0
    out = capsys.readouterr().out
    assert "NOUN" in out and "accuracy" in out


def interrupt_after_second_epoch(monkeypatch, args):
    """Runs the train CLI with `args` and cuts it off at the end of epoch 1, as a power cut would.

    Returns the original `make_callbacks`, to put back before resuming.
    """

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("power cut")

    original = run_module.make_callbacks
    monkeypatch.setattr(run_module, "make_callbacks", lambda c, d: original(c, d) + [Interrupt()])
    with pytest.raises(RuntimeError, match="power cut"):
        train_cli.main(args)
    return original


def test_interrupted_run_resumes_from_the_last_epoch(tmp_path, monkeypatch):
    data = write_sst(tmp_path / "sst")
    run = tmp_path / "run_resume"
    args = ["--task", "classifier", "--cell", "simple_rnn", "--data", str(data), "--epochs", "3",
            "--batch_size", "8", "--early_stopping_patience", "0", "--output_dir", str(run), *SMALL]

    original = interrupt_after_second_epoch(monkeypatch, args)
    assert (run / "backup").exists() and not (run / "model.keras").exists()
    vocabulary_before = (run / "vocabulary.json").read_text()

    monkeypatch.setattr(run_module, "make_callbacks", original)
    assert train_cli.main(args) == 0
    epochs = [row["epoch"] for row in read_history(run / "history.csv")]
    # Epoch 0 finished before the cut and was backed up; epoch 1 ran again; then 2.
    assert epochs[0] == "0" and epochs[-1] == "2" and epochs.count("0") == 1
    assert (run / "vocabulary.json").read_text() == vocabulary_before
    assert (run / "model.keras").exists() and not (run / "backup").exists()
    # The run's training time counts the epochs of both sessions, each once.
    seconds = json.loads((run / "epoch_seconds.json").read_text())
    assert sorted(seconds) == ["0", "1", "2"] and all(value >= 0 for value in seconds.values())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_seconds"] == round(sum(seconds.values()), 1)


CHAR_SMALL = ["--set", "char_embedding_dim=4", "--set", "char_hidden_dim=6"]


def test_char_tagger_trains_resumes_evaluates_and_exports(tmp_path, monkeypatch, capsys):
    data = write_conllu(tmp_path / "ud")
    run = tmp_path / "run_char_tagger"
    args = ["--preset", "ewt_char_bilstm", "--data", str(data), "--epochs", "6", "--batch_size", "8",
            "--learning_rate", "0.02", "--early_stopping_patience", "0", "--output_dir", str(run),
            *SMALL, *CHAR_SMALL]

    original = interrupt_after_second_epoch(monkeypatch, args)
    characters_before = (run / "char_vocabulary.json").read_text()
    monkeypatch.setattr(run_module, "make_callbacks", original)
    assert train_cli.main(args) == 0
    assert (run / "char_vocabulary.json").read_text() == characters_before
    assert [row["epoch"] for row in read_history(run / "history.csv")][-1] == "5"

    characters = json.loads(characters_before)["tokens"]
    train_words = {"the", "a", "dog", "cat", "film", "plot", "actor", "story", "runs", "sleeps",
                   "works", "falls"}
    assert sorted(characters[2:]) == sorted(set("".join(train_words)))
    model = keras.saving.load_model(run / "model.keras")
    assert model.uses_characters and model.char_vocabulary_size == len(characters)
    assert model.char_hidden_dim == 6 and model.max_word_length == 24
    config = json.loads((run / "config.json").read_text())
    assert "char_vocabulary_size" not in config["model"]  # filled in from the data, as vocabulary_size
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] >= 0.9
    capsys.readouterr()
    assert evaluate_cli.main(["--run", str(run), "--per_tag"]) == 0
    out = capsys.readouterr().out
    assert "VERB" in out
    assert json.loads(out[out.index("{"):])["accuracy"] == pytest.approx(metrics["dev"]["accuracy"])

    path = export.export_run(run, export_base=tmp_path / "saved_models")
    shipped = json.loads((path / "assets.extra" / "char_vocabulary.json").read_text())
    assert shipped["tokens"] == characters
    zoo_info = json.loads((path / "assets.extra" / "zoo.json").read_text())
    assert zoo_info["char_vocabulary_size"] == len(characters) and zoo_info["max_word_length"] == 24
    assert "character model" in (path / "MODEL_CARD.md").read_text()


def test_char_classifier_reads_unseen_words_and_exports_what_it_learned(tmp_path, capsys):
    import tensorflow as tf

    # Every dev sentiment word is a stem no train sentence has; its ending ("zz"
    # positive, "qq" negative) decides the label, so only the spelling can tell.
    data = write_spelled_sst(tmp_path / "sst")
    run = tmp_path / "run_char_sst"
    assert train_cli.main(["--preset", "sst_char_bilstm", "--data", str(data), "--epochs", "12",
                           "--batch_size", "8", "--learning_rate", "0.02",
                           "--early_stopping_patience", "0", "--output_dir", str(run),
                           *SMALL, *CHAR_SMALL]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] >= 0.9
    assert set(json.loads((run / "char_vocabulary.json").read_text())["tokens"]) >= set("zq")
    capsys.readouterr()
    assert evaluate_cli.main(["--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["accuracy"] == pytest.approx(metrics["dev"]["accuracy"])

    path = export.export_run(run, export_base=tmp_path / "saved_models")
    served = tf.saved_model.load(str(path)).signatures["serving_default"]
    # Stems neither split has seen; the exported graph spells them as training did.
    labels = served(sentences=tf.constant(["the film xyzzz runs", "a cat vvxqq sleeps"]))["label"]
    assert [label.decode() for label in labels.numpy()] == ["positive", "negative"]
    assert "Character model" in (path / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "classifier", "--data", "/nonexistent/sst"], "no such file"),
        (["--preset", "ptb_huge", "--data", "x"], "Valid presets"),
        (["--task", "classifier", "--data", "x", "--set", "hiden_dim=3"], "Unknown model option"),
        (["--data", "x"], "Give a --preset or a --task"),
    ],
)
def test_train_cli_user_errors_exit_2_with_a_message(args, message, capsys):
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_help_and_dry_run(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "--preset" in capsys.readouterr().out
    assert train_cli.main(["--preset", "ptb_small", "--data", "ptb", "--epochs", "2", "--dry_run"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["training"]["epochs"] == 2 and config["training"]["clip_norm"] == 5.0
    assert config["model"]["hidden_dim"] == 200
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.main(["--help"])
    assert exit_info.value.code == 0


def test_evaluate_cli_on_a_missing_run(tmp_path, capsys):
    assert evaluate_cli.main(["--run", str(tmp_path / "nothing")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_single_file_classifier_needs_dev_data_and_uses_it(tmp_path, capsys):
    data = write_sst(tmp_path / "sst")
    args = ["--task", "classifier", "--data", str(data / "stsa.binary.train"), "--epochs", "1",
            "--output_dir", str(tmp_path / "run"), *SMALL]
    assert train_cli.main(args) == 2
    assert "give its dev split with --dev_data" in capsys.readouterr().err
    assert train_cli.main(args + ["--dev_data", str(data / "stsa.binary.dev")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["dev_size"] == 32 and metrics["data"]["train_size"] == 64


def test_sum_loss_over_time_scales_the_step_by_the_window_length():
    ids = np.arange(60) % 9 + 2
    inputs, targets = next(iter(lm_dataset(ids, batch_size=2, num_steps=5)))
    deltas = {}
    for summed in (False, True):
        model = tiny_language_model()  # same seed, same initial weights
        model.build((2, None))
        before = [w.numpy().copy() for w in model.trainable_weights]
        trainer = CarriedStateTrainer(model, batch_size=2, sum_loss_over_time=summed)
        trainer.compile(optimizer=keras.optimizers.SGD(1.0),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        trainer.reset_state()
        logs = trainer.train_on_batch(inputs, targets, return_dict=True)
        deltas[summed] = np.concatenate([(w.numpy() - b).ravel() for w, b in zip(model.trainable_weights, before)])
        deltas[f"loss_{summed}"] = logs["loss"]
    # float32 weight differences: compare to the scale of the step.
    np.testing.assert_allclose(deltas[True], 5 * deltas[False], atol=1e-3 * np.abs(deltas[True]).max())
    assert deltas["loss_True"] == pytest.approx(deltas["loss_False"])  # reported per token either way


def test_word_dropout_reaches_the_train_batches_only(tmp_path):
    config = run_module.resolve_config(preset="ewt_char_bilstm", data={"source": str(write_conllu(tmp_path))},
                                       training={"word_dropout": 1e6})  # every known word, nearly
    prepared = run_module.load_data(config)
    train, dev = run_module.make_datasets(config, prepared, shuffle_train=False)
    train_ids = np.concatenate([x["token_ids"][w > 0] for x, _, w in train.as_numpy_iterator()])
    dev_ids = np.concatenate([x["token_ids"][w > 0] for x, _, w in dev.as_numpy_iterator()])
    assert (train_ids == 1).mean() > 0.99 and (dev_ids == 1).mean() < 0.5
    with pytest.raises(ValueError, match="word_dropout is for classifiers and taggers"):
        run_module.resolve_config(preset="ptb_small", data={"source": "ptb"}, training={"word_dropout": 0.25})
