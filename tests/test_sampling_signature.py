"""The `sample` signature: the model draws the next token as the client's samplers would.

The graph's draw (serving.export.sampling) must give the very tokens NumPy's
samplers give for the same uniform number, so that generation with a seed
writes the same text whether the client or the model draws.
"""

import json
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf

from serving.export.sampling import sample_next
from serving.generation import generate, samplers

VOCABULARY = 40


def _numpy_draws(logits, uniforms, temperature, top_k):
    """What the generation loop draws: pad banned, then the sampler, one uniform per row."""
    tokens = []
    for row, (u, t, k) in enumerate(zip(uniforms, temperature, top_k)):
        processed = np.asarray(logits[row:row + 1], np.float64).copy()
        processed[:, 0] = -np.inf  # <pad>, as process_logits does
        sampler = samplers.from_generation_options(do_sample=t > 0, temperature=t if t > 0 else 1.0,
                                                   top_k=int(k))

        class Fixed:  # a generator whose one draw is `u`
            def random(self, u=u):
                return u

        tokens.append(int(sampler.sample(processed, [Fixed()])[0]))
    return np.array(tokens)


def test_the_graph_draws_the_tokens_numpy_draws_ties_included():
    rng = np.random.default_rng(0)
    rows = 600
    logits = rng.normal(size=(rows, VOCABULARY)).astype(np.float32)
    # A third of the rows hold many exact ties, at the top-k boundary too.
    logits[::3] = np.round(logits[::3] * 2) / 2
    uniforms = rng.random(rows)
    uniforms[:5] = [0.0, 1.0 - 1e-16, 0.5, 1e-12, 0.999999]
    temperature = rng.choice([0.0, 0.5, 1.0, 1.7], size=rows)
    top_k = rng.choice([0, 1, 2, 5, VOCABULARY - 1, VOCABULARY, 100], size=rows).astype(np.int32)
    tokens, log_prob = sample_next(tf.constant(logits), tf.constant(uniforms), tf.constant(temperature),
                                   tf.constant(top_k))
    expected = _numpy_draws(logits, uniforms, temperature, top_k)
    np.testing.assert_array_equal(tokens.numpy(), expected)
    assert not np.any(tokens.numpy() == 0)  # never <pad>
    np.testing.assert_allclose(log_prob.numpy(),
                               samplers.log_softmax(logits)[np.arange(rows), expected], rtol=1e-6)
    # The draws spread over the vocabulary (this is sampling, not argmax).
    sampled = temperature > 0
    assert np.mean(tokens.numpy()[sampled] != np.argmax(logits[sampled][:, 1:], 1) + 1) > 0.3


def test_top_k_one_and_temperature_zero_are_the_argmax():
    logits = tf.constant([[9.0, 1.0, 3.0, 3.0, 2.0]])  # pad has the largest logit: never chosen
    for temperature, top_k in ((0.0, 0), (1.0, 1), (0.3, 1)):
        tokens, _ = sample_next(logits, tf.constant([0.99], tf.float64), tf.constant([temperature], tf.float64),
                                tf.constant([top_k], tf.int32))
        assert tokens.numpy().tolist() == [2]  # the first of the tied maxima


@pytest.fixture(scope="module")
def exported_lm(tmp_path_factory):
    keras = pytest.importorskip("keras")
    import zoo
    from serving import export
    from training.vocab import Vocabulary

    base = tmp_path_factory.mktemp("sampling_models")
    vocabulary = Vocabulary(["<pad>", "<unk>", " ", "a", "b", "c", "d", "e", "\n", "R", "O", "M", ":"])
    keras.utils.set_random_seed(3)
    model = zoo.build("language_model", cell="lstm", vocabulary_size=len(vocabulary), embedding_dim=8,
                      hidden_dim=8, num_layers=2)
    model.build((None, None))
    path = export.export_model(model, vocabulary, task="language_model", export_base=base,
                               model_name="lm", level="char")
    return base, path


OPTION_SETS = [
    {"do_sample": False},
    {"seed": 5},
    {"seed": 6, "temperature": 0.7, "top_k": 4, "num_return_sequences": 2},
    {"seed": 7, "temperature": 1.5, "return_logprobs": True, "stop": ["a"]},
]


@pytest.fixture
def always_sample(monkeypatch):
    """The loop uses `sample` at every step, whatever the size of the logits (tiny test models)."""
    from serving.generation import loop

    monkeypatch.setattr(loop, "SAMPLE_SIGNATURE_MIN_LOGITS", 0)


