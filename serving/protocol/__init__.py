"""What the client and the server agree on, beside TensorFlow Serving's protos.

    errors.py    ServingError: a gRPC status code and a message worded as TF Serving words it,
                 with its HTTP and `tensorflow.error.Code` equivalents
    tensors.py   TensorProto <-> NumPy and JSON <-> NumPy conversion, input checks, tf.Examples

The server answers with these; the client (`serving.client`) builds its
requests and reads the answers with the same functions, so what one writes
the other reads. `tensors` imports TensorFlow's protos (and so TensorFlow).
"""
