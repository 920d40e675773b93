"""Generation quality: the metrics on hand-made sequences, and the comparison end to end on NumPy fakes."""

import dataclasses
import json
import math

import numpy as np
import pytest

from serving.generation import quality
from serving.generation.quality import (Reference, bleu, brevity_penalty, chunk_starts, clipped_matches,
                                        closest_reference_length, distinct_n, loop_at_end, perplexity,
                                        repetition_rate, self_bleu, zipf_coefficient)
from serving.generation.quality import cli as quality_cli
from test_generate import TOKENS, cycle_backend, make_backend


def words(text):
    return text.split()


# === Loops at the end ===


@pytest.mark.parametrize("text, expected", [
    ("x c a b c a b c a b", (3, 3)),          # three back-to-back copies of "c a b"
    ("x a b c a b c a b c a", (3, 3)),        # ends mid-phrase: three copies of the rotation "b c a"
    ("q r s t a b a b a b", (2, 3)),
    ("w a a a a a a", (2, 3)),                # one token 6 times: three copies of "a a"
    ("a b c d e a b c d e a b c d e", (5, 3)),
    ("x y z x y z x y z x y z", (3, 4)),
])
def test_loop_at_end_finds_loops(text, expected):
    assert loop_at_end(words(text)) == expected


@pytest.mark.parametrize("text", [
    "the cat sat on the mat",
    "a b a b a",                              # 2.5 copies of "a b"
    "w a a a a a",                            # one token 5 times: 2.5 copies of "a a"
    "a b a b a b c d",                        # the loop is not at the end
    "x a b c a b c a b",                      # "a b c" twice, then a partial copy: 2 full copies
    "",
])
def test_loop_at_end_rejects_non_loops(text):
    assert loop_at_end(words(text)) is None


def test_loop_rule_parameters():
    assert loop_at_end(["x", "x", "x"], min_phrase_length=1, min_repeats=3) == (1, 3)
    assert loop_at_end(words("x a b a b"), min_phrase_length=2, min_repeats=2) == (2, 2)
    assert loop_at_end(words("x a b c a b c"), min_phrase_length=4, min_repeats=2) is None
    assert loop_at_end([1, 2, 1, 2, 1, 2]) == (2, 3), "any hashable tokens"
    with pytest.raises(ValueError):
        loop_at_end(words("a a"), min_repeats=1)


def test_repetition_rate():
    texts = [words("x a b a b a b"), words("the cat sat"), words("p q p q p q"), words("one two")]
    assert repetition_rate(texts) == 0.5
    assert math.isnan(repetition_rate([]))


# === Distinct-n ===


def test_distinct_n_exact_values():
    texts = [words("a b a b"), words("a c")]
    assert distinct_n(texts, 1) == 3 / 6      # a b c of a b a b a c
    assert distinct_n(texts, 2) == 3 / 4      # ab ba ac of ab ba ab | ac: n-grams never cross texts
    assert distinct_n(texts, 3) == 2 / 2      # aba bab; "a c" has none
    assert math.isnan(distinct_n(texts, 5))
    assert distinct_n([words("a a a a")], 1) == 1 / 4


# === BLEU and Self-BLEU ===