@pytest.mark.parametrize("options", OPTION_SETS)
def test_generation_with_the_model_drawing_writes_the_same_text(exported_lm, options, always_sample):
    from serving.generation import SavedModelBackend

    _, path = exported_lm
    drawing, stepping = SavedModelBackend(path), SavedModelBackend(path, use_sample_signature=False)
    assert drawing.can_sample and not stepping.can_sample
    prompts = ["ROMEO:", "", "abc"]
    ours = generate(drawing, prompts, max_new_tokens=30, **options)
    theirs = generate(stepping, prompts, max_new_tokens=30, **options)
    assert ours.token_ids == theirs.token_ids and ours.texts == theirs.texts
    assert ours.finish_reasons == theirs.finish_reasons
    if options.get("return_logprobs"):
        np.testing.assert_allclose(np.concatenate(ours.logprobs), np.concatenate(theirs.logprobs), rtol=1e-6)


def test_the_loop_only_lets_the_model_draw_what_it_can(exported_lm, monkeypatch):
    from serving.generation import SavedModelBackend, loop

    _, path = exported_lm
    backend = SavedModelBackend(path)
    calls = []
    original = backend.sample
    monkeypatch.setattr(backend, "sample", lambda *a: calls.append(len(a[0])) or original(*a))
    # 13 words a row: small logits go back and forth faster than the graph draws.
    generate(backend, ["ab"] * 3, max_new_tokens=5, seed=1, temperature=0.9, top_k=3)
    assert calls == []
    monkeypatch.setattr(loop, "SAMPLE_SIGNATURE_MIN_LOGITS", 3 * backend.vocabulary_size)
    generate(backend, ["ab"] * 3, max_new_tokens=5, seed=1, temperature=0.9, top_k=3)
    assert calls == [3] * 4  # the first token comes with the prompt's logits
    monkeypatch.setattr(loop, "SAMPLE_SIGNATURE_MIN_LOGITS", 0)
    calls.clear()
    generate(backend, ["ab"], max_new_tokens=5, seed=1, temperature=0.9, top_k=3)
    assert calls == [1] * 4
    for options in ({"top_p": 0.9}, {"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 2},
                    {"min_p": 0.1}, {"typical_p": 0.5}, {"num_beams": 2}):
        calls.clear()
        stepped = generate(SavedModelBackend(path, use_sample_signature=False), ["ab"], max_new_tokens=5,
                           seed=1, **options)
        assert generate(backend, ["ab"], max_new_tokens=5, seed=1, **options).texts == stepped.texts
        assert calls == [], options


def test_the_signature_names_what_is_wrong_with_its_inputs(exported_lm):
    _, path = exported_lm
    sample = tf.saved_model.load(str(path)).signatures["sample"]
    good = {"token_ids": tf.constant([[3], [4]], tf.int64), "state": tf.zeros((2, 32)),
            "uniforms": tf.constant([0.1, 0.2], tf.float64), "temperature": tf.constant([1.0, 0.0], tf.float64),
            "top_k": tf.constant([0, 3])}
    outputs = sample(**good)
    assert outputs["next_token_id"].shape == (2,) and outputs["log_prob"].dtype == tf.float64
    for change, message in (({"uniforms": tf.constant([0.1], tf.float64)}, "one entry per row"),
                            ({"uniforms": tf.constant([0.1, -0.5], tf.float64)}, "must lie in [0, 1)"),
                            ({"top_k": tf.constant([0, -2])}, "top_k must be 0")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
            sample(**{**good, **change})


def test_over_grpc_the_server_draws_and_refuses_bad_inputs(exported_lm, always_sample):
    from serving.client import ServingClient, ServingClientError
    from serving.generation import GrpcBackend, SavedModelBackend
    from serving_helpers import running_server

    base, path = exported_lm
    local = SavedModelBackend(path, use_sample_signature=False)
    expected = generate(local, ["ROMEO:", "ab"], max_new_tokens=20, seed=9, top_k=5)
    with running_server(model_base_dir=base, rest=False, monitoring=False) as server:
        remote = GrpcBackend(server.grpc_target, "lm", timeout_seconds=20)
        assert remote.can_sample
        assert generate(remote, ["ROMEO:", "ab"], max_new_tokens=20, seed=9, top_k=5).texts == expected.texts
        client = ServingClient(server.grpc_target, timeout_seconds=20)
        state = remote.initial_state(2)
        good = {"token_ids": np.array([[3], [4]], np.int64), "state": state,
                "uniforms": np.array([0.1, 0.2]), "temperature": np.array([1.0, 1.0]),
                "top_k": np.array([0, 3], np.int32)}
        outputs = client.predict("lm", good, signature_name="sample").outputs
        assert outputs["next_token_id"].shape == (2,) and outputs["state"].shape == state.shape
        for change, message in (({"uniforms": np.array([0.1])}, "disagree on the number of rows"),
                                ({"uniforms": np.array([0.1, 1.0])}, "must lie in [0, 1)"),
                                ({"top_k": np.array([0, -2], np.int32)}, "top_k must be 0")):
            with pytest.raises(ServingClientError, match="INVALID_ARGUMENT") as caught:
                client.predict("lm", {**good, **change}, signature_name="sample")
            assert message in str(caught.value)
        # The server still serves after the refusals.
        assert client.predict("lm", good, signature_name="sample").outputs["next_token_id"].shape == (2,)
        client.close()
        remote.close()


def test_upgrade_adds_sample_to_an_older_export_and_changes_nothing_else(exported_lm, tmp_path, monkeypatch):
    from serving import export
    from serving.export import signatures as signatures_module
    from serving.export import upgrade
    from serving.generation import SavedModelBackend

    # An export as versions before `sample` wrote them.
    _, path = exported_lm
    keras = pytest.importorskip("keras")
    import zoo
    from training.vocab import Vocabulary

    vocabulary = Vocabulary(json.loads((path / "assets.extra" / "vocabulary.json").read_text())["tokens"])
    keras.utils.set_random_seed(4)
    model = zoo.build("language_model", vocabulary_size=len(vocabulary), embedding_dim=8, hidden_dim=8)
    model.build((None, None))
    older = dict(signatures_module.SIGNATURES, language_model=signatures_module.SIGNATURES["language_model"][:-1])
    original = signatures_module._language_model_signatures
    monkeypatch.setattr(signatures_module, "SIGNATURES", older)
    monkeypatch.setattr(signatures_module, "_language_model_signatures",
                        lambda *a: {k: v for k, v in original(*a).items() if k != "sample"})
    old = export.export_model(model, vocabulary, task="language_model", export_base=tmp_path,
                              model_name="old_lm", level="char")
    monkeypatch.undo()
    from serving.generation import loop

    monkeypatch.setattr(loop, "SAMPLE_SIGNATURE_MIN_LOGITS", 0)  # `sample` at every step of the tiny model
    assert "sample" not in tf.saved_model.load(str(old)).signatures
    before = {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()}
    stepping = SavedModelBackend(old)
    expected = generate(stepping, ["ab", "ROMEO:"], max_new_tokens=25, seed=2, top_k=6, temperature=0.9)

    assert upgrade.main([str(old)]) == 0
    after = {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()}
    assert sorted(p.name for p in old.parent.iterdir()) == ["1"]  # nothing left beside it
    info = json.loads(after[pathlib.Path("assets.extra/zoo.json")])
    assert info["signatures"][-1] == "sample"
    assert "`sample`" in after[pathlib.Path("MODEL_CARD.md")].decode()
    for name in ("assets.extra/vocabulary.json", "config.json", "training.json"):
        assert after[pathlib.Path(name)] == before[pathlib.Path(name)], name
    drawing = SavedModelBackend(old)
    assert drawing.can_sample
    result = generate(drawing, ["ab", "ROMEO:"], max_new_tokens=25, seed=2, top_k=6, temperature=0.9)
    assert result.token_ids == expected.token_ids
    state = drawing.initial_state(1)
    np.testing.assert_array_equal(drawing.step(np.array([[3, 4]]), state)[0],
                                  stepping.step(np.array([[3, 4]]), state)[0])
    # The warm-up file has a request for every signature, `sample` included.
    from serving.export.warmup_requests import WARMUP_FILE
    records = list(tf.data.TFRecordDataset(str(old / "assets.extra" / WARMUP_FILE)).as_numpy_iterator())
    assert len(records) == len(info["signatures"])

    # A second run finds nothing to add; other exports are refused.
    assert upgrade.upgrade(old) == []
    with pytest.raises(ValueError, match="not a zoo export"):
        upgrade.upgrade(tmp_path)
