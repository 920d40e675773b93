"""Tiny corpora in the real formats, written by the tests themselves.

They are small enough to train on in seconds and regular enough that a model
that learns anything scores well: sentiment is decided by one word, every word
has one tag, and the text repeats a short pattern.
"""

from pathlib import Path

import numpy as np

NOUNS = ["dog", "cat", "film", "plot", "actor", "story"]
VERBS = ["runs", "sleeps", "works", "falls"]
DETERMINERS = ["the", "a"]


def _sentences(rng, count):
    return [[rng.choice(DETERMINERS), rng.choice(NOUNS), rng.choice(VERBS)] for _ in range(count)]


def write_sst(directory, train_size=64, dev_size=32, seed=0) -> Path:
    """stsa.binary.train / .dev where 'good' means 1 and 'bad' means 0."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, size in (("stsa.binary.train", train_size), ("stsa.binary.dev", dev_size)):
        lines = []
        for words in _sentences(rng, size):
            label = int(rng.integers(2))
            words.insert(int(rng.integers(4)), "good" if label else "bad")
            lines.append(f"{label} {' '.join(words)}")
        (directory / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def write_spelled_sst(directory, train_size=160, dev_size=40, seed=3) -> Path:
    """stsa.binary.train / .dev where the sentiment word's ending decides the label.

    Positive words end in "zz", negative ones in "qq", and every dev sentiment
    word is a stem no train sentence has: a word-only classifier sees `<unk>`
    there and can only guess, a character-aware one can read the ending.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    letters = list("bcdfghjklmnprstvw")
    stems = sorted({"".join(rng.choice(letters, 3)) for _ in range(400)})
    rng.shuffle(stems)
    stems_of = {"train": stems[:60], "dev": stems[60:100]}
    for name, split, size in (("stsa.binary.train", "train", train_size),
                              ("stsa.binary.dev", "dev", dev_size)):
        lines = []
        for words in _sentences(rng, size):
            label = int(rng.integers(2))
            word = str(rng.choice(stems_of[split])) + ("zz" if label else "qq")
            words.insert(int(rng.integers(4)), word)
            lines.append(f"{label} {' '.join(words)}")
        (directory / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def write_conllu(directory, train_size=64, dev_size=24, seed=1) -> Path:
    """en_ewt-ud-{train,dev}.conllu with DET NOUN VERB sentences."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tags = {**{w: "DET" for w in DETERMINERS}, **{w: "NOUN" for w in NOUNS}, **{w: "VERB" for w in VERBS}}
    for split, size in (("train", train_size), ("dev", dev_size)):
        blocks = []
        for index, words in enumerate(_sentences(rng, size)):
            lines = [f"# sent_id = {split}-{index}", f"# text = {' '.join(words)}"]
            for position, word in enumerate(words, start=1):
                lines.append(f"{position}\t{word}\t{word}\t{tags[word]}\t_\t_\t0\tdep\t_\t_")
            blocks.append("\n".join(lines))
        (directory / f"en_ewt-ud-{split}.conllu").write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return directory


def write_text(directory, train_name, valid_name, level="word", lines=120, seed=2) -> Path:
    """A repetitive plain-text corpus for word or character language models."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    text = "\n".join(" ".join(words) for words in _sentences(rng, lines)) + "\n"
    if valid_name is None:
        (directory / train_name).write_text(text, encoding="utf-8")
    else:
        cut = text.index("\n", len(text) * 4 // 5) + 1
        (directory / train_name).write_text(text[:cut], encoding="utf-8")
        (directory / valid_name).write_text(text[cut:], encoding="utf-8")
    return directory
