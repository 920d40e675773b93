"""The generation loop: state carrying, batching, seeds, stops, beams, backends.

Most tests run the loop on NumPy fakes of the contract's `step` (no
TensorFlow); the last ones export tiny zoo models and check the in-process and
gRPC backends against them.
"""

import logging

import numpy as np
import pytest

from serving.generation import GenerationOptions, beam_search, samplers
from serving.generation import cli as generation
from serving.generation import (BackendError, GenerationError, apply_repetition_penalty, banned_ngram_tokens,
                                continuation_logprobs, generate, score, stream_generate)

# === Fakes of the language-model contract ===


class FakeBackend:
    """A NumPy language model with the contract's `step`; every call is logged.

    Rows are right-padded with 0; a padding token leaves the row's state as it
    is, logits come from each row's last real token, and an all-padding row
    gives zero logits -- as docs/serving_contract.md says.
    """

    def __init__(self, tokens, separator=" ", end_token=None):
        self.token_strings = list(tokens)
        self.separator, self.end_token = separator, end_token
        self.calls = []

    def tokenize(self, texts):
        self.calls.append(("tokenize", len(texts)))
        index = {token: i for i, token in enumerate(self.token_strings)}
        split = str.split if self.separator == " " else list
        return [[index.get(token, 1) for token in split(text)] for text in texts]

    def initial_state(self, batch_size):
        self.calls.append(("initial_state", batch_size))
        return np.tile(self.start_state(), (batch_size, 1))

    def step(self, token_ids, state):
        token_ids = np.asarray(token_ids)
        self.calls.append(("step", token_ids.copy(), np.array(state)))
        state = np.array(state, dtype=np.float64)
        for column in token_ids.T:  # (batch,) ids at one position
            real = column != 0
            state[real] = self.update(state[real], column[real])
        logits = self.logits(state)
        logits[~(token_ids != 0).any(axis=1)] = 0.0
        return logits, state

    def steps(self):
        return [call[1] for call in self.calls if call[0] == "step"]


class BigramBackend(FakeBackend):
    """The next-token distribution depends on the last token only: state = its one-hot vector."""

    def __init__(self, table, tokens, **options):
        super().__init__(tokens, **options)
        self.table = np.asarray(table, dtype=np.float64)  # (V, V) rows: p(next | last)

    def start_state(self):
        state = np.zeros(len(self.token_strings))
        state[2] = 1.0  # as if the text followed token 2
        return state

    def update(self, state, tokens):
        return np.eye(len(self.token_strings))[tokens]

    def logits(self, state):
        return np.log(np.maximum(state @ self.table, 1e-30))


class RNNBackend(FakeBackend):
    """An Elman RNN with a real float state, so the whole history matters."""

    def __init__(self, tokens, state_size=5, seed=0, **options):
        super().__init__(tokens, **options)
        rng = np.random.default_rng(seed)
        self.embedding = rng.normal(0, 1.0, (len(tokens), state_size))
        self.recurrent = rng.normal(0, 0.8, (state_size, state_size))
        self.output = rng.normal(0, 1.5, (state_size, len(tokens)))

    def start_state(self):
        return np.full(self.recurrent.shape[0], 0.1)

    def update(self, state, tokens):
        return np.tanh(self.embedding[tokens] + state @ self.recurrent)

    def logits(self, state):
        return state @ self.output


TOKENS = ["<pad>", "<unk>", "a", "b", "c", "d", "e", "<eos>"]


def uniformish_table(size, seed=0):
    rng = np.random.default_rng(seed)
    table = rng.random((size, size)) + 0.05
    table[:, 0] = 0.0  # never the pad token
    return table / table.sum(1, keepdims=True)


def make_backend(seed=0, **options):
    return BigramBackend(uniformish_table(len(TOKENS), seed), TOKENS, **options)


def cycle_backend(**options):
    """Always a b c d e a b c ...: each token has exactly one successor."""
    table = np.zeros((len(TOKENS), len(TOKENS)))
    for last, following in {2: 3, 3: 4, 4: 5, 5: 6, 6: 2, 7: 2}.items():
        table[last, following] = 1.0
    return BigramBackend(table, TOKENS, **options)


def drain(generator):
    """Runs a generator to its end and returns its return value."""
    try:
        while True:
            next(generator)
    except StopIteration as stop:
        return stop.value


