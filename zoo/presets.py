"""Named configurations: the model and the training settings that go with it.

A preset is plain data. `model` holds constructor arguments of the task's model
class (the vocabulary and label sizes, and a tagger's character vocabulary size,
are filled in from the data at build time); `training` holds what `training/`
needs to reproduce the setup; `data` names the corpus it was made for. Sources
are cited so a reader can check them.
"""

from __future__ import annotations

import copy

_ZAREMBA = "Zaremba, Sutskever & Vinyals 2014, Recurrent Neural Network Regularization"
# Tiny-shakespeare's dev region: from the first line of The Taming of the Shrew
# (3.8% of train.txt) rather than the last 10%, which starts inside Measure for
# Measure, a play whose first acts the training part holds.
_SHAKESPEARE_DATA = {"local": "tinyshakespeare", "tfds": "tiny_shakespeare", "level": "char",
                     "valid_start": "^SLY:$"}
_GATE_STUDY = (
    "LSTM gate ablation on SST-2 (25-dim vectors, 50 hidden, final state, AdaGrad, "
    "10 epochs, batch 10, early stopping on dev), see shared/data/README.md"
)

PRESETS: dict[str, dict] = {
    # === Word language models on Penn Treebank ===
    "ptb_small": {
        "task": "language_model",
        "description": "Zaremba et al. small: 2x200 LSTM, no dropout (test ppl 114.5 in the paper).",
        "reference": _ZAREMBA,
        "model": {"cell": "lstm", "embedding_dim": 200, "hidden_dim": 200, "num_layers": 2,
                  "dropout": 0.0, "init_scale": 0.1},
        "training": {"batch_size": 20, "num_steps": 20, "epochs": 13, "optimizer": "sgd",
                     "learning_rate": 1.0, "lr_decay": 0.5, "decay_start_epoch": 5,
                     "sum_loss_over_time": True, "clip_norm": 5.0,
                     # bfloat16 products where the CPU has them: 1.3x on both CPUs
                     # measured (benchmarks/results/speed_amx, speed_levers)
                     "precision": "auto"},
        "data": {"local": "ptb", "level": "word"},
    },
    "ptb_medium": {
        "task": "language_model",
        "description": "Zaremba et al. medium: 2x650 LSTM, dropout 0.5 (test ppl 82.7 in the paper).",
        "reference": _ZAREMBA,
        "model": {"cell": "lstm", "embedding_dim": 650, "hidden_dim": 650, "num_layers": 2,
                  "dropout": 0.5, "init_scale": 0.05},
        "training": {"batch_size": 20, "num_steps": 35, "epochs": 39, "optimizer": "sgd",
                     "learning_rate": 1.0, "lr_decay": 0.8, "decay_start_epoch": 7,
                     "sum_loss_over_time": True, "clip_norm": 5.0,
                     # bfloat16 products where the CPU has them: 1.5x here
                     # (benchmarks/results/speed_levers/training_speed.md)
                     "precision": "auto"},
        "data": {"local": "ptb", "level": "word"},
    },
    "ptb_medium_tied": {
        "task": "language_model",
        "description": ("Zaremba et al. medium with tied embeddings (Press & Wolf 2017) on a "
                        "16-epoch schedule that fits a CPU session: 2x650 LSTM, dropout 0.5."),
        "reference": _ZAREMBA + "; Press & Wolf 2017, Using the Output Embedding to Improve "
                     "Language Models",
        "model": {"cell": "lstm", "embedding_dim": 650, "hidden_dim": 650, "num_layers": 2,
                  "dropout": 0.5, "init_scale": 0.05, "tie_weights": True},
        "training": {"batch_size": 20, "num_steps": 35, "epochs": 16, "optimizer": "sgd",
                     "learning_rate": 1.0, "lr_decay": 0.7, "decay_start_epoch": 6,
                     "sum_loss_over_time": True, "clip_norm": 5.0, "precision": "auto"},
        "data": {"local": "ptb", "level": "word"},
    },
    "ptb_large": {
        "task": "language_model",
        "description": "Zaremba et al. large: 2x1500 LSTM, dropout 0.65 (test ppl 78.4 in the paper).",
        "reference": _ZAREMBA,
        "model": {"cell": "lstm", "embedding_dim": 1500, "hidden_dim": 1500, "num_layers": 2,
                  "dropout": 0.65, "init_scale": 0.04},
        "training": {"batch_size": 20, "num_steps": 35, "epochs": 55, "optimizer": "sgd",
                     "learning_rate": 1.0, "lr_decay": 1 / 1.15, "decay_start_epoch": 15,
                     "sum_loss_over_time": True, "clip_norm": 10.0, "precision": "auto"},
        "data": {"local": "ptb", "level": "word"},
    },
    "ptb_tiny_tied": {
        "task": "language_model",
        "description": "A fast 1x128 LSTM with tied embeddings, for CPU demos and shipped models.",
        "reference": "Press & Wolf 2017 (weight tying)",
        "model": {"cell": "lstm", "embedding_dim": 128, "hidden_dim": 128, "num_layers": 1,
                  "dropout": 0.2, "tie_weights": True},
        "training": {"batch_size": 32, "num_steps": 35, "epochs": 4, "optimizer": "adam",
                     "learning_rate": 3e-3, "clip_norm": 5.0},
        "data": {"local": "ptb", "level": "word"},
    },
    # === Character language model on tiny-shakespeare ===
    "shakespeare_char": {
        "task": "language_model",
        "description": "Character LSTM, 2x256, in the spirit of Karpathy's char-rnn.",
        "reference": "Karpathy 2015, The Unreasonable Effectiveness of Recurrent Neural Networks",
        "model": {"cell": "lstm", "embedding_dim": 64, "hidden_dim": 256, "num_layers": 2,
                  "dropout": 0.2},
        "training": {"batch_size": 64, "num_steps": 100, "epochs": 10, "optimizer": "adam",
                     "learning_rate": 2e-3, "clip_norm": 5.0},
        "data": _SHAKESPEARE_DATA,
    },
    "shakespeare_char_large": {
        "task": "language_model",
        "description": ("Character LSTM, 2x512, dropout 0.35, Adam with the rate decayed per epoch "
                        "from epoch 8: char-rnn's larger shape, regularised for 1M characters."),
        "reference": "Karpathy 2015, The Unreasonable Effectiveness of Recurrent Neural Networks",
        "model": {"cell": "lstm", "embedding_dim": 64, "hidden_dim": 512, "num_layers": 2,
                  "dropout": 0.35},
        "training": {"batch_size": 64, "num_steps": 100, "epochs": 20, "optimizer": "adam",
                     "learning_rate": 2e-3, "lr_decay": 0.85, "decay_start_epoch": 8,
                     "clip_norm": 5.0, "precision": "auto"},
        "data": _SHAKESPEARE_DATA,
    },
    "shakespeare_char_small": {
        "task": "language_model",
        "description": "A 1x256 character GRU that trains in minutes on a CPU.",
        "reference": "Karpathy 2015 (char-rnn), smaller",
        "model": {"cell": "gru", "embedding_dim": 32, "hidden_dim": 256, "num_layers": 1,
                  "dropout": 0.0},
        "training": {"batch_size": 64, "num_steps": 64, "epochs": 3, "optimizer": "adam",
                     "learning_rate": 3e-3, "clip_norm": 5.0},
        "data": _SHAKESPEARE_DATA,
    },
    # === SST-2 sentence classifiers ===
    "sst_lstm": {
        "task": "classifier",
        "description": "LSTM classifier on the final hidden state.",
        "reference": "Tai, Socher & Manning 2015 (LSTM baseline, 84.9 test with GloVe)",
        "model": {"cell": "lstm", "embedding_dim": 128, "hidden_dim": 128, "num_layers": 1,
                  "dropout": 0.5, "pooling": "last"},
        "training": {"batch_size": 32, "epochs": 8, "optimizer": "adam", "learning_rate": 1e-3,
                     "clip_norm": 5.0, "early_stopping_patience": 2},
        "data": {"local": "sst2", "tfds": "glue/sst2"},
    },
    "sst_bilstm": {
        "task": "classifier",
        "description": "Bidirectional LSTM with max pooling over time.",
        "reference": "Tai et al. 2015 BiLSTM (87.5 test with GloVe)",
        "model": {"cell": "lstm", "embedding_dim": 128, "hidden_dim": 128, "num_layers": 1,
                  "bidirectional": True, "dropout": 0.5, "pooling": "max"},
        "training": {"batch_size": 32, "epochs": 8, "optimizer": "adam", "learning_rate": 1e-3,
                     "clip_norm": 5.0, "early_stopping_patience": 2},
        "data": {"local": "sst2", "tfds": "glue/sst2"},
    },
    "sst_char_bilstm": {
        "task": "classifier",
        "description": ("sst_bilstm plus a character BiLSTM per word, so words the phrases never "
                        "showed keep their spelling."),
        "reference": "Plank, Søgaard & Goldberg 2016 (character-aware words); Tai et al. 2015 BiLSTM",
        "model": {"cell": "lstm", "embedding_dim": 128, "hidden_dim": 128, "num_layers": 1,
                  "bidirectional": True, "dropout": 0.5, "pooling": "max",
                  "char_embedding_dim": 32, "char_hidden_dim": 64, "max_word_length": 24},
        "training": {"batch_size": 32, "epochs": 8, "optimizer": "adam", "learning_rate": 1e-3,
                     "clip_norm": 5.0, "early_stopping_patience": 2},
        "data": {"local": "sst2", "tfds": "glue/sst2"},
    },
    "sst_gru": {
        "task": "classifier",
        "description": "GRU classifier with mean pooling.",
        "reference": "Cho et al. 2014 (GRU)",
        "model": {"cell": "gru", "embedding_dim": 128, "hidden_dim": 128, "num_layers": 1,
                  "dropout": 0.5, "pooling": "mean"},
        "training": {"batch_size": 32, "epochs": 8, "optimizer": "adam", "learning_rate": 1e-3,
                     "clip_norm": 5.0, "early_stopping_patience": 2},
        "data": {"local": "sst2", "tfds": "glue/sst2"},
    },
    "sst_lm": {
        "task": "language_model",
        "description": ("Word LSTM language model on the SST sentences, the size of sst_bilstm's "
                        "encoder, to start it from (rnn-zoo-train --init_from; Dai & Le 2015)."),
        "reference": "Dai & Le 2015, Semi-supervised Sequence Learning",
        "model": {"cell": "lstm", "embedding_dim": 128, "hidden_dim": 128, "num_layers": 1,
                  "dropout": 0.5, "tie_weights": True},
        "training": {"batch_size": 20, "num_steps": 35, "epochs": 10, "optimizer": "adam",
                     "learning_rate": 2e-3, "clip_norm": 5.0},
        "data": {"local": "sst2", "level": "word"},
    },
    # === POS tagging on UD English EWT ===
    "ewt_bilstm": {
        "task": "tagger",
        "description": "Bidirectional LSTM UPOS tagger on words (no character model).",
        "reference": "Plank, Søgaard & Goldberg 2016 (94.6 with random init, UD 1.3)",
        "model": {"cell": "lstm", "embedding_dim": 128, "hidden_dim": 100, "num_layers": 1,
                  "bidirectional": True, "dropout": 0.25},
        "training": {"batch_size": 32, "epochs": 10, "optimizer": "adam", "learning_rate": 2e-3,
                     "clip_norm": 5.0, "early_stopping_patience": 2},
        "data": {"local": "ud_english_ewt", "tfds": "universal_dependencies/en_ewt"},
    },
    "ewt_char_bilstm": {
        "task": "tagger",
        "description": "ewt_bilstm plus a character BiLSTM per word, so unknown words keep "
                       "their spelling.",
        "reference": "Plank, Søgaard & Goldberg 2016 (word + char bi-LSTM, 94.6 UPOS on "
                     "UD 1.3 English)",
        "model": {"cell": "lstm", "embedding_dim": 128, "hidden_dim": 100, "num_layers": 1,
                  "bidirectional": True, "dropout": 0.25, "char_embedding_dim": 32,
                  "char_hidden_dim": 64, "max_word_length": 24},
        "training": {"batch_size": 32, "epochs": 10, "optimizer": "adam", "learning_rate": 2e-3,
                     "clip_norm": 5.0, "early_stopping_patience": 2},
        "data": {"local": "ud_english_ewt", "tfds": "universal_dependencies/en_ewt"},
    },
    "ewt_lm": {
        "task": "language_model",
        "description": ("Word LSTM language model on the EWT train sentences, the size of the "
                        "taggers' word encoder, to start them from (--init_from)."),
        "reference": "Dai & Le 2015, Semi-supervised Sequence Learning",
        "model": {"cell": "lstm", "embedding_dim": 128, "hidden_dim": 100, "num_layers": 1,
                  "dropout": 0.5},
        "training": {"batch_size": 20, "num_steps": 35, "epochs": 10, "optimizer": "adam",
                     "learning_rate": 2e-3, "clip_norm": 5.0},
        "data": {"local": "ud_english_ewt", "level": "word"},
    },
}

