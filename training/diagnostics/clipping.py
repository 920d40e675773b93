"""The exploding case: gradient-norm traces of one short training, with and without global-norm clipping.

A SimpleRNN whose recurrent matrix has spectral radius above 1 multiplies the
gradient by up to that radius at every step back, so a loss at the end of a
long sequence sends gradients of very different sizes from batch to batch;
one large step can throw the weights far away (Pascanu, Mikolov & Bengio
2013). Clipping by the global norm keeps every step at most `clip_norm` long
and keeps its direction. Both runs start from the same weights and see the
same batches of the long-dependency task, so the only difference is the clip.

    traces = clipping_traces(recurrent_radius=1.5, clip_norm=1.0, steps=200)
    traces["clipped"].applied_norms      # all <= 1.0
"""

from __future__ import annotations

import keras
import numpy as np

import zoo
from training.diagnostics.long_dependency import first_token_task
from training.diagnostics.steps import StepTrace, train_steps


def set_spectral_radius(layer, radius: float) -> float:
    """Rescales a SimpleRNN layer's recurrent matrix to spectral radius `radius`; returns the old one."""
    cell = layer.cell
    matrix = keras.ops.convert_to_numpy(cell.recurrent_kernel)
    old = float(np.max(np.abs(np.linalg.eigvals(matrix.astype(np.float64)))))
    cell.recurrent_kernel.assign(matrix * (radius / old))
    return old


def clipping_traces(*, recurrent_radius: float = 1.5, clip_norm: float = 1.0, steps: int = 200,
                    length: int = 50, batch_size: int = 32, hidden_dim: int = 32,
                    embedding_dim: int = 16, learning_rate: float = 0.1, seed: int = 0,
                    progress=None) -> dict[str, StepTrace]:
    """{"unclipped": trace, "clipped": trace} for a SimpleRNN classifier trained with SGD.

    The model reads the final state after `length` steps of the first-token
    task; its recurrent matrix is rescaled to `recurrent_radius` before
    training (1.0 is the Keras orthogonal start; above 1 explodes).
    """
    data = first_token_task(steps * batch_size, length, seed=seed)
    traces = {}
    for name, clip in (("unclipped", None), ("clipped", clip_norm)):
        keras.utils.set_random_seed(seed)
        model = zoo.build("classifier", cell="simple_rnn", vocabulary_size=data.vocabulary_size,
                          num_classes=int(data.labels.max()) + 1, hidden_dim=hidden_dim,
                          embedding_dim=embedding_dim, pooling="last")
        model.build((None, None))
        set_spectral_radius(model.backbone.recurrent_layers[0], recurrent_radius)
        batches = ((data.token_ids[i:i + batch_size], data.labels[i:i + batch_size])
                   for i in range(0, steps * batch_size, batch_size))
        traces[name] = train_steps(model, batches, keras.optimizers.SGD(learning_rate), clip,
                                   progress=progress)
    return traces


def summarize_traces(traces: dict[str, StepTrace]) -> dict:
    """Per run: median and largest norm before clipping, largest applied, steps clipped, last loss."""
    summary = {}
    for name, trace in traces.items():
        norms = np.asarray(trace.gradient_norms, dtype=np.float64)
        applied = np.asarray(trace.applied_norms, dtype=np.float64)
        finite = norms[np.isfinite(norms)]
        losses = np.asarray(trace.losses, dtype=np.float64)
        summary[name] = {
            "clip_norm": trace.clip_norm,
            "steps": len(norms),
            "median_gradient_norm": float(np.median(finite)) if finite.size else None,
            "max_gradient_norm": float(finite.max()) if finite.size else None,
            "max_applied_norm": float(np.nanmax(applied)) if np.isfinite(applied).any() else None,
            "steps_clipped": (int((norms > trace.clip_norm).sum()) if trace.clip_norm else 0),
            "nonfinite_steps": int((~np.isfinite(norms)).sum()),
            "final_loss": float(np.mean(losses[-10:])),
        }
    return summary