# === Feeding and carrying the state ===


def test_prompts_fed_once_then_one_token_per_live_row():
    backend = make_backend()
    generate(backend, ["a b c", "d"], max_new_tokens=3, seed=0)
    steps = backend.steps()
    assert steps[0].tolist() == [[2, 3, 4], [5, 0, 0]]  # both prompts, right-padded, in one call
    assert [s.shape for s in steps[1:]] == [(2, 1), (2, 1)]  # then one token per row, never the prefix
    assert len(steps) == 3, "no step after the last token"


def test_fake_rnn_gives_the_same_state_for_a_prompt_at_once_or_token_by_token():
    backend = RNNBackend(TOKENS)
    at_once_logits, at_once_state = backend.step(np.array([[2, 3, 4], [5, 0, 0]]), backend.initial_state(2))
    for row, ids in enumerate([[2, 3, 4], [5]]):
        state = backend.initial_state(1)
        for token in ids:
            logits, state = backend.step(np.array([[token]]), state)
        np.testing.assert_allclose(logits[0], at_once_logits[row])
        np.testing.assert_allclose(state[0], at_once_state[row])


def test_loop_matches_a_token_by_token_rollout():
    backend = RNNBackend(TOKENS, seed=3)
    prompts = ["a b c", "d", "e e a b"]
    result = generate(backend, prompts, max_new_tokens=6, do_sample=False, return_logprobs=True)
    for prompt, tokens, logprobs in zip(prompts, result.token_ids, result.logprobs):
        state = backend.initial_state(1)
        for token in backend.tokenize([prompt])[0]:
            logits, state = backend.step(np.array([[token]]), state)
        expected_tokens, expected_logprobs = [], []
        for _ in range(6):
            choice = int(np.argmax(logits[0, 1:])) + 1  # the loop never produces <pad>
            expected_tokens.append(choice)
            expected_logprobs.append(float(samplers.log_softmax(logits)[0, choice]))
            logits, state = backend.step(np.array([[choice]]), state)
        assert tokens == expected_tokens
        np.testing.assert_allclose(logprobs, expected_logprobs, rtol=1e-12)
    np.testing.assert_allclose(continuation_logprobs(backend, prompts, result.token_ids), result.logprobs, rtol=1e-12)


def test_finished_rows_leave_the_batch():
    table = uniformish_table(len(TOKENS))
    table[5] = 0.0
    table[5, 7] = 1.0  # after "d" the model always ends
    backend = BigramBackend(table, TOKENS, end_token="<eos>")
    result = generate(backend, ["d", "a", "b"], max_new_tokens=4, do_sample=False)
    assert result.finish_reasons[0] == "end" and result.token_ids[0] == []
    steps = backend.steps()
    assert all(step.shape[0] == 2 for step in steps[1:]), "only the live rows are sent after the first token"
    # The state rows sent on are those of the live rows ("a" and "b"), in order.
    second_state = [call[2] for call in backend.calls if call[0] == "step"][1]
    np.testing.assert_array_equal(second_state, np.eye(len(TOKENS))[[2, 3]])


def test_return_sequences_copy_the_prompt_state_instead_of_feeding_it_again():
    backend = make_backend()
    result = generate(backend, ["a b", "c"], max_new_tokens=3, seed=1, num_return_sequences=3)
    assert result.prompts == ["a b"] * 3 + ["c"] * 3
    steps = backend.steps()
    assert steps[0].shape == (2, 2) and steps[1].shape == (6, 1)


# === Seeds, stops, log-probabilities ===


def test_same_seed_same_text_whatever_the_batch():
    backend = make_backend()
    alone = generate(backend, ["b"], max_new_tokens=12, seed=7).texts[0]
    batch = generate(backend, ["a", "b", "c d"], max_new_tokens=12, seed=7).texts
    assert batch[1] == alone
    assert generate(backend, ["b"], max_new_tokens=12, seed=8).texts[0] != alone
    several = generate(backend, ["c d", "b"], max_new_tokens=12, seed=7, num_return_sequences=3).texts
    assert several[3] == alone and len(set(several[3:])) > 1
    assert generate(backend, ["b"], max_new_tokens=12, seed=7, num_return_sequences=3).texts == several[3:]


