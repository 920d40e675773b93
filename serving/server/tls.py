"""TLS and mutual TLS from `--ssl_config_file`, configured as TensorFlow Serving configures it.

The file is a `tensorflow.serving.SSLConfig` in protobuf text format, the one
`tensorflow_model_server --ssl_config_file` reads, holding the PEM text itself
(not file names):

    server_key: "-----BEGIN PRIVATE KEY-----\n..."
    server_cert: "-----BEGIN CERTIFICATE-----\n..."
    custom_ca: "-----BEGIN CERTIFICATE-----\n..."    # the CA that signs client certificates
    client_verify: true                               # mutual TLS: refuse clients without one

TF Serving puts it on gRPC only; here the REST port gets the same key,
certificate and client check, so neither port is the open one. One
difference: `client_verify` needs `custom_ca` here (TF Serving would fall back
to gRPC's default roots, which would let in anyone a public CA ever signed).
"""

import os
import pathlib
import ssl
import tempfile

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

SSL_CONFIG_FIELDS = (("server_key", "string"), ("server_cert", "string"), ("custom_ca", "string"),
                     ("client_verify", "bool"))


def _ssl_config_class():
    """`tensorflow.serving.SSLConfig` (tensorflow_serving/config/ssl_config.proto).

    The tensorflow-serving-api package ships the APIs' protos but not this
    config one, so it is built here from its definition: same package,
    message, field names and numbers, so the same text files parse the same.
    """
    types = {"string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
             "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL}
    file = descriptor_pb2.FileDescriptorProto(name="tensorflow_serving/config/ssl_config.proto",
                                              package="tensorflow.serving", syntax="proto3")
    message = file.message_type.add(name="SSLConfig")
    for number, (name, kind) in enumerate(SSL_CONFIG_FIELDS, start=1):
        message.field.add(name=name, number=number, type=types[kind],
                          label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()  # its own pool: no clash should TensorFlow ever ship it
    pool.AddSerializedFile(file.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.SSLConfig"))


SSLConfig = _ssl_config_class()


def read_ssl_config_file(path: os.PathLike):
    """Reads and checks `--ssl_config_file`.

    Raises:
        ValueError: The file cannot be read or parsed, or lacks what TLS needs.
    """
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read --ssl_config_file {path}: {error}") from None
    config = SSLConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ValueError(f"--ssl_config_file {path} is not a tensorflow.serving.SSLConfig text proto: "
                         f"{error}") from None
    for field in ("server_key", "server_cert"):
        if "-----BEGIN" not in getattr(config, field):
            raise ValueError(f"--ssl_config_file {path}: {field} must hold the PEM text itself")
    if config.client_verify and "-----BEGIN" not in config.custom_ca:
        raise ValueError(f"--ssl_config_file {path}: client_verify needs custom_ca, the PEM of the CA "
                         "that signs the client certificates")
    return config


def grpc_server_credentials(config) -> grpc.ServerCredentials:
    """gRPC credentials as TF Serving builds them (BuildServerCredentialsFromSSLConfigFile)."""
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() if config.custom_ca else None,
        require_client_auth=config.client_verify)


def rest_ssl_context(config) -> ssl.SSLContext:
    """A server-side SSLContext with the same key, certificate and client check as gRPC.

    Raises:
        ValueError: The key does not match the certificate, or a PEM is invalid.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl loads a key and certificate from files only: a private directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="rnn-zoo-tls-") as directory:
        key_path, cert_path = pathlib.Path(directory) / "key.pem", pathlib.Path(directory) / "cert.pem"
        key_path.touch(mode=0o600)
        key_path.write_text(config.server_key)
        cert_path.write_text(config.server_cert)
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as error:
            raise ValueError(f"--ssl_config_file: server_key and server_cert do not load ({error})") from None
    if config.custom_ca:
        try:
            context.load_verify_locations(cadata=config.custom_ca)
        except ssl.SSLError as error:
            raise ValueError(f"--ssl_config_file: custom_ca does not load ({error})") from None
    context.verify_mode = ssl.CERT_REQUIRED if config.client_verify else ssl.CERT_NONE
    return context