def test_bleu_by_hand():
    # Precisions 4/5, 3/4, 2/3, 1/2 (the n-grams ending in e do not match); equal lengths, no penalty.
    expected = (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** (1 / 4)
    assert bleu(words("a b c d e"), [words("a b c d f")]) == pytest.approx(expected)
    assert expected == pytest.approx(0.668740305)


def test_bleu_brevity_penalty_and_clipping():
    # Every n-gram matches but the hypothesis is 4 tokens against 6: BP = exp(1 - 6/4).
    assert bleu(words("a b c d"), [words("a b c d e f")]) == pytest.approx(math.exp(-0.5))
    assert brevity_penalty(7, 6) == 1.0 and brevity_penalty(0, 3) == 0.0
    # Papineni et al.'s example: "the" counts at most twice, as in the first reference.
    references = [words("the cat is on the mat"), words("there is a cat on the mat")]
    assert clipped_matches(words("the the the the the the the"), references, 1) == (2, 7)
    assert closest_reference_length(5, [4, 6]) == 4, "ties go to the shorter reference"
    assert bleu(words("a b c"), [words("a b c")]) == 0.0, "no 4-gram at all: 0 without smoothing"


def test_self_bleu_of_identical_and_disjoint_texts():
    assert self_bleu([words("a b c d e f")] * 3) == pytest.approx(1.0)
    assert self_bleu([words("a b c d"), words("e f g h"), words("i j k l")]) == 0.0
    assert math.isnan(self_bleu([words("a b c d")]))


def test_self_bleu_equals_mean_bleu_against_the_others_and_caps_the_texts():
    rng = np.random.default_rng(3)
    texts = [list(rng.integers(0, 4, size=int(rng.integers(5, 12)))) for _ in range(7)]
    expected = np.mean([bleu(text, texts[:i] + texts[i + 1:]) for i, text in enumerate(texts)])
    assert expected > 0
    assert self_bleu(texts) == pytest.approx(expected)
    capped = [words("a b c d e")] * 2 + [words("v w x y z")] * 3
    assert self_bleu(capped, max_texts=2) == pytest.approx(1.0)
    assert self_bleu(capped, max_texts=None) == pytest.approx(1.0)
    assert self_bleu([words("a b c d e"), words("a b c d e"), words("v w x y z")], max_texts=None) == \
        pytest.approx(2 / 3)


# === Zipf and perplexity ===


@pytest.mark.parametrize("counts, exponent", [([144, 36, 16, 9], 2.0), ([60, 30, 20, 15, 12], 1.0)])
def test_zipf_on_an_exact_power_law(counts, exponent):
    tokens = [f"w{rank}" for rank, count in enumerate(counts) for _ in range(count)]
    shuffled = list(np.random.default_rng(0).permutation(tokens))
    assert zipf_coefficient([shuffled[:50], shuffled[50:]]) == pytest.approx(exponent)


def test_zipf_fits_only_the_top_ranks():
    tokens = [f"w{rank}" for rank, count in enumerate([144, 36, 16, 9, 9, 9, 9]) for _ in range(count)]
    assert zipf_coefficient([tokens], max_ranks=4) == pytest.approx(2.0)
    assert zipf_coefficient([tokens]) < 2.0
    assert math.isnan(zipf_coefficient([["a", "a"]]))


def test_perplexity_over_all_tokens():
    logprobs = [[math.log(0.5), math.log(0.25)], [math.log(0.5)], []]
    assert perplexity(logprobs) == pytest.approx(2 ** (4 / 3))
    assert math.isnan(perplexity([[]]))


# === Prompts from the dev split ===


def test_chunk_starts_are_line_starts_spread_and_disjoint():
    tokens = []
    for line in range(40):
        tokens += [f"w{line}"] * (3 + line % 4) + ["<eos>"]
    starts = chunk_starts(tokens, 5, 6, "<eos>")
    assert len(starts) == 5 and starts == sorted(starts)
    assert all(tokens[start - 1] == "<eos>" and tokens[start] != "<eos>" for start in starts)
    assert all(later - earlier >= 6 for earlier, later in zip(starts, starts[1:]))
    assert starts[-1] > len(tokens) / 2, "spread over the whole stream"
    with pytest.raises(ValueError, match="room for only"):
        chunk_starts(tokens, 30, 10, "<eos>")


# === The comparison end to end ===


def write_dev_file(directory, lines=60, seed=0):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    text = "\n".join(" ".join(rng.choice(list("abcde"), size=int(rng.integers(4, 9)))) for _ in range(lines))
    (directory / "valid.txt").write_text(text + "\n", encoding="utf-8")
    return directory


def test_cli_compares_every_method_with_the_human_text(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(quality_cli, "backend_from_arguments", lambda args: cycle_backend(end_token="<eos>"))
    data = write_dev_file(tmp_path / "corpus")
    output = tmp_path / "results" / "quality"
    code = quality_cli.main(["--model", "cycle", "--data", str(data), "--num_prompts", "6", "--prompt_tokens", "3",
                         "--max_new_tokens", "20", "--batch_size", "4", "--output", str(output), "--no_progress"])
    assert code == 0
    report = json.loads((tmp_path / "results" / "quality.json").read_text(encoding="utf-8"))
    rows = report["rows"]
    assert list(rows) == ["greedy", "beam", "sampling", "top_k", "nucleus", "human"]
    assert rows["top_k"]["label"] == "top-k, k=40" and rows["beam"]["options"]["num_beams"] == 4
    for row in rows.values():
        assert row["texts"] == 6 and row["mean_tokens"] == 20
        assert all(f"distinct_{n}" in row for n in quality.DISTINCT_ORDERS)
    greedy = rows["greedy"]
    assert greedy["repetition"] == 1.0, "a b c d e a b ... ends in a loop"
    assert greedy["perplexity"] == pytest.approx(1.0) and greedy["distinct_1"] == pytest.approx(5 / 120)
    continuation = [TOKENS.index(token) for token in greedy["examples"][0]["continuation"].split()]
    assert all(following == {2: 3, 3: 4, 4: 5, 5: 6, 6: 2}[last] for last, following in
               zip(continuation, continuation[1:]))
    assert rows["human"]["perplexity"] > 1e6, "random text is nearly impossible under the cycle model"
    assert report["setup"]["level"] == "word" and report["setup"]["prompt_tokens"] == 3
    markdown = (tmp_path / "results" / "quality.md").read_text(encoding="utf-8")
    printed = capsys.readouterr().out
    for label in ("greedy", "beam search, 4 beams", "pure sampling", "top-k, k=40", "nucleus, p=0.95",
                  "human (dev split)"):
        assert f"| {label} |" in markdown and f"| {label} |" in printed
    assert "| greedy | 1.00 | 100 |" in printed
    assert "repeated at least 3 times" in markdown and "longer than 1/3 of" in markdown


def test_comparison_is_reproducible_and_prompts_come_from_the_corpus():
    backend = make_backend(seed=4, end_token="<eos>")
    rng = np.random.default_rng(1)
    tokens = []
    for _ in range(30):
        tokens += list(rng.choice(list("abcde"), size=int(rng.integers(2, 6)))) + ["<eos>"]
    reference = quality.build_reference(backend, tokens, "word", num_prompts=4, prompt_tokens=2,
                                        continuation_tokens=5)
    assert isinstance(reference, Reference) and len(reference.human_ids) == 4
    index = {token: i for i, token in enumerate(TOKENS)}
    for start, prompt, human in zip(reference.starts, reference.prompt_ids, reference.human_ids):
        assert prompt + human == [index[token] for token in tokens[start:start + 7]]
    methods = quality.decoding_methods("word", top_k=3)
    first = quality.compare_decoding(backend, reference, methods, max_new_tokens=8, seed=5, show_progress=False)
    again = quality.compare_decoding(backend, reference, methods, max_new_tokens=8, seed=5, show_progress=False)
    strip = lambda rows: {name: {k: v for k, v in row.items() if k != "seconds"} for name, row in rows.items()}
    assert strip(first) == strip(again)
    assert first["sampling"]["examples"] != first["greedy"]["examples"]


@pytest.mark.parametrize("arguments, message", [
    (["--data", "/no/such/corpus"], "no such file or directory"),
    (["--num_prompts", "0"], "--num_prompts must be >= 1"),
    (["--max_new_tokens", "-3"], "--max_new_tokens must be >= 1"),
    (["--top_p", "1.5"], "--top_p must be in (0, 1]"),
    (["--methods", "greedy,magic"], "unknown --methods"),
    (["--num_beams", "1"], "--num_beams must be >= 2"),
    (["--data", "{tmp}/ptb.test.txt"], "is a test split"),
])
def test_cli_rejects_bad_arguments_before_loading_anything(monkeypatch, tmp_path, capsys, arguments, message):
    def no_backend(args):
        raise AssertionError("the backend must not be loaded")

    monkeypatch.setattr(quality_cli, "backend_from_arguments", no_backend)
    (tmp_path / "ptb.test.txt").write_text("held back\n", encoding="utf-8")
    base = ["--model", "m", "--data", str(tmp_path)]
    assert quality_cli.main(base + [argument.format(tmp=tmp_path) for argument in arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"{quality_cli.PROG}: error:") and message in error


def test_cli_reports_a_directory_without_a_dev_split(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(quality_cli, "backend_from_arguments", lambda args: cycle_backend(end_token="<eos>"))
    assert quality_cli.main(["--model", "m", "--data", str(tmp_path), "--no_progress"]) == 2
    assert "no dev file" in capsys.readouterr().err


def test_help_names_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        quality_cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--saved_model", "--server", "--data", "--num_prompts", "--max_new_tokens", "--output"):
        assert flag in out


def test_undefined_metrics_are_null_in_the_json_and_n_a_in_the_table(tmp_path):
    rows = {"greedy": {"label": "greedy", "perplexity": 2.0, "repetition": 0.5, "distinct_1": 0.25,
                       "distinct_2": float("nan"), "distinct_3": float("nan"), "self_bleu": float("nan"),
                       "zipf": 1.0, "examples": [{"prompt": "a", "continuation": "b\nc"}]}}
    setup = {"model": "m", "level": "word", "num_prompts": 1, "prompt_tokens": 1, "max_new_tokens": 1, "seed": 0,
             "data_source": "d", "metrics": dataclasses.asdict(quality.MetricSettings())}
    json_path, markdown_path, plot_path = quality.write_report({"setup": setup, "rows": rows}, tmp_path / "r")
    assert plot_path.read_bytes().startswith(b"\x89PNG")
    assert json.loads(json_path.read_text(encoding="utf-8"))["rows"]["greedy"]["self_bleu"] is None
    assert "| greedy | 2.00 | 50 | 0.250 | n/a | n/a | n/a | 1.00 |" in markdown_path.read_text(encoding="utf-8")


def test_the_dev_region_is_the_one_the_saved_model_recorded(tmp_path):
    # A character model trained with dev starting at a given line must not be prompted with its own
    # training text: the comparison reads `valid_start` from the SavedModel's training.json.
    version = tmp_path / "chars" / "3"
    version.mkdir(parents=True)
    (version / "training.json").write_text(json.dumps({"data": {"valid_fraction": 0.1, "valid_start": "^SLY:$"}}))
    assert quality.recorded_valid_start(version) == "^SLY:$"
    assert quality.recorded_valid_start(tmp_path / "chars") is None, "no record: no region"
    assert quality.recorded_valid_start(None) is None
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [f"line {number}" for number in range(100)]
    lines[95] = "SLY:"
    (corpus / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cut, _ = quality.load_dev_tokens(corpus, "char", 0.1)
    from_sly, _ = quality.load_dev_tokens(corpus, "char", 0.1, quality.recorded_valid_start(version))
    assert "".join(from_sly).startswith("SLY:\nline 96\n")
    assert "".join(cut).endswith("".join(from_sly)) and len(cut) > len(from_sly)