def test_stop_strings_cut_exactly_even_across_tokens():
    backend = cycle_backend()
    stream, results = [], []
    for row, piece in stream_generate(backend, ["a"], max_new_tokens=20, do_sample=False, stop=["c d"],
                                      on_result=results.append):
        stream.append(piece)
    result = results[0]
    # " b c d e": the stop string "c d" spans two tokens; the output ends right before it.
    assert result.texts == [" b "] and result.finish_reasons == ["stop"]
    assert result.token_ids == [[3]]
    assert "".join(stream) == " b ", "the held-back part of a stop string is never streamed"
    # A stop string may begin inside a token; only the tokens wholly before it are kept.
    cut = generate(backend, ["a"], max_new_tokens=20, do_sample=False, stop=["b c"[1:] + " d"])
    assert cut.texts == [" b"] and cut.token_ids == [[3]]
    # Several stop strings: the earliest match wins; a stop token id works too and is not output.
    assert generate(backend, ["a"], max_new_tokens=20, do_sample=False, stop=["e", " c"]).texts == [" b"]
    by_id = generate(backend, ["a"], max_new_tokens=20, do_sample=False, stop=[5])
    assert by_id.texts == [" b c"] and by_id.finish_reasons == ["stop"]
    # Matches inside the prompt do not count; matches before min_new_tokens do not either.
    assert generate(backend, ["a"], max_new_tokens=3, do_sample=False, stop=["a"]).texts == [" b c d"]
    late = generate(backend, ["a"], max_new_tokens=20, do_sample=False, stop=[" b"], min_new_tokens=2)
    assert late.texts == [" b c d e a"]


def test_character_model_stop_string_and_streaming():
    tokens = ["<pad>", "<unk>", "x", "y", "\n"]
    table = np.zeros((5, 5))
    table[2, 3], table[3, 4], table[4, 2] = 1.0, 1.0, 1.0  # x y \n x y \n ...
    backend = BigramBackend(table, tokens, separator="")
    pieces = list(stream_generate(backend, ["x"], max_new_tokens=7, do_sample=False, stop=["\nxy\n"]))
    assert "".join(piece for _, piece in pieces) == "y"
    assert generate(backend, ["x"], max_new_tokens=7, do_sample=False).texts == ["y\nxy\nxy"]


def test_greedy_logprobs_and_full_texts():
    backend = make_backend(seed=3)
    result = generate(backend, ["a"], max_new_tokens=4, do_sample=False, return_logprobs=True)
    last = 2
    for token, logprob in zip(result.token_ids[0], result.logprobs[0]):
        probabilities = backend.table[last]
        assert token == int(np.argmax(probabilities))
        assert logprob == pytest.approx(np.log(probabilities[token]))
        last = token
    assert result.full_texts[0] == "a" + result.texts[0]
    assert generate(backend, ["a"], max_new_tokens=4, do_sample=False).logprobs is None


def test_token_id_prompts_are_fed_as_given():
    backend = make_backend()
    by_text = generate(backend, ["a b"], max_new_tokens=5, seed=2)
    calls_before = len(backend.calls)
    by_ids = generate(backend, [[2, 3]], max_new_tokens=5, seed=2)
    assert by_ids.texts == by_text.texts and by_ids.prompts == ["a b"]
    names = [call[0] for call in backend.calls[calls_before:]]
    assert "tokenize" not in names and names[0] == "initial_state"
    first_step = backend.calls[calls_before + 1]
    assert first_step[1].tolist() == [[2, 3]], "the ids are fed as given, in one step call"


def test_empty_prompt_starts_from_the_end_token_and_oov_warns(caplog):
    backend = make_backend(end_token="<eos>")
    result = generate(backend, [""], max_new_tokens=2, seed=0)
    assert backend.steps()[0].tolist() == [[7]]
    assert result.prompts == [""] and not result.texts[0].startswith(" ")
    with caplog.at_level(logging.WARNING):
        generate(backend, ["a zebra"], max_new_tokens=1, seed=0)
    assert "1 token(s) outside the vocabulary" in caplog.text
    assert backend.steps()[-1].tolist() == [[7, 2, 1]], "text prompts follow the end token, a text boundary"
    generate(backend, ["b", "a c e"], max_new_tokens=1, seed=0)
    assert backend.steps()[-1].tolist() == [[7, 3, 0, 0], [7, 2, 4, 6]]
    characters = BigramBackend(uniformish_table(5), ["<pad>", "<unk>", "x", "\n", "y"], separator="")
    generate(characters, [""], max_new_tokens=1, seed=0)
    assert characters.steps()[0].tolist() == [[3]], "a character model starts from a newline"
    generate(characters, ["xy"], max_new_tokens=1, seed=0)
    assert characters.steps()[-1].tolist() == [[3, 2, 4]]
    plain = make_backend()
    generate(plain, ["a b"], max_new_tokens=1, seed=0)
    assert plain.steps()[0].tolist() == [[2, 3]], "no end token, no newline: the bare initial state"
    with pytest.raises(ValueError, match="neither an end token nor a newline"):
        generate(make_backend(), [""], max_new_tokens=1)


