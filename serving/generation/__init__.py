"""Text generation: the autoregressive loop that carries the recurrent state.

    from serving.generation import GrpcBackend, SavedModelBackend, generate, stream_generate

    backend = GrpcBackend("localhost:8500", "shakespeare_char_lstm")     # or SavedModelBackend(path)
    result = generate(backend, ["ROMEO:", "JULIET:"], max_new_tokens=200, top_p=0.95, seed=1)
    print(result.full_texts[0])
    for row, piece in stream_generate(backend, ["ROMEO:"], max_new_tokens=200, seed=1):
        print(piece, end="", flush=True)

One loop, several backends: the model server over gRPC, a SavedModel loaded in
this process, or a Keras model in memory. Each prompt is fed once -- the whole
batch of prompts in one `step` call, rows right-padded with 0 -- and then one
token per live row per step; the state the backend returns is carried to the
next call and the prefix is never sent again, so the server keeps no
per-client state (docs/serving_contract.md). A row that finishes leaves the
batch: its state row is sliced away and it is never sent again.

Rules worth knowing:

- Seeds: row j of a prompt's `num_return_sequences` draws from
  `numpy.random.default_rng([seed, crc32(prompt text), j])`, never from its
  position in the batch, so the same prompt and seed give the same text in any
  batch, and two different prompts do not share random draws.
- Text prompts start at a text boundary: the model's initial state is fed the
  model's end token first (`<eos>` for word models, which ends every training
  line) or else a newline (character models), then the prompt. The models were
  trained with the state carried across lines, so that boundary is what they
  saw before every line; from the bare initial state a PTB model predicts
  `<eos>` after "the company said" (logit 14.5 against 11.7 for "it" once the
  boundary is fed). The start token is context only, never part of the output.
  An empty prompt is the start token alone. Token-id prompts are fed exactly
  as given. A model with neither an end token nor a newline starts text
  prompts from the bare initial state, and an empty prompt raises ValueError.
- Out-of-vocabulary words or characters become `<unk>` (id 1), with a warning.
- Stopping: at `max_new_tokens`; at the model's end token (`stop_at_end_token`);
  at a stop token id (neither is part of the output); or right before a stop
  string, cut exactly, also when it spans several tokens or begins mid-token.
  A stop string counts once `min_new_tokens` tokens exist and ends in the
  newest token; stop tokens are held back (logit -inf) until then.
- The padding id 0 is never generated.
- Log-probabilities are the model's own, log p(token | context), before any
  penalty, temperature or filter.
- `num_beams=1` is greedy decoding (or sampling); beam search never samples.

Where things are:

    backends.py      GrpcBackend, SavedModelBackend, KerasBackend (and the CLI flags that pick one)
    options.py       GenerationOptions, GenerationResult, GenerationError
    logits.py        repetition penalty, n-gram blocking, held-back stop tokens
    samplers.py      greedy, temperature, top-k, top-p, min-p, typical: logits -> next token
    rows.py          prompts -> ids, one Row per returned sequence, stop conditions
    loop.py          the greedy/sampling loop; generate() and stream_generate()
    beam_search.py   beam search behind the same entry points
    scoring.py       continuation_logprobs() and score()
    cli.py           rnn-zoo-generate
    quality/         the decoding-method comparison (rnn-zoo-generation-quality)

Importing this package imports NumPy only; TensorFlow comes with the first
SavedModelBackend or GrpcBackend.
"""

from serving.generation.backends import (BackendError, GrpcBackend, KerasBackend, LanguageModelBackend,
                                         SavedModelBackend)
from serving.generation.logits import apply_repetition_penalty, banned_ngram_tokens, process_logits
from serving.generation.loop import generate, stream_generate
from serving.generation.options import GenerationError, GenerationOptions, GenerationResult
from serving.generation.rows import Prompt
from serving.generation.scoring import continuation_logprobs, score

__all__ = [
    "BackendError", "GenerationError", "GenerationOptions", "GenerationResult", "GrpcBackend", "KerasBackend",
    "LanguageModelBackend", "Prompt", "SavedModelBackend", "apply_repetition_penalty", "banned_ngram_tokens",
    "continuation_logprobs", "generate", "process_logits", "score", "stream_generate",
]
