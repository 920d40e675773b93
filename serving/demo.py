"""The main job on the bundled models: `make demo` (or `rnn-zoo-demo`).

Starts the gRPC model server on `saved_models/` as a real process, then calls
every bundled model the way a user would, with the official TensorFlow Serving
stubs: classify sentences (Predict and Classify APIs), tag a sentence, score a
text, stream generated text from the character model, and one REST call. The
server is stopped with SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from serving.generation import GrpcBackend, generate, stream_generate
from serving.server import running_server
from training.quiet import quiet_tensorflow_logs

if TYPE_CHECKING:
    from serving.client import ServingClient

PROG = "rnn-zoo-demo"

CLASSIFIER = "sst2_bilstm"
TAGGER = "ewt_upos_bilstm"
WORD_MODEL = "ptb_word_lstm"
CHAR_MODEL = "shakespeare_char_lstm"

SENTENCES = [
    "a gorgeous , witty , seductive movie .",
    "the plot is a mess and the acting is even worse .",
    "it 's not a great film , but it 's a fun ride .",
]
TAG_SENTENCES = [
    "The server answered every request in a few milliseconds .",
    # Words the tagger's vocabulary has never seen: its character model still reads them.
    "Guido van Rossum released Python 3.13 in Amsterdam last Tuesday .",
]
# PTB is lowercased, with numbers as N and rare words as <unk>.
SCORE_TEXTS = [
    "the company said its profit rose N N in the third quarter <eos>",
    "quarter the in N N rose profit its said company the <eos>",
]


def section(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run_demo(client: ServingClient, rest_url: str | None, *, max_new_tokens: int, seed: int) -> None:
    """Calls every bundled model and prints what comes back."""
    section("models (ModelService.GetModelStatus)")
    for name in (CLASSIFIER, TAGGER, WORD_MODEL, CHAR_MODEL):
        states = client.get_model_status(name)
        print(f"{name:24s} " + ", ".join(f"version {s.version}: {s.state}" for s in states))

    section(f"classify sentences with {CLASSIFIER} (Predict, serving_default)")
    for sentence, result in zip(SENTENCES, client.classify_sentences(CLASSIFIER, SENTENCES)):
        positive = result.probabilities["positive"]
        print(f"{result.label:9s} p(positive)={positive:.3f}  {sentence}")

    section("the same through the Classify API (tf.Example with a 'text' feature)")
    for sentence, result in zip(SENTENCES, client.classify_sentences_with_examples(CLASSIFIER, SENTENCES)):
        print(f"{result.label:9s} {json.dumps({k: round(v, 3) for k, v in result.probabilities.items()})}")

    section(f"tag sentences with {TAGGER} (UPOS)")
    for pairs in client.tag(TAGGER, TAG_SENTENCES):
        print(" ".join(f"{token}/{tag}" for token, tag in pairs))

    section(f"score texts with {WORD_MODEL} (perplexity over the wire)")
    for text, score in zip(SCORE_TEXTS, client.score(WORD_MODEL, SCORE_TEXTS)):
        print(f"perplexity {score.perplexity:9.1f} over {score.num_tokens:2d} tokens  {text}")

    section(f"generate from {CHAR_MODEL} over gRPC (top_p=0.95, seed={seed}), streamed")
    backend = GrpcBackend(client.target, CHAR_MODEL)
    print("ROMEO:", end="", flush=True)
    for _, token_text in stream_generate(backend, ["ROMEO:"], max_new_tokens=max_new_tokens,
                                         top_p=0.95, seed=seed):
        print(token_text, end="", flush=True)
    print()

    section(f"continue a sentence with {WORD_MODEL}: greedy and beam search (num_beams=4)")
    words = GrpcBackend(client.target, WORD_MODEL)
    prompt = "the company said"
    for label, options in (("greedy", {"do_sample": False}), ("beam 4", {"num_beams": 4})):
        result = generate(words, [prompt], max_new_tokens=20, **options)
        print(f"{label:7s} {result.full_texts[0]}")

    if rest_url:
        section("REST (TensorFlow Serving's JSON API), as curl would call it")
        body = json.dumps({"instances": [SENTENCES[0]]}).encode()
        url = f"{rest_url}/v1/models/{CLASSIFIER}:predict"
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            print(f"POST {url}\n{response.read().decode()}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_dir", default="saved_models", help="models to serve")
    parser.add_argument("--target", help="use a server already running at host:port instead of starting one")
    parser.add_argument("--max_new_tokens", type=int, default=300, help="characters to generate")
    parser.add_argument("--seed", type=int, default=1)
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    quiet_tensorflow_logs()
    from serving.client import ServingClient  # imports gRPC and TensorFlow

    if args.target:
        client = ServingClient(args.target)
        run_demo(client, None, max_new_tokens=args.max_new_tokens, seed=args.seed)
        return 0
    if not Path(args.model_base_dir).is_dir():
        print(f"{PROG}: error: {args.model_base_dir} is not a directory", file=sys.stderr)
        return 2
    print(f"starting the model server on {args.model_base_dir}/ ...", flush=True)
    # Numeric outputs as tensor_content bytes: the generation loop's logits need no per-value encoding.
    with running_server(model_base_dir=args.model_base_dir, rest=True, monitoring=False,
                        tensor_content_responses=True) as server:
        print(f"serving gRPC on {server.grpc_target}, REST on {server.rest_url}", flush=True)
        client = ServingClient(server.grpc_target)
        try:
            run_demo(client, server.rest_url, max_new_tokens=args.max_new_tokens, seed=args.seed)
        finally:
            client.close()
    print("\nserver stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