def test_min_new_tokens_holds_off_the_end_token():
    table = uniformish_table(len(TOKENS))
    table[:, 7] = 5.0  # the end token dominates
    table = table / table.sum(1, keepdims=True)
    backend = BigramBackend(table, TOKENS, end_token="<eos>")
    assert generate(backend, ["a"], max_new_tokens=5, do_sample=False).token_ids == [[]]
    held = generate(backend, ["a"], max_new_tokens=5, min_new_tokens=3, do_sample=False)
    assert len(held.token_ids[0]) == 3 and held.finish_reasons == ["end"]
    ignored = generate(backend, ["a"], max_new_tokens=5, do_sample=False, stop_at_end_token=False)
    assert ignored.finish_reasons == ["length"] and ignored.token_ids[0] == [7] * 5, "an ordinary token now"


# === Logit processors ===


def test_repetition_penalty_values():
    logits = np.array([[2.0, -1.0, 0.5, 3.0], [2.0, -1.0, 0.5, 3.0]])
    penalized = apply_repetition_penalty(logits, [[0, 1, 1], [3]], 2.0)
    np.testing.assert_array_equal(penalized, [[1.0, -2.0, 0.5, 3.0], [2.0, -1.0, 0.5, 1.5]])
    np.testing.assert_array_equal(logits[0], [2.0, -1.0, 0.5, 3.0]), "the input is not modified"
    np.testing.assert_array_equal(apply_repetition_penalty(logits, [[0], [0]], 0.5)[0], [4.0, -1.0, 0.5, 3.0])


def test_no_repeat_ngram():
    assert banned_ngram_tokens([5, 6, 7, 5, 6], 3) == {7}
    assert banned_ngram_tokens([5, 6, 7, 5, 6], 2) == {7}
    assert banned_ngram_tokens([5, 6, 7, 5, 6], 1) == {5, 6, 7}
    assert banned_ngram_tokens([1, 2, 3], 4) == set()
    table = np.zeros((len(TOKENS), len(TOKENS)))
    table[:, 3] = 0.9
    table[:, 4] = 0.1
    backend = BigramBackend(table, TOKENS)
    tokens = generate(backend, ["a"], max_new_tokens=4, do_sample=False, no_repeat_ngram_size=2).token_ids[0]
    assert tokens[:3] == [3, 3, 4], "b b may not repeat as a bigram"
    penalized = generate(backend, ["a"], max_new_tokens=2, do_sample=False, repetition_penalty=100.0).token_ids[0]
    assert penalized == [3, 4], "b's log-probability is multiplied by 100 once it has been seen"


# === Beam search ===


def test_beam_with_one_beam_equals_greedy():
    backend = make_backend(seed=5, end_token="<eos>")
    greedy = generate(backend, ["a", "c", "e b"], max_new_tokens=8, do_sample=False)
    found = drain(beam_search.search(backend, ["a", "c", "e b"], GenerationOptions(max_new_tokens=8, num_beams=1)))
    assert [items[0][1].tokens for items in found] == greedy.token_ids
    assert [items[0][1].finish_reason for items in found] == greedy.finish_reasons


