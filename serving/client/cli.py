"""`rnn-zoo-client`: call a model server from the command line (one JSON object per line, except `tag`).

    rnn-zoo-client --server localhost:8500 predict lm --signature tokenize --inputs '{"text": ["the cat"]}'
    rnn-zoo-client classify sst2 "a good movie" [--api classify]
    rnn-zoo-client tag pos "the cat sat"
    rnn-zoo-client score lm "the cat sat"
    rnn-zoo-client metadata lm
    rnn-zoo-client status lm

The arguments are parsed before gRPC and the TF Serving protos (which import
TensorFlow) are: the functions that need them import them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from typing import TYPE_CHECKING

from serving.client import DEFAULT_TARGET, DEFAULT_TIMEOUT_SECONDS
from serving.client.connection import add_connection_arguments, security_from_arguments
from training.quiet import quiet_tensorflow_logs

if TYPE_CHECKING:
    from serving.client.serving_client import ServingClient

PROG = "rnn-zoo-client"


def _signature_summary(signature) -> dict:
    from serving.protocol import tensors

    def describe(tensor_infos):
        return {alias: {"dtype": tensors.data_type_name(info.dtype), "shape": tensors.tensor_info_dims(info)}
                for alias, info in sorted(tensor_infos.items())}
    return {"method_name": signature.method_name, "inputs": describe(signature.inputs),
            "outputs": describe(signature.outputs)}


def _print_json(value) -> None:
    print(json.dumps(value, ensure_ascii=False))


def _load_json_argument(text: str):
    """Reads `--inputs`: inline JSON, or `@path` for a file."""
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as handle:
            return json.load(handle)
    return json.loads(text)


def _spec_arguments(arguments) -> dict:
    return {"version": arguments.version, "version_label": arguments.label}


def run_command(client: ServingClient, arguments: argparse.Namespace) -> None:
    """Runs one CLI subcommand and prints its result to stdout."""
    from serving.protocol import tensors

    spec = _spec_arguments(arguments)
    if arguments.command == "predict":
        inputs = _load_json_argument(arguments.inputs)
        if not isinstance(inputs, dict):
            raise ValueError("--inputs must be a JSON object {input name: value}")
        output_filter = [name for name in (arguments.output_filter or "").split(",") if name]
        result = client.predict_json(arguments.model, inputs, arguments.signature, output_filter=output_filter, **spec)
        _print_json({"model_spec": {"name": result.model_name, "version": result.version,
                                    "signature_name": result.signature_name},
                     "outputs": {alias: tensors.numpy_to_json(array) for alias, array in result.outputs.items()}})
    elif arguments.command == "classify":
        if arguments.api == "classify":
            results = client.classify_sentences_with_examples(arguments.model, arguments.sentences,
                                                              arguments.signature or "classify", **spec)
        else:
            results = client.classify_sentences(arguments.model, arguments.sentences,
                                                signature_name=arguments.signature or "serving_default", **spec)
        for sentence, result in zip(arguments.sentences, results):
            _print_json({"sentence": sentence, "label": result.label, "probabilities": result.probabilities})
    elif arguments.command == "tag":
        for pairs in client.tag(arguments.model, arguments.sentences, **spec):
            print(" ".join(f"{token}/{tag}" for token, tag in pairs))
    elif arguments.command == "score":
        for text, result in zip(arguments.texts, client.score(arguments.model, arguments.texts, **spec)):
            perplexity = None if math.isnan(result.perplexity) else result.perplexity
            _print_json({"text": text, "log_prob": result.log_prob, "num_tokens": result.num_tokens,
                         "perplexity": perplexity})
    elif arguments.command == "metadata":
        signatures = client.get_model_metadata(arguments.model, **spec)
        _print_json({"model": arguments.model, "signatures": {
            name: _signature_summary(signature) for name, signature in sorted(signatures.items())
            if not name.startswith("__")}})
    elif arguments.command == "status":
        _print_json({"model": arguments.model, "versions": [
            dataclasses.asdict(row) for row in client.get_model_status(arguments.model, **spec)]})


def build_parser() -> argparse.ArgumentParser:
    """The command line; building it imports neither gRPC nor TensorFlow."""
    parser = argparse.ArgumentParser(prog=PROG,
                                     description="Call a model server (this project's or TensorFlow Serving's) "
                                                 "over gRPC with the official TF Serving stubs.")
    parser.add_argument("--server", default=DEFAULT_TARGET, help="host:port of the gRPC server.")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help="Deadline per call, seconds.")
    add_connection_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("model", help="Model name.")
        version = command.add_mutually_exclusive_group()
        version.add_argument("--version", type=int, help="Version number (default: the latest).")
        version.add_argument("--label", help="Version label (from the server's model config).")
        return command

    predict = add_command("predict", "Run any signature on JSON inputs; prints the outputs as JSON.")
    predict.add_argument("--signature", default="serving_default", help="Signature name.")
    predict.add_argument("--inputs", required=True,
                         help="JSON object {input name: nested list}, or @file.json; values are cast to the "
                              "signature's dtypes.")
    predict.add_argument("--output_filter", help="Comma-separated output names to return (default: all).")

    classify = add_command("classify", "Classify sentences; prints label and probabilities per sentence.")
    classify.add_argument("sentences", nargs="+", help="Sentences to classify.")
    classify.add_argument("--api", choices=("predict", "classify"), default="predict",
                          help="Predict on serving_default, or the Classify API with tf.Examples.")
    classify.add_argument("--signature", help="Signature (default: serving_default, or classify with --api classify).")

    tag = add_command("tag", "Tag sentences; prints token/TAG pairs, one sentence per line.")
    tag.add_argument("sentences", nargs="+", help="Whitespace-tokenized sentences.")

    score = add_command("score", "Score texts with a language model: log-prob, tokens scored, perplexity.")
    score.add_argument("texts", nargs="+", help="Texts to score.")

    add_command("metadata", "Print the signatures (inputs and outputs with dtypes and shapes).")
    add_command("status", "Print the state of every version of the model.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 0 on success, 1 when the call fails."""
    arguments = build_parser().parse_args(argv)
    quiet_tensorflow_logs()
    from serving.client.serving_client import ServingClient, ServingClientError  # imports gRPC and TensorFlow

    try:
        with ServingClient(arguments.server, arguments.timeout, security=security_from_arguments(arguments)) as client:
            run_command(client, arguments)
    except ServingClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
