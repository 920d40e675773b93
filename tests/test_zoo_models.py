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
    assert zoo.list_presets("tagger") == ["ewt_bilstm", "ewt_char_bilstm"]
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


# === Character-aware tagger (Plank, Søgaard & Goldberg 2016) ===

CHARACTERS = 9
# Character ids of each word of TOKENS, right-padded with 0; padding words have none.
CHAR_IDS = np.zeros((3, 5, 4), dtype="int32")
for (_row, _column), _spelling in {
    (0, 0): [2, 3], (0, 1): [4], (0, 2): [5, 6, 7, 8], (0, 3): [2, 2, 3],
    (1, 0): [8, 7, 6], (1, 1): [3],
    (2, 0): [2, 4, 6, 8], (2, 1): [3, 5], (2, 2): [7], (2, 3): [1, 2], (2, 4): [6, 6],
}.items():
    CHAR_IDS[_row, _column, :len(_spelling)] = _spelling
CHAR_INPUTS = {"token_ids": TOKENS, "char_ids": CHAR_IDS}


def char_tagger(cell="lstm", **options):
    keras.utils.set_random_seed(2)
    return zoo.build("tagger", cell=cell, **{
        **tiny_options("tagger"), "bidirectional": True, "char_vocabulary_size": CHARACTERS,
        "char_embedding_dim": 3, "char_hidden_dim": 5, "max_word_length": 4, **options})


def char_classifier(cell="lstm", **options):
    keras.utils.set_random_seed(3)
    return zoo.build("classifier", cell=cell, **{
        **tiny_options("classifier"), "bidirectional": True, "pooling": "max",
        "char_vocabulary_size": CHARACTERS, "char_embedding_dim": 3, "char_hidden_dim": 5,
        "max_word_length": 4, **options})