def test_beam_search_finds_the_sequence_greedy_misses():
    # "b" (0.6) leads nowhere good; "c" (0.4) leads to "e" with 0.95.
    table = np.full((len(TOKENS), len(TOKENS)), 1e-9)
    table[2, 3], table[2, 4] = 0.6, 0.4
    table[3, 2:7] = 0.2
    table[4, 6], table[4, 5] = 0.95, 0.05
    table[6, 6] = 1.0
    backend = BigramBackend(table / table.sum(1, keepdims=True), TOKENS)
    assert generate(backend, ["a"], max_new_tokens=2, do_sample=False).texts == [" b a"]
    beam = generate(backend, ["a"], max_new_tokens=2, num_beams=2, num_return_sequences=2, length_penalty=0.0,
                    return_logprobs=True)
    assert beam.texts == [" c e", " b a"]
    assert beam.scores[0] == pytest.approx(np.log(0.4 * 0.95), rel=1e-6)
    assert beam.scores[1] == pytest.approx(np.log(0.6 * 0.2), rel=1e-6)
    np.testing.assert_allclose(beam.logprobs[0], np.log([0.4, 0.95]), rtol=1e-6)
    # With length_penalty 1 the score is the mean log-probability.
    normalized = generate(backend, ["a"], max_new_tokens=2, num_beams=2)
    assert normalized.scores[0] == pytest.approx(np.log(0.4 * 0.95) / 2, rel=1e-6)


def test_beam_search_ends_hypotheses_and_drops_finished_prompts():
    table = uniformish_table(len(TOKENS), seed=2)
    table[:, 7] = 0.0  # only "d" and "e" below can be followed by the end token
    table[5] = 0.0
    table[5, 7], table[5, 6] = 0.5, 0.5  # after "d": the end token or "e"
    table[6] = 0.0
    table[6, 7] = 1.0  # after "e": the end token
    backend = BigramBackend(table / table.sum(1, keepdims=True), TOKENS, end_token="<eos>")
    result = generate(backend, ["d", "a b"], max_new_tokens=6, num_beams=2, num_return_sequences=2,
                      early_stopping=True, length_penalty=0.0)
    # "d": the end token at once (log 0.5), then "e" and the end token (log 0.5 + log 1); the tie
    # goes to the hypothesis found first.
    assert result.texts[:2] == ["", " e"] and result.finish_reasons[:2] == ["end", "end"]
    assert result.scores[0] == pytest.approx(np.log(0.5)) and result.scores[1] == pytest.approx(np.log(0.5))
    assert result.scores[2] >= result.scores[3]
    widths = [step.shape[0] for step in backend.steps()]
    # The prompts together, then both prompts' two beams; once "d" has two hypotheses
    # (early_stopping) its beams leave the batch and only "a b"'s two beams go on.
    assert widths[:2] == [2, 4] and len(widths) > 2 and set(widths[2:]) == {2}


# === Errors ===


