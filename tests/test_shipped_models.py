"""The models shipped in saved_models/: their signatures, and their recorded dev figures.

Each version directory records the dev metrics of the run it was exported from
(`training.json`). Where the corpora are on this machine (../shared/data),
these tests recompute those figures from the SavedModel alone, through its
serving signatures, so a shipped model is known to be the model its card
describes. Elsewhere (a fresh clone without ../shared) those tests skip and the
signature checks still run.
"""

import json
from pathlib import Path

import numpy as np
import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
SAVED_MODELS = REPOSITORY_ROOT / "saved_models"
SHARED_DATA = REPOSITORY_ROOT.parent / "shared" / "data"
needs_corpora = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the corpora (../shared/data) are not here")

SIGNATURES = {
    "classifier": {"serving_default", "classify"},
    "tagger": {"serving_default", "tag_tokens"},
    "language_model": {"serving_default", "tokenize", "detokenize", "initial_state", "step", "score"},
}
SHIPPED = {
    "sst2_bilstm": "classifier",
    "ewt_upos_bilstm": "tagger",
    "ptb_word_lstm": "language_model",
    "shakespeare_char_lstm": "language_model",
}


def latest_version(name: str) -> Path:
    versions = [path for path in (SAVED_MODELS / name).iterdir() if path.name.isdigit()]
    return max(versions, key=lambda path: int(path.name))


def recorded_dev_metrics(name: str) -> dict:
    return json.loads((latest_version(name) / "training.json").read_text())["metrics"]["dev"]


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def loaded(tf):
    cache = {}

    def load(name):
        if name not in cache:
            cache[name] = tf.saved_model.load(str(latest_version(name)))
        return cache[name]

    return load


def test_saved_models_holds_exactly_the_shipped_models():
    assert sorted(path.name for path in SAVED_MODELS.iterdir() if path.is_dir()) == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_model_has_its_signatures_and_card(name, loaded):
    task = SHIPPED[name]
    version = latest_version(name)
    assert SIGNATURES[task] <= set(loaded(name).signatures), "the contract's signatures (docs/serving_contract.md)"
    assert (version / "MODEL_CARD.md").read_text().strip()
    config = json.loads((version / "config.json").read_text())
    assert config["task"] == task
    assert recorded_dev_metrics(name), "the dev figures travel with the model"


@needs_corpora
def test_sst2_dev_accuracy_is_the_recorded_one(tf, loaded):
    # The dev sentences exactly as the file writes them, bracket escapes and
    # all, as a client would send them: what the signature does to them is part
    # of the model (versions exported since the readers unescape brackets do
    # the same in the graph).
    lines = (SHARED_DATA / "sst2" / "stsa.binary.dev").read_text(encoding="utf-8").splitlines()
    rows = [line.split(maxsplit=1) for line in lines if line.strip()]
    sentences = tf.constant([text for _, text in rows])
    predicted = loaded("sst2_bilstm").signatures["serving_default"](sentences=sentences)["label"].numpy()
    expected = [("negative", "positive")[int(label)] for label, _ in rows]
    accuracy = np.mean([label.decode() == truth for label, truth in zip(predicted, expected)])
    assert accuracy == pytest.approx(recorded_dev_metrics("sst2_bilstm")["accuracy"], abs=1.5 / len(expected))


@needs_corpora
def test_ewt_dev_accuracy_is_the_recorded_one(tf, loaded):
    from training.datasets.loading import load_split

    data = load_split("tagger", SHARED_DATA / "ud_english_ewt", "dev")
    width = max(len(tokens) for tokens in data.sentences)
    padded = [tokens + [""] * (width - len(tokens)) for tokens in data.sentences]
    outputs = loaded("ewt_upos_bilstm").signatures["tag_tokens"](tokens=tf.constant(padded))
    tags, lengths = outputs["tags"].numpy(), outputs["lengths"].numpy()
    correct = total = 0
    for row, truth in enumerate(data.tags):
        assert lengths[row] == len(truth)
        correct += sum(tag.decode() == gold for tag, gold in zip(tags[row], truth))
        total += len(truth)
    recorded = recorded_dev_metrics("ewt_upos_bilstm")
    assert total == recorded["tokens"]
    assert correct / total == pytest.approx(recorded["accuracy"], abs=1.5 / total)


def carried_state_cross_entropy(tf, model, token_ids: list[int], streams: int) -> float:
    """Mean next-token cross-entropy with `streams` contiguous streams and the state carried.

    The protocol of training's evaluation, one token at a time through the
    `step` signature, so it exercises what generation clients use.
    """
    length = (len(token_ids) - 1) // streams
    grid = np.array(token_ids[:streams * length + 1])
    inputs = np.stack([grid[row * length:(row + 1) * length] for row in range(streams)])
    targets = np.stack([grid[row * length + 1:(row + 1) * length + 1] for row in range(streams)])
    state = model.signatures["initial_state"](batch_size=tf.constant(streams, tf.int32))["state"]
    total = 0.0
    for position in range(length):
        outputs = model.signatures["step"](token_ids=tf.constant(inputs[:, position:position + 1]), state=state)
        state = outputs["state"]
        logits = outputs["logits"].numpy().astype(np.float64)
        log_normalizer = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        total += float(np.sum(log_normalizer - logits[np.arange(streams), targets[:, position]]))
    return total / (streams * length)


@needs_corpora
@pytest.mark.parametrize("name, corpus, level, streams", [
    ("ptb_word_lstm", "ptb", "word", 20),
    ("shakespeare_char_lstm", "tinyshakespeare", "char", 64),
])
def test_language_model_dev_cross_entropy_is_the_recorded_one(name, corpus, level, streams, tf, loaded):
    from training.datasets.loading import load_split

    model = loaded(name)
    # The dev region the model was trained and scored with (a character model's
    # text has no dev file: its training config says where dev starts).
    recorded_data = json.loads((latest_version(name) / "training.json").read_text())["data"]
    data = load_split("language_model", SHARED_DATA / corpus, "dev", level=level,
                      valid_fraction=recorded_data.get("valid_fraction", 0.1),
                      valid_start=recorded_data.get("valid_start"))
    # The model's own tokenizer, on the dev text: a line at a time for words (each line then
    # ends with <eos>, as training reads it), the whole text at once for characters.
    if level == "word":
        lines, line = [], []
        for token in data.tokens:
            if token == "<eos>":
                lines.append(" ".join(line))
                line = []
            else:
                line.append(token)
        eos = [int(model.signatures["tokenize"](text=tf.constant(["<eos>"]))["token_ids"].numpy()[0, 0])]
    else:
        lines, eos = ["".join(data.tokens)], []
    tokenized = model.signatures["tokenize"](text=tf.constant(lines))
    ids, lengths = tokenized["token_ids"].numpy(), tokenized["lengths"].numpy()
    token_ids = [int(token) for row, length in zip(ids, lengths) for token in list(row[:length]) + eos]
    assert len(token_ids) == len(data.tokens)
    cross_entropy = carried_state_cross_entropy(tf, model, token_ids, streams)
    # Training evaluated whole windows only, so the last partial window differs a little.
    assert cross_entropy == pytest.approx(recorded_dev_metrics(name)["cross_entropy"], abs=0.02)
