"""The files beside a SavedModel: what the model is (zoo.json), its vocabularies, config, training and model card."""

from __future__ import annotations

import json
from pathlib import Path

from training.vocab import OOV_ID, OOV_TOKEN, PAD_ID, PAD_TOKEN

# Credit lines for corpora whose licence asks to be named wherever a model
# trained on them is published; matched against the run's data source.
_DATA_CREDITS = {
    ("ud_english_ewt", "en_ewt"): (
        "Trained on the Universal Dependencies English Web Treebank (UD_English-EWT), "
        "licensed under CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)."
    ),
}


def write_side_files(directory: Path, *, config, zoo_info, tokens, training_info, metrics,
                     model_name, version, characters=None) -> None:
    """Writes assets.extra/ (zoo.json, the vocabularies), config.json, training.json and MODEL_CARD.md."""
    extra = directory / "assets.extra"
    extra.mkdir(exist_ok=True)
    _write_json(extra / "zoo.json", zoo_info)
    _write_json(extra / "vocabulary.json", {"tokens": tokens})
    if characters is not None:
        _write_json(extra / "char_vocabulary.json", {"tokens": characters})
    _write_json(directory / "config.json", config)
    _write_json(directory / "training.json", {**training_info, "metrics": metrics})
    card = _model_card(model_name=model_name, version=version, config=config,
                       zoo_info=zoo_info, training_info=training_info, metrics=metrics)
    (directory / "MODEL_CARD.md").write_text(card, encoding="utf-8")


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


_CELL_NAMES = {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU",
               "gated_lstm": "gated LSTM"}
_TASK_DESCRIPTIONS = {
    "language_model": "a recurrent language model: it gives the probability of the next "
                      "token given the tokens before it, and generates text one token at a time",
    "classifier": "a recurrent sentence classifier: one label per sentence",
    "tagger": "a recurrent sequence tagger: one tag per whitespace-separated token",
}
_INTENDED_USE = {
    "language_model": "Generating text in the style of the training corpus, scoring how "
                      "likely a text is under it (perplexity), and teaching or benchmarking "
                      "recurrent language models.",
    "classifier": "Labelling short English sentences like those of the training data "
                  "(e.g. movie-review sentiment), and benchmarking recurrent classifiers.",
    "tagger": "Tagging tokenized English sentences like those of the training data (e.g. "
              "universal part-of-speech tags), and benchmarking recurrent taggers.",
}
_LIMITS = {
    "language_model": "It knows only its training corpus: its vocabulary is closed (unseen "
                      "words become `<unk>`), its text can be fluent and false, and it "
                      "repeats the biases of the corpus. Do not treat generated text as fact.",
    "classifier": "Accuracy holds only for text like the training data; other domains, "
                  "sarcasm, negation scope and long documents degrade it. Scores are not "
                  "calibrated probabilities. Do not use it for decisions about people.",
    "tagger": "Accuracy holds only for text like the training data; unseen words are all "
              "`<unk>` to it (no character model), so rare and new words are tagged worst.",
}
_CHARACTER_MODEL_LIMITS = {
    "tagger": "Accuracy holds only for text like the training data; unseen words are `<unk>` to "
              "its word vocabulary, and it tags them from their spelling (a character model) and "
              "context, so rare and new words are still tagged worse than frequent ones.",
    "classifier": "Accuracy holds only for text like the training data; other domains, sarcasm, "
                  "negation scope and long documents degrade it. Words its vocabulary lacks are "
                  "read from their spelling (a character model), which helps with inflections "
                  "and misspellings but not with words whose sentiment is not in their letters. "
                  "Scores are not calibrated probabilities. Do not use it for decisions about people.",
}


