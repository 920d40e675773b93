"""Loading the zoo's corpora and batching them for training.

`load_split` reads one split of a corpus, from a local file or directory or
from tensorflow-datasets, into a task's record (`ClassificationData`,
`TaggingData`, `LanguageModelData`); `classification_dataset` and
`tagging_dataset` turn records into padded tf.data batches. Language-model
batching is in `training.lm_batching`.

Example:

    data = load_split("classifier", "/work/shared/data/sst2", "train")
    vocab = Vocabulary.build(data.sentences)
    batches = classification_dataset(data, vocab, batch_size=32, shuffle=True)
"""

from training.datasets.loading import SPLIT_ALIASES, load_split
from training.datasets.pipelines import classification_dataset, tagging_dataset
from training.datasets.records import (
    LEVELS,
    TASKS,
    ClassificationData,
    LanguageModelData,
    TaggingData,
)
from training.datasets.text import EOS_TOKEN

__all__ = [
    "EOS_TOKEN",
    "LEVELS",
    "SPLIT_ALIASES",
    "TASKS",
    "ClassificationData",
    "LanguageModelData",
    "TaggingData",
    "classification_dataset",
    "load_split",
    "tagging_dataset",
]