@pytest.mark.parametrize("options, message", [
    ({"top_p": 1.5}, "top_p"), ({"top_p": 0.0}, "top_p"), ({"temperature": -1.0}, "temperature"),
    ({"temperature": 0.0}, "temperature"), ({"num_beams": 0}, "num_beams"),
    ({"max_new_tokens": -1}, "max_new_tokens"), ({"max_new_tokens": 2.5}, "max_new_tokens"),
    ({"min_new_tokens": 5, "max_new_tokens": 2}, "min_new_tokens"), ({"top_k": -2}, "top_k"),
    ({"min_p": 1.5}, "min_p"), ({"typical_p": 0.0}, "typical_p"), ({"repetition_penalty": 0.0}, "repetition"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
    ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
    ({"do_sample": False, "num_return_sequences": 2}, "greedy decoding gives one sequence"),
    ({"num_beams": 2, "do_sample": True}, "do_sample=True needs num_beams=1"),
    ({"early_stopping": "sometimes"}, "early_stopping"),
    ({"stop": [""]}, "stop strings"), ({"stop": [0]}, "stop token ids"), ({"stop": "x"}, "stop must be a list"),
    ({"seed": -1}, "seed"), ({"length_penalty": float("nan")}, "length_penalty"),
    ({"unknown_option": 1}, "unknown_option"),
])
def test_impossible_parameters_fail_before_any_call(options, message):
    backend = make_backend()
    with pytest.raises((ValueError, TypeError), match=message):
        generate(backend, ["a"], **options)
    assert backend.calls == []


@pytest.mark.parametrize("prompts, message", [("a b", "not one string"), ([], "no prompts"),
                                               ([[2, 0]], "token ids > 0")])
def test_bad_prompts_fail_before_any_call(prompts, message):
    backend = make_backend()
    with pytest.raises(ValueError, match=message):
        generate(backend, prompts)
    assert backend.calls == []


def test_backend_failure_says_how_far_generation_got():
    backend = make_backend()
    original = backend.step

    def failing_step(token_ids, state):
        if len(backend.steps()) >= 3:  # the prompts and two tokens went through
            raise BackendError("connection reset")
        return original(token_ids, state)

    backend.step = failing_step
    with pytest.raises(GenerationError, match=r"row 0: 3, row 1: 3\).*connection reset") as caught:
        generate(backend, ["a", "b"], max_new_tokens=10, seed=0)
    assert caught.value.tokens_generated == [3, 3]


# === Scoring ===


def test_score_steps_through_the_text_when_the_backend_has_no_score():
    backend = make_backend(seed=4)
    result = score(backend, ["a b c", "d", "e a"])
    table = backend.table
    assert result[0]["log_prob"] == pytest.approx(np.log(table[2, 3] * table[3, 4]))
    assert result[0]["num_tokens"] == 2
    assert result[0]["perplexity"] == pytest.approx(np.exp(-result[0]["log_prob"] / 2))
    assert result[1]["num_tokens"] == 0 and np.isnan(result[1]["perplexity"])
    assert result[2]["log_prob"] == pytest.approx(np.log(table[6, 2]))


# === CLI ===


def test_cli_streams_several_prompts_with_a_row_prefix(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(generation, "backend_from_arguments", lambda args: cycle_backend())
    assert generation.main(["a", "c", "--model", "m", "--max_new_tokens", "3", "--greedy"]) == 0
    assert capsys.readouterr().out.splitlines() == ["[0] a b c d", "[1] c d e a"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a\nb\nc\n", encoding="utf-8")
    assert generation.main(["--prompts_file", str(prompts), "--model", "m", "--max_new_tokens", "2",
                            "--greedy", "--batch_size", "2"]) == 0
    assert capsys.readouterr().out.split("\n")[:6] == ["--- [0] ---", "a b c", "--- [1] ---", "b c d",
                                                        "--- [2] ---", "c d e"]
    assert generation.main(["a", "--model", "m", "--top_p", "2"]) == 2
    assert "top_p must be in (0, 1]" in capsys.readouterr().err


def test_cli_scores_texts(monkeypatch, capsys):
    import json

    monkeypatch.setattr(generation, "backend_from_arguments", lambda args: cycle_backend())
    assert generation.main(["a b c", "a c", "--model", "m", "--score"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["a b c", "a c"]
    assert lines[0]["num_tokens"] == 2 and lines[0]["log_prob"] == pytest.approx(0.0, abs=1e-9)
    assert lines[0]["perplexity"] == pytest.approx(1.0)
    assert lines[1]["log_prob"] < -30, "c never follows a in the cycle"


# === Real models: every cell, in-process and over gRPC ===


@pytest.fixture(scope="module")
def exported_models(tmp_path_factory):
    keras = pytest.importorskip("keras")
    import zoo
    from serving import export
    from training.vocab import Vocabulary

    base = tmp_path_factory.mktemp("generation_models")
    vocabulary = Vocabulary(["<pad>", "<unk>", " ", "a", "b", "c", "d", "\n", "R", "O", "M", "E", ":"])
    keras.utils.set_random_seed(11)
    paths, models = {}, {}
    for cell in zoo.CELL_TYPES:
        model = zoo.build("language_model", cell=cell, vocabulary_size=len(vocabulary), embedding_dim=8,
                          hidden_dim=8, num_layers=2)
        model.build((None, None))
        paths[cell] = export.export_model(model, vocabulary, task="language_model", export_base=base,
                                          model_name=f"lm_{cell}", level="char")
        models[cell] = model
    return base, paths, models, vocabulary


def test_stepped_logits_equal_a_full_forward_pass_for_every_cell(exported_models):
    from serving.generation import KerasBackend, SavedModelBackend

    _, paths, models, vocabulary = exported_models
    for cell, path in paths.items():
        backend = SavedModelBackend(path)
        ids = backend.tokenize(["ROMEO: abcd"])[0]
        state = backend.initial_state(1)
        logits, state = backend.step(np.array([ids[:4]]), state)  # a prompt of 4 in one call
        stepped = [logits[0]]
        for token in ids[4:]:
            logits, state = backend.step(np.array([[token]]), state)
            stepped.append(logits[0])
        full = np.asarray(models[cell](np.array([ids])))[0, 3:]
        np.testing.assert_allclose(np.stack(stepped), full, atol=1e-5, err_msg=cell)
        keras_backend = KerasBackend(models[cell], vocabulary, level="char")
        assert generate(keras_backend, ["RO"], max_new_tokens=8, seed=2).texts == \
            generate(backend, ["RO"], max_new_tokens=8, seed=2).texts, cell


def test_grpc_and_in_process_give_the_same_text_and_scores(exported_models):
    from serving.generation import GrpcBackend, SavedModelBackend
    from serving_helpers import running_server

    base, paths, _, _ = exported_models
    local = SavedModelBackend(paths["lstm"])
    prompts = ["ROMEO:", "", "abc"]
    expected = generate(local, prompts, max_new_tokens=15, top_p=0.9, seed=4)
    with running_server(model_base_dir=base, rest=False, monitoring=False) as server:
        remote = GrpcBackend(server.grpc_target, "lm_lstm", timeout_seconds=20)
        assert remote.token_strings == local.token_strings and remote.separator == ""
        result = generate(remote, prompts, max_new_tokens=15, top_p=0.9, seed=4)
        assert result.texts == expected.texts
        beams = generate(remote, ["ab"], max_new_tokens=6, num_beams=3, num_return_sequences=2)
        assert beams.texts == generate(local, ["ab"], max_new_tokens=6, num_beams=3, num_return_sequences=2).texts
        remote_scores = score(remote, ["ROMEO: abc"])
        assert remote_scores[0]["log_prob"] == pytest.approx(score(local, ["ROMEO: abc"])[0]["log_prob"], rel=1e-5)
        # The score signature agrees with stepping through the text.
        stepped = score(WithoutScore(local), ["ROMEO: abc"])[0]
        assert stepped["log_prob"] == pytest.approx(remote_scores[0]["log_prob"], rel=1e-4)
        assert stepped["num_tokens"] == remote_scores[0]["num_tokens"] == 9

        # The server goes away mid-generation: a clear error, with the progress.
        stream = stream_generate(remote, ["ab"], max_new_tokens=50, seed=1)
        next(stream)
        server.process.terminate()
        server.process.wait(timeout=30)
        with pytest.raises(GenerationError, match=r"new tokens per row \(row 0: \d+\)"):
            for _ in stream:
                pass


class WithoutScore:
    """Wraps a backend without its `score`, so `score()` steps through the text."""

    def __init__(self, backend):
        self.inner = backend
        self.token_strings, self.separator, self.end_token = backend.token_strings, backend.separator, None

    def tokenize(self, texts):
        return self.inner.tokenize(texts)

    def initial_state(self, batch_size):
        return self.inner.initial_state(batch_size)

    def step(self, token_ids, state):
        return self.inner.step(token_ids, state)


def test_cli_streams_from_a_saved_model(exported_models, capsys):
    from serving.generation import SavedModelBackend

    _, paths, _, _ = exported_models
    code = generation.main(["ROMEO:", "--saved_model", str(paths["gru"]), "--max_new_tokens", "10", "--seed", "3"])
    assert code == 0
    out = capsys.readouterr().out
    expected = generate(SavedModelBackend(paths["gru"]), ["ROMEO:"], max_new_tokens=10, seed=3).full_texts[0]
    assert out == expected + "\n"


def test_the_vocabulary_is_read_in_calls_a_server_s_batch_limit_allows():
    # A 10k-word model's vocabulary in one detokenize call is 10k rows, which a
    # server with --max_batch_size 1024 refuses (make demo failed so).
    from serving.generation.backends import VOCABULARY_ROWS_PER_CALL, _vocabulary_from_detokenize

    calls = []

    def detokenize_rows(rows):
        assert rows.shape[1] == 1 and len(rows) <= VOCABULARY_ROWS_PER_CALL
        calls.append(len(rows))
        return [f"w{int(row[0])}" for row in rows]

    size = 2 * VOCABULARY_ROWS_PER_CALL + 7
    assert _vocabulary_from_detokenize(detokenize_rows, size) == [f"w{i}" for i in range(size)]
    assert calls == [VOCABULARY_ROWS_PER_CALL, VOCABULARY_ROWS_PER_CALL, 7]
