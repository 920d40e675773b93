"""PyTorch's word_language_model recipe, the baseline that training_speed.py times the zoo against.

A transcription of pytorch/examples `word_language_model` (model.py, and the
training loop of main.py) with the zoo's PTB training settings:

    token ids (time, batch)
      -> nn.Embedding -> Dropout
      -> nn.LSTM | nn.GRU | nn.RNN(tanh), num_layers, dropout between layers
      -> Dropout -> nn.Linear decoder          logits (time, batch, vocabulary)

Each step takes the cross-entropy averaged over the batch and summed over the
window's time steps (Zaremba et al.'s loss, the zoo PTB presets'
`sum_loss_over_time`), clips the gradients by global norm with
`clip_grad_norm_`, takes an SGD step, and detaches the hidden state so the next
window starts where this one ended while gradients stop at the edge
(truncated backpropagation through time). The layout is time-major, as in the
recipe's `batchify` and `get_batch`.

Only benchmarks import this file: PyTorch is no dependency of the project.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# The zoo's cell names and the recipe's nn module for each.
RECURRENT_MODULES = {"lstm": nn.LSTM, "gru": nn.GRU, "simple_rnn": nn.RNN}


class RNNModel(nn.Module):
    """Embedding, recurrent layers, dropout and a linear decoder (pytorch/examples model.py).

    Args:
        cell: "lstm", "gru" or "simple_rnn" (nn.RNN with tanh).
        vocabulary_size: Number of token ids, the decoder's output width.
        embedding_dim: Size of the word vectors.
        hidden_dim: Units per recurrent layer.
        num_layers: Stacked recurrent layers.
        dropout: On the embedding, between recurrent layers and on the top
            layer's output: the zoo backbone's num_layers + 1 dropouts.
        init_scale: Every weight starts uniform in [-init_scale, init_scale],
            as in Zaremba et al. and the zoo PTB presets; None keeps PyTorch's.
    """

    def __init__(self, cell: str, vocabulary_size: int, embedding_dim: int, hidden_dim: int,
                 num_layers: int, dropout: float = 0.0, init_scale: float | None = None):
        super().__init__()
        if cell not in RECURRENT_MODULES:
            raise ValueError(f"Unknown cell {cell!r}. Valid cells: {', '.join(RECURRENT_MODULES)}.")
        self.cell = cell
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocabulary_size, embedding_dim)
        extra = {"nonlinearity": "tanh"} if cell == "simple_rnn" else {}
        self.rnn = RECURRENT_MODULES[cell](embedding_dim, hidden_dim, num_layers,
                                           dropout=dropout if num_layers > 1 else 0.0, **extra)
        self.decoder = nn.Linear(hidden_dim, vocabulary_size)
        if init_scale is not None:
            for parameter in self.parameters():
                nn.init.uniform_(parameter, -init_scale, init_scale)

    def forward(self, token_ids, hidden):
        embedded = self.drop(self.encoder(token_ids))  # (time, batch, embedding)
        output, hidden = self.rnn(embedded, hidden)  # (time, batch, hidden)
        output = self.drop(output)
        return self.decoder(output), hidden  # (time, batch, vocabulary)

    def init_hidden(self, batch_size: int):
        """Zeros: (h, c) for an LSTM, h for the others, each (layers, batch, hidden)."""
        zeros = torch.zeros(self.num_layers, batch_size, self.hidden_dim)
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros


def repackage_hidden(hidden):
    """The hidden state cut off from the graph of the window that made it."""
    if isinstance(hidden, torch.Tensor):
        return hidden.detach()
    return tuple(repackage_hidden(tensor) for tensor in hidden)


def batchify(token_ids: np.ndarray, batch_size: int) -> torch.Tensor:
    """(n, batch) int64: column j is the j-th contiguous stream, the tail dropped (main.py)."""
    stream_length = len(token_ids) // batch_size
    streams = torch.as_tensor(np.asarray(token_ids[: stream_length * batch_size], dtype=np.int64))
    return streams.view(batch_size, -1).t().contiguous()


def get_batch(source: torch.Tensor, index: int, num_steps: int):
    """Window `index` of the streams: inputs and next-token targets, each (num_steps, batch)."""
    start = index * num_steps
    return source[start:start + num_steps], source[start + 1:start + 1 + num_steps]


class LanguageModelTrainer:
    """The training loop of main.py: one truncated-BPTT window per `step`.

    Args:
        model: An RNNModel.
        batches: `batchify`'d streams; windows are taken in order and wrap
            around at the end.
        num_steps: Window length.
        learning_rate: SGD learning rate.
        clip_norm: Global gradient norm to clip to (None: no clipping).
        sum_loss_over_time: Optimise the per-token mean times num_steps.
    """

    def __init__(self, model: RNNModel, batches: torch.Tensor, num_steps: int, learning_rate: float,
                 clip_norm: float | None, sum_loss_over_time: bool):
        self.model = model
        self.batches = batches
        self.num_steps = num_steps
        self.windows = (batches.size(0) - 1) // num_steps
        if self.windows < 1:
            raise ValueError(f"{batches.numel()} ids give no window of {num_steps} steps.")
        self.clip_norm = clip_norm
        self.loss_scale = num_steps if sum_loss_over_time else 1
        self.optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
        self.criterion = nn.CrossEntropyLoss()
        self.hidden = model.init_hidden(batches.size(1))
        self.position = 0
        model.train()

    def step(self) -> float:
        """Trains on the next window; returns its mean cross-entropy per token."""
        inputs, targets = get_batch(self.batches, self.position, self.num_steps)
        self.position = (self.position + 1) % self.windows
        self.hidden = repackage_hidden(self.hidden)
        self.optimizer.zero_grad()
        logits, self.hidden = self.model(inputs, self.hidden)
        loss = self.criterion(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        (loss * self.loss_scale).backward()
        if self.clip_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.optimizer.step()
        return loss.item()
