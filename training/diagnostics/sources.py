"""Where a diagnosed model and its batch come from: a preset (fresh weights, random tokens) or a trained run.

A trained run's batch is cut from its own dev split: windows of the token
stream for a language model (with the real next tokens as targets), and for a
classifier or tagger windows of its dev sentences joined end to end, which
keeps every row free of padding whatever the window length (the targets are
then random, see `gradient_flow`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import zoo
from training.errors import DataError
from training.diagnostics.variants import parse_variant


@dataclass
class DiagnosisInput:
    """A model and the batch to measure it on."""

    name: str
    model: object
    token_ids: np.ndarray          # (rows, time)
    targets: np.ndarray | None     # (rows, time) or None for random targets
    char_ids: np.ndarray | None    # (rows, time, chars) for a character tagger
    source: str                    # "preset ptb_small (fresh)", "run runs/x"


def from_preset(preset: str, *, variant: str | None = None, options: dict | None = None,
                vocabulary_size: int = 1000, rows: int = 16, length: int = 104,
                seed: int = 0) -> DiagnosisInput:
    """A fresh model of `preset` (cell replaced by `variant` if given) and random unpadded tokens."""
    overrides = dict(options or {})
    name = preset
    if variant:
        cell, variant_options = parse_variant(variant)
        overrides.update({"cell": cell, **variant_options})
        if cell != "gated_lstm":
            # A preset of the gated cell has gates and peepholes that other cells refuse.
            overrides.update({"gates": "all", "peepholes": False})
        name = f"{preset} [{variant}]"
    task = zoo.get_preset(preset)["task"]
    if task in ("tagger", "classifier"):
        # The character model needs a character vocabulary: diagnose the word model.
        overrides["char_vocabulary_size"] = 0
    keras.utils.set_random_seed(seed)
    model = zoo.build_preset(preset, vocabulary_size=vocabulary_size, **overrides)
    model.build((None, None))
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(1, vocabulary_size, size=(rows, length)).astype("int32")
    return DiagnosisInput(name, model, token_ids, None, None, f"preset {preset} (fresh weights)")


def from_run(run_dir, *, rows: int = 16, length: int = 104, seed: int = 0) -> DiagnosisInput:
    """The trained model of `run_dir` and windows of its dev split.

    Raises:
        DataError: the directory is not a finished run, or its dev split is too short.
    """
    from training.datasets import load_split
    from training.run import max_word_length, uses_characters
    from training.vocab import Vocabulary

    run_dir = Path(run_dir)
    for name in ("config.json", "vocabulary.json", "model.keras"):
        if not (run_dir / name).exists():
            raise DataError(f"{run_dir / name}: no such file (is {run_dir} a finished training run?)")
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    data = config["data"]
    dev = load_split(config["task"], data.get("dev_source") or data["source"], "dev",
                     level=data["level"], tag_column=data["tag_column"],
                     valid_fraction=data["valid_fraction"], data_dir=data.get("data_dir"))
    vocabulary = Vocabulary.load(run_dir / "vocabulary.json")
    words = list(dev.tokens) if config["task"] == "language_model" else [
        word for sentence in dev.sentences for word in sentence]
    stream = np.asarray(vocabulary.encode(words), dtype="int32")  # no padding: unknown words are <unk>
    if len(stream) < length + 1:
        raise DataError(f"The dev split of {run_dir} has {len(stream)} tokens; a window needs "
                        f"{length + 1}.")
    starts = np.random.default_rng(seed).integers(0, len(stream) - length, size=rows)
    windows = np.stack([stream[start:start + length + 1] for start in starts])  # (rows, length + 1)
    targets = windows[:, 1:] if config["task"] == "language_model" else None
    char_ids = None
    model = keras.saving.load_model(run_dir / "model.keras")
    if uses_characters(config):
        characters = Vocabulary.load(run_dir / "char_vocabulary.json")
        limit = max_word_length(config)
        # Every word spelled as written, <unk> words too, as the model's own pipeline does.
        tokens = [word for start in starts for word in words[start:start + length]]
        char_ids = np.zeros((rows * length, limit), dtype="int32")
        for index, token in enumerate(tokens):
            encoded = characters.encode(list(token[:limit]))
            char_ids[index, :len(encoded)] = encoded
        char_ids = char_ids.reshape(rows, length, limit)
    # Named by directory: two runs of one preset (another cell, say) stay apart.
    return DiagnosisInput(run_dir.name, model, windows[:, :-1], targets,
                          char_ids, f"run {run_dir}")
