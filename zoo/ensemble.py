"""Several classifiers or taggers trained on the same data, answering as one model.

    members' logits -> log_softmax each -> log of the mean probability
    (logsumexp over members - log n)

The output is a log-probability, so it is also a valid logit: softmax of it is
exactly the members' mean probability, and the exported signatures (which apply
a softmax to whatever the model returns) serve the ensemble unchanged.
Averaging probabilities rather than logits keeps a member that is sure from
outvoting the rest by the size of its logits alone.

The members must read the same inputs: the same word vocabulary, the same
labels, and (for taggers that spell words) the same characters. A tagger
ensemble may mix members with and without a character model; each member
gets the inputs it takes, and the longest max_word_length is spelled (a
character encoder cuts words to its own length).
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import ops

from zoo.models import LanguageModel, SentenceClassifier, SequenceTagger

_TASKS = {SentenceClassifier: "classifier", SequenceTagger: "tagger"}


@keras.saving.register_keras_serializable(package="zoo")
class Ensemble(keras.Model):
    """The mean probability of several SentenceClassifiers or SequenceTaggers.

    Args:
        members: Two or more built or unbuilt models of one class, sized alike
            (vocabulary, classes or tags, characters).

    Example:

        ensemble = Ensemble([tagger_a, tagger_b, tagger_c])
        log_probs = ensemble({"token_ids": ids, "char_ids": chars})  # (B, T, tags)
    """

    def __init__(self, members: Sequence[keras.Model], **kwargs):
        super().__init__(**kwargs)
        members = [keras.saving.deserialize_keras_object(m) if isinstance(m, dict) else m
                   for m in members]
        _check_members(members)
        self.members = members
        self.task = _TASKS[type(members[0])]

    # === What the exporter and the evaluation read ===

    @property
    def vocabulary_size(self) -> int:
        return self.members[0].backbone.vocabulary_size

    @property
    def num_classes(self) -> int:
        return self.members[0].num_classes

    @property
    def num_tags(self) -> int:
        return self.members[0].num_tags

    @property
    def uses_characters(self) -> bool:
        return any(getattr(member, "uses_characters", False) for member in self.members)

    @property
    def char_vocabulary_size(self) -> int:
        return max(getattr(member, "char_vocabulary_size", 0) for member in self.members)

    @property
    def max_word_length(self) -> int:
        return max(member.max_word_length for member in self.members
                   if getattr(member, "uses_characters", False))

    def build(self, inputs_shape=None):
        for member in self.members:
            if not member.built:
                member.build((None, None) if self.task == "classifier" else None)
        self.built = True

    def call(self, inputs, training=None):
        """Log of the members' mean probability: (batch, classes) or (batch, time, tags)."""
        log_probabilities = [
            ops.log_softmax(ops.cast(member(self._inputs_of(member, inputs), training=training),
                                     "float32"), axis=-1)
            for member in self.members
        ]
        stacked = ops.stack(log_probabilities, axis=0)  # (members, batch, ..., classes)
        return ops.logsumexp(stacked, axis=0) - math.log(len(self.members))

    def _inputs_of(self, member, inputs):
        """What `member` takes: a word-only tagger gets the token ids of a dict input."""
        if isinstance(inputs, dict) and not getattr(member, "uses_characters", False):
            return inputs["token_ids"]
        return inputs

    def get_config(self):
        config = super().get_config()
        config["members"] = [keras.saving.serialize_keras_object(m) for m in self.members]
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _check_members(members) -> None:
    """ValueError unless the members can be averaged: one class, sized alike."""
    if len(members) < 2:
        raise ValueError(f"An ensemble needs at least two members, got {len(members)}.")
    kinds = {type(member) for member in members}
    if any(kind is LanguageModel for kind in kinds):
        raise ValueError("Language models cannot be ensembled: their signatures carry each "
                         "model's recurrent state. Ensemble classifiers or taggers.")
    if len(kinds) != 1 or next(iter(kinds)) not in _TASKS:
        names = sorted(kind.__name__ for kind in kinds)
        raise ValueError("The members must all be SentenceClassifiers or all SequenceTaggers, "
                         f"got {', '.join(names)}.")
    sizes = {}
    for member in members:
        sizes.setdefault("vocabulary_size", set()).add(member.backbone.vocabulary_size)
        if isinstance(member, SentenceClassifier):
            sizes.setdefault("num_classes", set()).add(member.num_classes)
        else:
            sizes.setdefault("num_tags", set()).add(member.num_tags)
            if member.uses_characters:
                sizes.setdefault("char_vocabulary_size", set()).add(member.char_vocabulary_size)
    for name, values in sizes.items():
        if len(values) > 1:
            raise ValueError(f"The members disagree on {name} ({', '.join(map(str, sorted(values)))}): "
                             "ensemble only models trained on the same data.")