# === The eight gate-ablation variants of the zoo's gated LSTM ===
_GATE_VARIANTS = {
    "none": (),
    "output": ("output",),
    "input": ("input",),
    "input_output": ("input", "output"),
    "forget": ("forget",),
    "input_forget": ("input", "forget"),
    "forget_output": ("forget", "output"),
    "all": ("input", "forget", "output"),
}
for _suffix, _gates in _GATE_VARIANTS.items():
    PRESETS[f"sst_gates_{_suffix}"] = {
        "task": "classifier",
        "description": f"Gate ablation: gated LSTM with gates {list(_gates) or 'none'}, peepholes.",
        "reference": _GATE_STUDY,
        "model": {"cell": "gated_lstm", "gates": list(_gates), "peepholes": True,
                  "embedding_dim": 25, "hidden_dim": 50, "num_layers": 1, "pooling": "last"},
        "training": {"batch_size": 10, "epochs": 10, "optimizer": "adagrad",
                     "learning_rate": 0.05, "early_stopping_patience": 10},
        "data": {"local": "sst2", "tfds": "glue/sst2"},
    }


def list_presets(task: str | None = None) -> list[str]:
    """Names of the presets, sorted, optionally only those of one task."""
    return sorted(name for name, preset in PRESETS.items() if task in (None, preset["task"]))


def get_preset(name: str) -> dict:
    """A deep copy of preset `name`; ValueError listing the valid names if unknown."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}. Valid presets: {', '.join(list_presets())}.")
    return copy.deepcopy(PRESETS[name])