@pytest.mark.parametrize("task", ["tagger", "classifier"])
@pytest.mark.parametrize("cell", zoo.CELL_TYPES)
def test_char_models_train_a_step_and_round_trip(cell, task, tmp_path):
    model = (char_tagger if task == "tagger" else char_classifier)(cell)
    assert model.uses_characters and model.char_encoder.cell == cell
    assert model.backbone.extra_feature_dim == 10
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.build((None, None))
    before = [w.numpy().copy() for w in model.trainable_weights]
    assert any("char_encoder" in w.path for w in model.trainable_weights)
    history = model.fit(CHAR_INPUTS, targets(task), epochs=1, batch_size=3, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    unchanged = [w.path for b, w in zip(before, model.trainable_weights) if np.allclose(b, w.numpy())]
    assert not unchanged, "every trainable weight, the character encoder's too, gets a gradient"

    path = tmp_path / f"char_{task}_{cell}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.get_config() == model.get_config()
    assert restored.get_config()["char_vocabulary_size"] == CHARACTERS
    np.testing.assert_allclose(restored.predict(CHAR_INPUTS, verbose=0),
                               model.predict(CHAR_INPUTS, verbose=0), rtol=1e-6, atol=1e-6)


def test_char_classifier_reads_the_spelling_of_unknown_words_and_ignores_padding():
    model = char_classifier()
    unknown = np.array([[1, 1, 0]], dtype="int32")  # two <unk> words and padding
    spellings = np.zeros((1, 3, 4), dtype="int32")
    spellings[0, 0, :3] = [2, 3, 4]
    spellings[0, 1, :2] = [5, 6]
    respelled = spellings.copy()
    respelled[0, 1, :2] = [7, 2]
    logits = np.asarray(model({"token_ids": unknown, "char_ids": spellings}))
    assert not np.allclose(logits, model({"token_ids": unknown, "char_ids": respelled}), atol=1e-6), \
        "the same <unk> ids spelled otherwise classify otherwise"
    # The padding slot and a longer batch change nothing.
    alone = {"token_ids": unknown[:, :2], "char_ids": spellings[:, :2, :3]}
    np.testing.assert_allclose(np.asarray(model(alone)), logits, atol=1e-6)


def test_word_only_classifier_config_is_unchanged_in_meaning():
    model = zoo.build("classifier", **tiny_options("classifier"))
    assert not model.uses_characters and model.get_config()["char_vocabulary_size"] == 0
    model(TOKENS)
    assert not any("char" in w.path for w in model.weights)


def test_char_tagger_is_padding_invariant():
    model = char_tagger()
    alone = {"token_ids": TOKENS[1:2, :2], "char_ids": CHAR_IDS[1:2, :2, :3]}  # (1, 2, 3)
    # Batched with a longer sentence of longer words: more steps, more characters.
    batched = np.asarray(model(CHAR_INPUTS))[1, :2]
    np.testing.assert_allclose(batched, np.asarray(model(alone))[0], atol=1e-6)


def test_char_features_flow_for_unknown_words():
    model = char_tagger()
    unknown = np.array([[1, 1, 1, 0]], dtype="int32")  # three <unk> words and padding
    spellings = np.zeros((1, 4, 4), dtype="int32")
    spellings[0, 0, :3] = [2, 3, 4]
    spellings[0, 1, :3] = [5, 6, 7]
    spellings[0, 2, :3] = [2, 3, 4]  # spelled like the first
    features = np.asarray(model.char_encoder(spellings))  # (1, 4, 2 * char_hidden)
    assert features.shape == (1, 4, 10)
    assert not np.allclose(features[0, 0], features[0, 1]), "different spellings, different features"
    np.testing.assert_allclose(features[0, 0], features[0, 2], atol=1e-6)
    np.testing.assert_array_equal(features[0, 3], 0.0)  # a padding word has no characters
    logits = np.asarray(model({"token_ids": unknown, "char_ids": spellings}))
    assert not np.allclose(logits[0, 0], logits[0, 1]), "the spelling reaches the tags"


def test_char_tagger_keeps_max_word_length_characters():
    model = char_tagger()
    longer = np.concatenate([CHAR_IDS, np.full((3, 5, 3), 5, dtype="int32")], axis=-1)
    longer[CHAR_IDS[:, :, 0] == 0] = 0  # padding words stay empty
    np.testing.assert_allclose(model({"token_ids": TOKENS, "char_ids": longer}),
                               model(CHAR_INPUTS), atol=1e-6)


def test_word_only_tagger_is_unchanged_by_the_character_options():
    model = zoo.build("tagger", **tiny_options("tagger"))
    assert not model.uses_characters and model.char_encoder is None
    config = model.get_config()
    assert config["char_vocabulary_size"] == 0 and "extra_feature_dim" not in config
    model(TOKENS)
    assert not any("char" in w.path for w in model.weights)
    assert "extra_feature_dim" not in zoo.valid_options("tagger")
    assert "char_hidden_dim" in zoo.valid_options("tagger")
    assert "char_hidden_dim" in zoo.valid_options("classifier")
    assert "char_hidden_dim" not in zoo.valid_options("language_model")


def test_char_preset_builds():
    model = zoo.build_preset("ewt_char_bilstm", vocabulary_size=50, num_tags=17,
                             char_vocabulary_size=30)
    assert model.uses_characters and model.backbone.extra_feature_dim == 128
    for word_preset, char_preset in (("ewt_bilstm", "ewt_char_bilstm"),
                                     ("sst_bilstm", "sst_char_bilstm")):
        base = zoo.get_preset(word_preset)
        spelled = zoo.get_preset(char_preset)
        assert {k: v for k, v in spelled["model"].items()
                if not k.startswith("char_") and k != "max_word_length"} == base["model"]
        assert spelled["training"] == base["training"] and spelled["task"] == base["task"]
    classifier = zoo.build_preset("sst_char_bilstm", vocabulary_size=50, char_vocabulary_size=30)
    assert classifier.uses_characters and classifier.backbone.extra_feature_dim == 128


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: char_tagger()(TOKENS), "has a character model"),
        (lambda: zoo.build("tagger", **tiny_options("tagger"))(CHAR_INPUTS), "no character model"),
        (lambda: char_tagger(char_vocabulary_size=-1), "char_vocabulary_size must be 0"),
        (lambda: char_tagger(char_hidden_dim=0), "char_hidden_dim must be a positive integer"),
        (lambda: zoo.build("tagger", vocabulary_size=5, extra_feature_dim=4),
         r"Unknown option\(s\) \['extra_feature_dim'\] for task 'tagger'. Valid options: .*char_"),
        (lambda: zoo.build("language_model", vocabulary_size=5, char_vocabulary_size=4),
         "Unknown option"),
        (lambda: char_classifier()(TOKENS), "This classifier has a character model"),
        (lambda: zoo.build("classifier", **tiny_options("classifier"))(CHAR_INPUTS),
         "This classifier has no character model"),
        (lambda: zoo.RecurrentBackbone(VOCABULARY, extra_feature_dim=3)(TOKENS), "needs extra_features"),
        (lambda: zoo.RecurrentBackbone(VOCABULARY)(TOKENS, extra_features=np.zeros((3, 5, 2))),
         "without extra features"),
    ],
)
def test_character_errors_are_clear(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bidirectional_models_load_every_time(tmp_path):
    # Keras matches objects by id() while a .keras file loads; Bidirectional's
    # template layers, once freed, could lend their id to the next template and
    # fail about 2% of loads ("should have different `go_backwards` value").
    # zoo.cells.make_bidirectional keeps the templates alive; this loads a model
    # with three bidirectional layers many times, with allocations in between.
    model = char_tagger("gru", num_layers=2)
    model.build((None, None))
    path = tmp_path / "three_bidirectional_layers.keras"
    model.save(path)
    for round_ in range(80):
        churn = [object() for _ in range(round_ * 5)]
        restored = keras.saving.load_model(path)
        del churn
    for layer in restored.backbone.recurrent_layers:
        assert layer.forward_layer.go_backwards is False and layer.backward_layer.go_backwards is True
    assert restored.char_encoder.recurrent.backward_layer.go_backwards is True


@pytest.mark.parametrize("cell", zoo.CELL_TYPES)
def test_character_encoder_packing_real_words_changes_nothing(cell):
    from zoo.characters import CharacterEncoder

    packed = CharacterEncoder(CHARACTERS, cell=cell, embedding_dim=3, hidden_dim=5, max_word_length=4)
    every_slot = CharacterEncoder(CHARACTERS, cell=cell, embedding_dim=3, hidden_dim=5, max_word_length=4,
                                  pack_words=False)
    packed.build((None, None, None))
    every_slot.build((None, None, None))
    every_slot.set_weights(packed.get_weights())
    features = np.asarray(packed(CHAR_IDS))
    np.testing.assert_allclose(features, np.asarray(every_slot(CHAR_IDS)), atol=1e-6)
    assert np.all(features[1, 2:] == 0) and np.any(features[1, :2] != 0), "padding words are zero"
    empty = np.zeros((2, 3, 4), dtype="int32")  # no word at all: one padding row runs, all zeros come out
    assert np.all(np.asarray(packed(empty)) == 0) and np.asarray(packed(empty)).shape == (2, 3, 10)
    assert CharacterEncoder.from_config(every_slot.get_config()).pack_words is False


def test_the_embedding_gathers_rows_from_the_variable_and_matches_keras(monkeypatch):
    """The zoo's embedding reads only the looked-up rows (ResourceGather, no whole-table
    read) and gives Keras' values and row gradients; RNN_ZOO_EMBEDDING_GATHER=0 reads as Keras."""
    import tensorflow as tf
    from zoo.backbone import Embedding

    layer = Embedding(6, 3)
    ids = tf.constant([[1, 4, 4], [0, 2, 5]])
    layer.build(ids.shape)

    def forward_and_gradient():
        with tf.GradientTape() as tape:
            outputs = layer(ids)
            loss = tf.reduce_sum(outputs * tf.reshape(tf.range(18, dtype=tf.float32), (2, 3, 3)))
        return outputs, tf.convert_to_tensor(tape.gradient(loss, layer.embeddings.value))

    graph = tf.function(lambda: layer(ids)).get_concrete_function().graph
    assert "ResourceGather" in {op.type for op in graph.get_operations()}
    outputs, gradient = forward_and_gradient()
    monkeypatch.setenv("RNN_ZOO_EMBEDDING_GATHER", "0")
    graph = tf.function(lambda: layer(ids)).get_concrete_function().graph
    assert "ResourceGather" not in {op.type for op in graph.get_operations()}
    keras_outputs, keras_gradient = forward_and_gradient()
    np.testing.assert_array_equal(outputs.numpy(), keras_outputs.numpy())
    np.testing.assert_array_equal(gradient.numpy(), keras_gradient.numpy())
    np.testing.assert_array_equal(gradient.numpy()[3], 0.0)  # row 3 is never looked up
