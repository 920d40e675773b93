"""Start a classifier or tagger from language models trained on unlabelled text.

Dai & Le (2015, "Semi-supervised sequence learning") train a recurrent
language model on text without labels, then start the classifier's recurrent
network from its weights: the word vectors and the recurrent layers have
already learned what words mean and how they combine, and the labelled data
only has to teach the task. `rnn-zoo-train --init_from LM_RUN [BACKWARD_RUN]`
does that for the zoo's word-level classifiers and taggers:

- the word vectors: every token that both vocabularies hold (matched by
  string, so the two runs may have built their vocabularies from different
  text) takes the language model's row; the rest keep their random start;
- the recurrent layers, bottom up: layer k of the language model starts the
  forward direction of layer k. A bidirectional model's backward direction
  starts from the second run, a language model trained right to left
  (`rnn-zoo-train ... --reverse`, Peters et al. 2018 train such a pair);
  without one it keeps its random start. A first layer that reads more than
  the word vector (a tagger's character features follow it) takes the
  language model's kernel rows for the word vector only. A layer whose input
  is not what the language model's layer read (above a bidirectional layer,
  which reads both directions) is left as it is, and so is everything above.
- the output layer (the classifier's or tagger's dense layer) is always new.
  `--init_layers N` copies only the N lowest recurrent layers (0: the word
  vectors alone).

Cell type, embedding and hidden sizes must match; anything else that cannot be
copied is an error with a message, never a silent partial start. What was
copied goes into the run's `metrics.json` under `init_from`.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from training.vocab import Vocabulary


def check_sources(paths) -> list[Path]:
    """The language-model runs `init_from` names, checked before any training starts.

    Raises:
        ValueError: more than two runs, a run that is missing or unfinished,
            not a word-level language model, or read in the wrong direction.
    """
    paths = [Path(path) for path in paths]
    if not 1 <= len(paths) <= 2:
        raise ValueError(f"--init_from takes one or two language-model runs (left to right, then "
                         f"optionally right to left), got {len(paths)}.")
    for index, path in enumerate(paths):
        config = _finished_run_config(path)
        if config["task"] != "language_model":
            raise ValueError(f"--init_from {path}: that run is a {config['task']}, not a language model.")
        if config["data"].get("level", "word") != "word":
            raise ValueError(f"--init_from {path}: that language model reads characters; "
                             "classifiers and taggers read words.")
        reversed_text = bool(config["data"].get("reverse"))
        if reversed_text != (index == 1):
            wanted = "right to left (trained with --reverse)" if index else "left to right"
            raise ValueError(f"--init_from {path}: run {index + 1} must read text {wanted}; "
                             f"that one reads it {'right to left' if reversed_text else 'left to right'}.")
    return paths


def initialize_from(model, vocabulary: Vocabulary, paths, *, layers: int | None = None) -> dict:
    """Copies the language models' word vectors and recurrent weights into `model`.

    Args:
        model: A built `zoo.SentenceClassifier` or `zoo.SequenceTagger`.
        vocabulary: The model's word vocabulary.
        paths: One or two language-model run directories (`check_sources`).
        layers: Copy at most this many recurrent layers, bottom up (0: the
            word vectors only); None: every layer that fits.

    Returns:
        A report: per source run, the word vectors copied and the layers
        (with direction) started from it.

    Raises:
        ValueError: the cells, embedding or hidden sizes differ.
    """
    import zoo  # noqa: F401  (registers the zoo's classes for loading)

    backbone = model.backbone
    report = {"runs": [], "words": len(vocabulary)}
    for direction, path in zip(("forward", "backward"), check_sources(paths)):
        config = _finished_run_config(path)
        source = keras.saving.load_model(path / "model.keras", compile=False).backbone
        if source.cell != backbone.cell:
            raise ValueError(f"--init_from {path}: its cell is {source.cell}, this model's "
                             f"{backbone.cell}.")
        for name in ("embedding_dim", "hidden_dim"):
            if getattr(source, name) != getattr(backbone, name):
                raise ValueError(f"--init_from {path}: its {name} is {getattr(source, name)}, this "
                                 f"model's {getattr(backbone, name)}; give --set {name}="
                                 f"{getattr(source, name)} or train a language model of this size.")
        if direction == "backward" and not backbone.bidirectional:
            raise ValueError(f"--init_from {path}: a right-to-left language model starts the "
                             "backward direction, and this model is not bidirectional.")
        entry = {"run": str(path), "direction": direction, "command": config.get("command")}
        if direction == "forward":
            entry["words_copied"] = _copy_embeddings(
                backbone.embedding, source.embedding, vocabulary,
                Vocabulary.load(path / "vocabulary.json"))
        entry["layers"] = _copy_layers(backbone, source, direction, layers)
        report["runs"].append(entry)
    return report


def _finished_run_config(path: Path) -> dict:
    if not (path / "config.json").exists():
        raise ValueError(f"--init_from {path}: no run there (no config.json).")
    if not (path / "model.keras").exists() or not (path / "vocabulary.json").exists():
        raise ValueError(f"--init_from {path}: that run has not finished (no model.keras yet).")
    return json.loads((path / "config.json").read_text(encoding="utf-8"))


def _copy_embeddings(target, source, vocabulary: Vocabulary, source_vocabulary: Vocabulary) -> int:
    """Copies the rows of the words both vocabularies hold; returns how many (padding not counted)."""
    weights = target.get_weights()[0]
    source_rows = source.get_weights()[0]
    index = {token: i for i, token in enumerate(source_vocabulary.tokens)}
    copied = 0
    for i, token in enumerate(vocabulary.tokens):
        j = index.get(token)
        if i > 0 and j is not None and j > 0:  # id 0 is padding on both sides
            weights[i] = source_rows[j]
            copied += 1
    target.set_weights([weights])
    return copied


def _copy_layers(backbone, source, direction: str, limit: int | None) -> list[int]:
    """Copies source layer k into this backbone's layer k, one direction; returns the layers copied."""
    copied = []
    pairs = list(zip(backbone.recurrent_layers, source.recurrent_layers))
    for k, (layer, source_layer) in enumerate(pairs[:limit]):
        if backbone.bidirectional:
            if k > 0:
                break  # it reads both directions of the layer below; the language model read one
            layer = layer.forward_layer if direction == "forward" else layer.backward_layer
        weights, source_weights = layer.get_weights(), source_layer.get_weights()
        if len(weights) != len(source_weights):
            break
        kernel, source_kernel = weights[0], source_weights[0]
        if k == 0 and kernel.shape[0] > source_kernel.shape[0]:
            # The first layer reads [word vector, extra features]: copy the word vector's rows.
            kernel = kernel.copy()
            kernel[:source_kernel.shape[0]] = source_kernel
            source_weights = [kernel, *source_weights[1:]]
        if [w.shape for w in weights] != [w.shape for w in source_weights]:
            break
        layer.set_weights([np.asarray(w) for w in source_weights])
        copied.append(k)
    return copied