def _model_card(*, model_name, version, config, zoo_info, training_info, metrics) -> str:
    task = zoo_info["task"]
    model_options = config.get("model") or {}
    data = training_info.get("data") or config.get("data") or {}
    lines = [f"# {model_name} (version {version})", ""]
    cell = config.get("cell")
    lines += [f"An rnn-zoo model ({_CELL_NAMES.get(cell, cell or 'recurrent')} cells): "
              f"{_TASK_DESCRIPTIONS[task]}.", ""]

    lines += ["## Model", ""]
    lines += [f"- Task: `{task}`"]
    if config.get("preset"):
        lines += [f"- Preset: `{config['preset']}`"]
    lines += [f"- Cell: `{config.get('cell')}`"]
    for key in sorted(model_options):
        lines += [f"- {key}: `{model_options[key]}`"]
    splits = {"word": "whitespace-separated tokens, case kept", "char": "Unicode characters"}
    lines += [f"- Tokenizer: {zoo_info['tokenizer']} level ({splits[zoo_info['tokenizer']]}), "
              f"vocabulary of {zoo_info['vocabulary_size']} entries "
              f"(id {PAD_ID} `{PAD_TOKEN}`, id {OOV_ID} `{OOV_TOKEN}`)"]
    if "char_vocabulary_size" in zoo_info:
        lines += [f"- Character model: each token's first {zoo_info['max_word_length']} "
                  f"characters, from a vocabulary of {zoo_info['char_vocabulary_size']} entries "
                  f"(id {PAD_ID} `{PAD_TOKEN}`, id {OOV_ID} `{OOV_TOKEN}`), spelled inside the graph"]
    if "state_size" in zoo_info:
        lines += [f"- Recurrent state: {zoo_info['state_size']} floats per sequence"]
        if zoo_info.get("end_token"):
            lines += [f"- Sentence end: the corpus marks it with `{zoo_info['end_token']}`; "
                      "the tokenizer does not add it, so append it to a text to score a "
                      "whole sentence, and stop generating when it comes"]
    if zoo_info.get("labels"):
        lines += [f"- Labels: {', '.join(f'`{name}`' for name in zoo_info['labels'])}"]
    lines += [""]

    lines += ["## Data", ""]
    lines += [f"- Source: `{data.get('source', 'not recorded')}`"]
    if data.get("dev_source"):
        lines += [f"- Dev source: `{data['dev_source']}`"]
    elif data.get("valid_start"):
        lines += [f"- Dev: the text from the first line matching `{data['valid_start']}` after the last "
                  f"{data.get('valid_fraction', 0.1):.0%} mark of the source; train is the text before it"]
    size_info = (metrics or {}).get("data") or {}
    for key in ("train_size", "dev_size"):
        if key in size_info:
            lines += [f"- {key.replace('_', ' ').capitalize()}: {size_info[key]}"]
    lines += [""]

    lines += ["## Training", ""]
    training = training_info.get("training") or config.get("training") or {}
    for key in sorted(training):
        lines += [f"- {key}: `{training[key]}`"]
    command = training_info.get("command") or config.get("command")
    if command:
        lines += ["", "Command:", "", f"    {command}"]
    members = training_info.get("members") or []
    if members:
        lines += ["", f"An ensemble of {len(members)} models trained on the same data; it "
                  "answers with the mean of their probabilities. The members:", ""]
        for member in members:
            lines += [f"- seed {member.get('seed')}: `{member.get('command') or member.get('run')}`"]
    if not training and not command:
        lines += ["Not recorded."]
    lines += [""]

    lines += ["## Dev metrics", ""]
    dev = (metrics or {}).get("dev") or {}
    shown = {key: value for key, value in dev.items() if not isinstance(value, (dict, list))}
    if shown:
        lines += [f"- {key}: {_format_number(value)}" for key, value in sorted(shown.items())]
    else:
        lines += ["Not recorded."]
    lines += [""]

    lines += ["## Intended use", "", _INTENDED_USE[task], ""]
    limits = _CHARACTER_MODEL_LIMITS[task] if "char_vocabulary_size" in zoo_info else _LIMITS[task]
    lines += ["## Limits", "", limits, ""]

    credit = credit_line(training_info, data)
    if credit:
        lines += ["## Data licence", "", credit, ""]

    lines += ["## Serving", ""]
    lines += ["A TensorFlow SavedModel for TensorFlow Serving or the rnn-zoo server; it runs "
              "with TensorFlow alone. Signatures (see docs/serving_contract.md): "
              + ", ".join(f"`{name}`" for name in zoo_info["signatures"]) + ".", ""]
    return "\n".join(lines)


def _format_number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def credit_line(training_info: dict, data: dict) -> str | None:
    """The data's licence credit: given in training_info, or known for its source."""
    for source in (training_info, data):
        for key in ("license", "licence", "credit"):
            if source.get(key):
                return str(source[key])
    names = " ".join(str(data.get(key) or "") for key in ("source", "dev_source")).lower()
    for patterns, credit in _DATA_CREDITS.items():
        if any(pattern in names for pattern in patterns):
            return credit
    return None
