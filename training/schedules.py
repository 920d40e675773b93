"""Learning-rate schedules of the presets."""

from __future__ import annotations


def zaremba_learning_rate(epoch: int, learning_rate: float, lr_decay: float = 1.0,
                          decay_start_epoch: int | None = None) -> float:
    """Learning rate for 0-based `epoch`: constant, then multiplied by `lr_decay` each epoch.

    Zaremba et al. (2014) keep the rate for the first epochs and then decay it
    every epoch: the small model uses 1.0 for epochs 1-4 and halves it from
    epoch 5 on, which is `decay_start_epoch=5, lr_decay=0.5` (1-based epochs).
    """
    if decay_start_epoch is None or lr_decay == 1.0:
        return float(learning_rate)
    decays = max(epoch + 1 - decay_start_epoch + 1, 0)
    return float(learning_rate * lr_decay**decays)
