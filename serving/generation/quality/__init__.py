"""Quality of generated text: decoding methods compared as in Holtzman et al. (2020).

"The Curious Case of Neural Text Degeneration" compares decoding methods by
statistics of the text they produce, next to the same statistics of human
text. This package does that for the zoo's language models:

    rnn-zoo-generation-quality --saved_model saved_models/shakespeare_char_lstm/3 \\
        --data ../shared/data/tinyshakespeare --num_prompts 50 --max_new_tokens 200 \\
        --output benchmarks/results/generation_quality_shakespeare

    metrics.py      the metrics, pure functions on token sequences
    comparison.py   prompts and human continuations from the dev split; every method run on them
    report.py       Markdown, JSON and the plot
    cli.py          rnn-zoo-generation-quality

Units: repetition and perplexity are measured on the model's own tokens
(characters or words). Distinct-n, Self-BLEU and Zipf are measured on words:
the tokens of a word model, or, for a character model, the whitespace-split
words of the text -- character n-grams and character frequencies say little
about lexical diversity.
"""

from serving.generation.quality.comparison import (Reference, build_reference, chunk_starts, compare_decoding,
                                                   decoding_methods, human_logprobs, load_dev_tokens, model_level,
                                                   recorded_valid_start, run_method, words_of)
from serving.generation.quality.metrics import (BLEU_MAX_ORDER, DISTINCT_ORDERS, MetricSettings, bleu,
                                                brevity_penalty, clipped_matches, closest_reference_length,
                                                distinct_n, loop_at_end, ngrams, perplexity, repetition_rate,
                                                self_bleu, text_metrics, zipf_coefficient)
from serving.generation.quality.report import markdown_report, markdown_table, plot_report, write_report

__all__ = [
    "BLEU_MAX_ORDER", "DISTINCT_ORDERS", "MetricSettings", "Reference", "bleu", "brevity_penalty",
    "build_reference", "chunk_starts", "clipped_matches", "closest_reference_length", "compare_decoding",
    "decoding_methods", "distinct_n", "human_logprobs", "load_dev_tokens", "loop_at_end", "markdown_report",
    "markdown_table", "model_level", "ngrams", "perplexity", "plot_report", "recorded_valid_start", "repetition_rate",
    "run_method",
    "self_bleu", "text_metrics", "words_of", "write_report", "zipf_coefficient",
]
