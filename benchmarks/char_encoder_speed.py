"""Character encoder speed: the RNN on real words only (packed) against every padded slot.

The tagger's character encoder spells each word with a bidirectional RNN. A
batch of sentences is a (batch, time) grid, and most of its slots are padding
(in UD EWT batches of 32 sentences, about two thirds). `CharacterEncoder`
gathers the real words, runs the RNN on them and scatters the result back
(`pack_words=True`, the default); `pack_words=False` runs every slot. This
times a training step of each (forward and backward through the encoder) on
the same real batches, side by side and in turns, checks that both give the
same features, and reports the ratio:

    python benchmarks/char_encoder_speed.py --data ../shared/data/ud_english_ewt

Outputs (under --output_dir, default benchmarks/results/):
char_encoder_speed.json, char_encoder_speed.md and char_encoder_speed.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from plotting import bar_chart


def real_batches(data: str, batch_size: int, count: int, max_word_length: int):
    """The first `count` shuffled training batches of character ids, as the trainer makes them."""
    from training.datasets.loading import load_split
    from training.datasets.pipelines import tagging_dataset
    from training.vocab import LabelVocabulary, Vocabulary

    train = load_split("tagger", data, "train")
    words = Vocabulary.build(train.sentences)
    characters = Vocabulary.build(list(word) for sentence in train.sentences for word in sentence)
    dataset = tagging_dataset(train, words, LabelVocabulary.build(train.tags), batch_size, shuffle=True,
                              characters=characters, max_word_length=max_word_length)
    batches = [inputs["char_ids"].numpy().astype("int32") for inputs, _, _ in dataset.take(count)]
    return batches, len(characters)


def training_step(encoder, tf):
    """A compiled forward and backward pass through the encoder, as `fit` would run it."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.int32)])
    def step(char_ids):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(encoder(char_ids, training=True)))
        return loss, tape.gradient(loss, encoder.trainable_weights)

    return step


def step_seconds(step, char_ids) -> float:
    """Wall time of one step, its result fetched."""
    start = time.perf_counter()
    loss, _ = step(char_ids)
    loss.numpy()
    return time.perf_counter() - start


def write_report(results: dict, output_dir: Path) -> None:
    """JSON, a Markdown table and a bar chart of milliseconds per batch."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "char_encoder_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    setup, runs = results["setup"], results["runs"]
    lines = [f"Character encoder ({setup['cell']}, {setup['embedding_dim']}-dim characters, {setup['hidden_dim']} "
             f"units each way), {setup['batches']} UD EWT training batches of {setup['batch_size']} sentences, "
             f"the median batch, each averaged over {setup['rounds']} rounds. Real words fill {setup['real_word_fraction']:.0%} of the "
             f"(batch, time) slots. Largest difference between the two outputs: "
             f"{results['max_abs_difference']:.1e}.",
             "",
             "| encoder | ms per batch (forward + backward) | speed-up |",
             "|---|---|---|"]
    base = runs["every slot (pack_words=False)"]["median_ms"]
    for name, row in runs.items():
        lines.append(f"| {name} | {row['median_ms']:.1f} | {base / row['median_ms']:.2f}x |")
    (output_dir / "char_encoder_speed.md").write_text("\n".join(lines) + "\n")

    names = list(runs)
    bar_chart(output_dir / "char_encoder_speed.png", names, [runs[name]["median_ms"] for name in names],
              xlabel="ms per batch, forward + backward", title="character encoder: packed real words vs every slot",
              figsize=(6.5, 2.4))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="UD English EWT (directory or tfds name)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output_dir", default="benchmarks/results")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from zoo.characters import MAX_WORD_LENGTH, CharacterEncoder

    batches, vocabulary_size = real_batches(args.data, args.batch_size, args.batches, MAX_WORD_LENGTH)
    options = dict(cell="lstm", embedding_dim=32, hidden_dim=64)  # as in the ewt_char_bilstm preset
    encoders = {"packed real words (pack_words=True)": CharacterEncoder(vocabulary_size, **options),
                "every slot (pack_words=False)": CharacterEncoder(vocabulary_size, pack_words=False, **options)}
    for encoder in encoders.values():
        encoder.build((None, None, None))
    first, second = encoders.values()
    second.set_weights(first.get_weights())
    difference = max(float(np.max(np.abs(np.asarray(first(batch)) - np.asarray(second(batch)))))
                     for batch in batches)
    steps = {name: training_step(encoder, tf) for name, encoder in encoders.items()}
    for step in steps.values():  # warm-up: traces the step
        step_seconds(step, batches[0])
    seconds = {name: [] for name in encoders}
    for _ in tqdm(range(args.rounds), desc="rounds"):
        for batch in batches:
            for name, step in steps.items():
                seconds[name].append(step_seconds(step, batch))
    per_batch = {name: [sum(values[i::len(batches)]) / args.rounds for i in range(len(batches))]
                 for name, values in seconds.items()}
    real = sum(int(np.any(batch != 0, axis=2).sum()) for batch in batches)
    slots = sum(batch.shape[0] * batch.shape[1] for batch in batches)
    results = {
        "setup": {"data": args.data, "batch_size": args.batch_size, "batches": args.batches,
                  "rounds": args.rounds, "real_word_fraction": real / slots, **options},
        "max_abs_difference": difference,
        "runs": {name: {"median_ms": 1000 * statistics.median(values), "per_batch_ms": [1000 * v for v in values]}
                 for name, values in per_batch.items()},
    }
    write_report(results, Path(args.output_dir))
    print((Path(args.output_dir) / "char_encoder_speed.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
