"""Zero against learned initial state on a real task: the early-training loss and the dev figure.

The zoo's `learned_initial_state` option starts every sequence from a
trainable state vector instead of zeros. Both variants here are built from the
same config and seed and see the same batches in the same order; the only
difference is that option. The learned state starts at zero too, so the two
begin identical and part only as the state vector trains.

    config = resolve_config(preset="sst_lstm", data={"source": "../shared/data/sst2"})
    result = compare_initial_states(config, steps=200, seeds=(0,))
"""

from __future__ import annotations

import itertools

import keras
import numpy as np

from training.diagnostics.steps import train_steps
from training.run import OPTIMIZERS, build_model, evaluate, load_data, make_datasets

VARIANTS = {"zero": False, "learned": True}


def compare_initial_states(config: dict, *, steps: int, seeds=(0,), progress=None,
                           prepared=None) -> dict:
    """Trains both variants `steps` batches per seed; their per-step losses and dev metrics.

    Args:
        config: A resolved run config (`training.run.resolve_config`); its
            optimizer, learning rate and clip norm are used. Language models
            start every window from the initial state here (no carried
            state), which is where an initial state matters.
        steps: Training batches per run (the train split repeats if shorter).
        seeds: One pair of runs per seed.
        progress: Called after every step (a tqdm update).
        prepared: The run's PreparedData, if the caller has it already.

    Returns:
        {"runs": [{"variant", "seed", "losses", "dev"}...], "config": config}.
    """
    prepared = prepared or load_data(config)
    training = config["training"]
    runs = []
    for seed in seeds:
        for variant, learned in VARIANTS.items():
            run_config = {**config, "seed": int(seed),
                          "model": {**config["model"], "learned_initial_state": learned}}
            keras.utils.set_random_seed(int(seed))
            model = build_model(run_config, prepared)
            model.build((None, None))
            train_data, _ = make_datasets(run_config, prepared)
            optimizer = OPTIMIZERS[training["optimizer"]](learning_rate=training["learning_rate"])
            batches = itertools.islice(_forever(train_data), steps)
            trace = train_steps(model, batches, optimizer, training.get("clip_norm"),
                                progress=progress)
            dev = evaluate(model, run_config, prepared, prepared.dev)
            runs.append({"variant": variant, "seed": int(seed), "losses": trace.losses,
                         "dev": {key: value for key, value in dev.items() if key != "per_tag"}})
    return {"runs": runs, "config": config}


def _forever(dataset):
    while True:
        yield from dataset


def summarize_initial_states(result: dict, early_steps: int = 50) -> dict:
    """Per variant: dev metrics averaged over seeds, and the mean loss of the first `early_steps` steps."""
    summary = {}
    for variant in VARIANTS:
        runs = [run for run in result["runs"] if run["variant"] == variant]
        dev_keys = [key for key, value in runs[0]["dev"].items() if isinstance(value, float)]
        summary[variant] = {
            "seeds": [run["seed"] for run in runs],
            "dev": {key: float(np.mean([run["dev"][key] for run in runs])) for key in dev_keys},
            "dev_per_seed": [run["dev"] for run in runs],
            f"mean_loss_first_{early_steps}_steps": float(np.mean(
                [np.mean(run["losses"][:early_steps]) for run in runs])),
            "mean_loss_last_10_steps": float(np.mean([np.mean(run["losses"][-10:]) for run in runs])),
        }
    return summary
