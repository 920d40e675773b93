"""Every cell x task builds, trains a step, and round-trips through .keras files."""

import keras
import numpy as np
import pytest

import zoo

VOCABULARY = 12
TOKENS = np.array([[3, 4, 5, 6, 0], [7, 8, 0, 0, 0], [2, 9, 10, 11, 3]], dtype="int32")


def tiny_options(task):
    options = {"vocabulary_size": VOCABULARY, "embedding_dim": 6, "hidden_dim": 6, "num_layers": 2}
    if task == "tagger":
        options["num_tags"] = 4
    return options


def targets(task):
    if task == "classifier":
        return np.array([0, 1, 1], dtype="int32")
    if task == "tagger":
        return TOKENS % 4
    return np.roll(TOKENS, -1, axis=1)


@pytest.mark.parametrize("cell", zoo.CELL_TYPES)
@pytest.mark.parametrize("task", zoo.TASKS)
def test_build_train_step_and_keras_round_trip(task, cell, tmp_path):
    keras.utils.set_random_seed(1)
    model = zoo.build(task, cell=cell, **tiny_options(task))
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(TOKENS, targets(task), epochs=1, batch_size=3, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights)]
    assert all(changed), "every trainable weight should receive a gradient"

    path = tmp_path / f"{task}_{cell}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(model)
    assert restored.get_config() == model.get_config()
    np.testing.assert_allclose(restored.predict(TOKENS, verbose=0), model.predict(TOKENS, verbose=0),
                               rtol=1e-6, atol=1e-6)
    fresh = zoo.build(task, cell=cell, **tiny_options(task))
    assert not np.allclose(fresh(TOKENS), model(TOKENS)), "the round trip must carry the weights"


@pytest.mark.parametrize("task", ["classifier", "tagger"])
def test_bidirectional_round_trip_and_output_width(task, tmp_path):
    model = zoo.build(task, cell="gru", bidirectional=True, **tiny_options(task))
    outputs = model(TOKENS)
    assert model.backbone.output_dim == 12
    assert model.state_size == 2 * 2 * 6  # layers x directions x h
    path = tmp_path / "bi.keras"
    model.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path)(TOKENS), outputs, atol=1e-6)


