"""Serving the zoo's models: export, the model server, the client, and generation.

    export/       trained models -> versioned SavedModels, tokenizer inside   (rnn-zoo-export)
    server/       the model server: TF Serving's gRPC and REST APIs           (rnn-zoo-serve)
    protocol/     what client and server agree on: tensor encodings, status codes and messages
    client/       ServingClient, through the official TF Serving stubs        (rnn-zoo-client)
    generation/   the generation loop, its backends and samplers              (rnn-zoo-generate)
                  and quality/, the decoding-method comparison                (rnn-zoo-generation-quality)
    demo.py       every bundled model called over gRPC                        (rnn-zoo-demo)

Every command parses its arguments before TensorFlow is imported.
"""
