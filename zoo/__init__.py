"""The model zoo: recurrent backbones and task heads in Keras 3.

    import zoo
    model = zoo.build("classifier", cell="gru", vocabulary_size=20_000, pooling="max")
    model = zoo.build_preset("ptb_small", vocabulary_size=10_001)
    zoo.list_presets()
"""

from __future__ import annotations

import inspect

from zoo.backbone import RecurrentBackbone
from zoo.characters import CharacterEncoder
from zoo.ensemble import Ensemble
from zoo.cells import GatedLSTMCell
from zoo.models import LanguageModel, SentenceClassifier, SequenceTagger
from zoo.names import CELL_TYPES, GATES, POOLINGS, TASKS
from zoo.presets import PRESETS, get_preset, list_presets

TASK_MODELS = dict(zip(TASKS, (LanguageModel, SentenceClassifier, SequenceTagger)))


def model_class(task: str):
    """The model class of `task`; ValueError listing the valid tasks if unknown."""
    if task not in TASK_MODELS:
        raise ValueError(f"Unknown task {task!r}. Valid tasks: {', '.join(TASKS)}.")
    return TASK_MODELS[task]


def _constructors(task: str) -> list:
    """The `__init__`s whose arguments a model of `task` takes: its class's own, those of
    the zoo classes it inherits from (the character options), and the backbone's."""
    classes = [cls for cls in model_class(task).__mro__
               if cls.__module__.startswith("zoo.") and "__init__" in vars(cls)]
    return [RecurrentBackbone.__init__] + [cls.__init__ for cls in reversed(classes)]


def valid_options(task: str) -> list[str]:
    """Constructor options a model of `task` accepts."""
    names = set()
    for function in _constructors(task):
        names |= set(inspect.signature(function).parameters)
    # extra_feature_dim is set by a head from its own options, never by a user.
    names -= {"self", "kwargs", "cell", "extra_feature_dim"}
    if task == "language_model":
        names.discard("bidirectional")
    return sorted(names)


def _annotations(task: str) -> dict[str, str]:
    """Option name -> its annotation as written ("int", "float | None", ...)."""
    found = {}
    for function in _constructors(task):
        for name, parameter in inspect.signature(function).parameters.items():
            if parameter.annotation is not inspect.Parameter.empty:
                found[name] = str(parameter.annotation)
    return found


def _is_integer(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer())


_KINDS = {
    "int": ("an integer", _is_integer),
    "float": ("a number", lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)),
    "bool": ("true or false", lambda value: isinstance(value, bool)),
}


def check_option_values(task: str, options: dict) -> None:
    """Raises ValueError naming the option when a value has the wrong type (e.g. hidden_dim='abc')."""
    annotations = _annotations(task)
    for name, value in options.items():
        annotation = annotations.get(name, "")
        optional = annotation.endswith("| None")
        kind = annotation.removesuffix("| None").strip()
        if kind not in _KINDS or (optional and value is None):
            continue
        expected, accepts = _KINDS[kind]
        if not accepts(value):
            raise ValueError(f"Model option {name}={value!r}: expected {expected}"
                             + (" or null" if optional else "") + ".")


def build(task: str, cell: str = "lstm", **options):
    """Builds a model of `task` with recurrent cell `cell`.

    Args:
        task: "language_model", "classifier" or "tagger".
        cell: "simple_rnn", "lstm", "gru" or "gated_lstm".
        **options: Model options, e.g. vocabulary_size (required), embedding_dim,
            hidden_dim, num_layers, dropout, bidirectional, pooling, num_classes,
            num_tags, tie_weights, learned_initial_state, gates, peepholes, and
            the character model of a tagger or classifier: char_vocabulary_size,
            char_embedding_dim, char_hidden_dim, max_word_length.

    Raises:
        ValueError: unknown task, cell or option (naming the valid ones), or
            invalid values.
    """
    cls = model_class(task)
    if cell not in CELL_TYPES:
        raise ValueError(f"Unknown cell {cell!r}. Valid cells: {', '.join(CELL_TYPES)}.")
    allowed = valid_options(task)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for task {task!r}. Valid options: {', '.join(allowed)}."
        )
    check_option_values(task, options)
    if "vocabulary_size" not in options:
        raise ValueError("vocabulary_size is required (the size of the data's vocabulary).")
    return cls(cell=cell, **options)


def build_preset(name: str, **overrides):
    """Builds preset `name`'s model; `overrides` replace or add model options."""
    preset = get_preset(name)
    options = {**preset["model"], **overrides}
    cell = options.pop("cell", "lstm")
    return build(preset["task"], cell=cell, **options)


__all__ = [
    "CELL_TYPES", "GATES", "POOLINGS", "PRESETS", "TASKS", "TASK_MODELS",
    "CharacterEncoder", "Ensemble", "GatedLSTMCell", "LanguageModel", "RecurrentBackbone", "SentenceClassifier",
    "SequenceTagger", "build", "build_preset", "get_preset", "list_presets",
    "check_option_values", "model_class", "valid_options",
]