@pytest.mark.parametrize("cell", zoo.CELL_TYPES)
def test_language_model_stepwise_state_equals_full_pass(cell):
    model = zoo.build("language_model", cell=cell, **tiny_options("language_model"))
    full = model(TOKENS[2:3])  # (1, 5, V)
    state = model.initial_state(1)
    stepped = []
    for t in range(TOKENS.shape[1]):
        logits, state = model(TOKENS[2:3, t:t + 1], initial_state=state, return_state=True)
        stepped.append(logits[:, 0])
    np.testing.assert_allclose(np.stack(stepped, axis=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", zoo.TASKS)
def test_padding_does_not_change_results(task):
    model = zoo.build(task, cell="lstm", **tiny_options(task))
    if task == "classifier":
        model = zoo.build(task, cell="lstm", bidirectional=True, pooling="max", **tiny_options(task))
    short = TOKENS[1:2, :2]  # [[7, 8]]
    padded = TOKENS[1:2]  # [[7, 8, 0, 0, 0]]
    short_out, padded_out = np.asarray(model(short)), np.asarray(model(padded))
    if task == "classifier":
        np.testing.assert_allclose(padded_out, short_out, atol=1e-6)
    else:
        np.testing.assert_allclose(padded_out[:, :2], short_out, atol=1e-6)


@pytest.mark.parametrize("pooling", zoo.POOLINGS)
def test_classifier_pooling_values(pooling):
    model = zoo.build("classifier", cell="simple_rnn", pooling=pooling, **tiny_options("classifier"))
    logits = model(TOKENS)
    sequence, state = model.backbone(TOKENS)
    sequence = np.asarray(sequence)
    mask = (TOKENS != 0)[..., None]
    expected = {
        "last": np.asarray(model.backbone.top_hidden(state)),
        "mean": (sequence * mask).sum(1) / mask.sum(1),
        "max": np.where(mask, sequence, -np.inf).max(1),
    }[pooling]
    kernel, bias = model.classifier.get_weights()
    np.testing.assert_allclose(logits, expected @ kernel + bias, rtol=1e-5, atol=1e-5)
    if pooling == "last":
        # Row 1 has two real tokens: its last state is the output at step 1.
        np.testing.assert_allclose(expected[1], sequence[1, 1], atol=1e-6)


def test_tied_weights_share_the_embedding():
    model = zoo.build("language_model", vocabulary_size=VOCABULARY, embedding_dim=6, hidden_dim=6,
                      tie_weights=True)
    model(TOKENS)
    names = [w.path for w in model.trainable_weights]
    assert not any("output_projection" in name for name in names)
    sequence, _ = model.backbone(TOKENS)
    embeddings = model.backbone.embedding.embeddings.numpy()
    expected = np.asarray(sequence) @ embeddings.T + model.output_bias.numpy()
    np.testing.assert_allclose(model(TOKENS), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="tie_weights needs embedding_dim == hidden_dim"):
        zoo.build("language_model", vocabulary_size=VOCABULARY, embedding_dim=4, hidden_dim=6,
                  tie_weights=True)


def test_learned_initial_state_is_trained_and_used():
    model = zoo.build("language_model", cell="lstm", learned_initial_state=True,
                      **tiny_options("language_model"))
    model(TOKENS)
    vector = model.backbone.initial_state_vector
    assert vector.trainable and vector.shape == (model.state_size,)
    vector.assign(np.linspace(-1, 1, model.state_size))
    np.testing.assert_allclose(model.initial_state(2), np.tile(vector.numpy(), (2, 1)))
    zeros = np.zeros((3, model.state_size), dtype="float32")
    assert not np.allclose(model(TOKENS), model(TOKENS, initial_state=zeros))
    model.compile(optimizer=keras.optimizers.SGD(1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = vector.numpy().copy()
    model.fit(TOKENS, targets("language_model"), epochs=1, verbose=0)
    assert not np.allclose(before, vector.numpy())


def test_presets_build_and_list():
    names = zoo.list_presets()
    for expected in ["ptb_small", "ptb_medium", "shakespeare_char", "sst_bilstm", "ewt_bilstm"]:
        assert expected in names
    gate_variants = [n for n in names if n.startswith("sst_gates_")]
    assert len(gate_variants) == 8
    assert zoo.list_presets("tagger") == ["ewt_bilstm"]
    small = zoo.get_preset("ptb_small")
    assert small["model"]["hidden_dim"] == 200 and small["model"]["num_layers"] == 2
    assert small["training"]["num_steps"] == 20 and small["training"]["clip_norm"] == 5.0
    model = zoo.build_preset("ptb_small", vocabulary_size=50, hidden_dim=8, embedding_dim=8)
    assert isinstance(model, zoo.LanguageModel) and model.backbone.hidden_dim == 8
    ablation = zoo.build_preset("sst_gates_input_output", vocabulary_size=50)
    ablation(TOKENS)
    cell = ablation.backbone.recurrent_layers[0].cell
    assert cell.gates == ("input", "output") and cell.peepholes


def test_get_preset_returns_a_copy():
    zoo.get_preset("ptb_small")["model"]["hidden_dim"] = 1
    assert zoo.get_preset("ptb_small")["model"]["hidden_dim"] == 200


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: zoo.build("translation", vocabulary_size=5), "Valid tasks: language_model, classifier, tagger"),
        (lambda: zoo.build("classifier", cell="lstmm", vocabulary_size=5), "Valid cells: simple_rnn, lstm, gru, gated_lstm"),
        (lambda: zoo.build("classifier", vocabulary_size=5, hiden_dim=3), r"Unknown option\(s\) \['hiden_dim'\]"),
        (lambda: zoo.build("language_model", vocabulary_size=5, pooling="max"), "Valid options:"),
        (lambda: zoo.build("classifier", vocabulary_size=5, pooling="median"), "Valid poolings: last, mean, max"),
        (lambda: zoo.build_preset("ptb_huge"), "Valid presets: "),
        (lambda: zoo.build("classifier"), "vocabulary_size is required"),
        (lambda: zoo.build("classifier", vocabulary_size=5, dropout=1.5), r"dropout must be in \[0, 1\)"),
        (lambda: zoo.build("classifier", vocabulary_size=5, num_layers=0), "num_layers must be a positive integer"),
        (lambda: zoo.LanguageModel(5, bidirectional=True), "cannot be bidirectional"),
    ],
)
def test_user_errors_name_the_valid_choices(call, message):
    with pytest.raises(ValueError, match=message):
        call()
