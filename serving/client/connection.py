"""How a client reaches the server: TLS files, a bearer token, and the flags every client command shares.

    rnn-zoo-client --server host:8500 --ca_cert ca.pem status lm                        # TLS
    rnn-zoo-client --server host:8500 --ca_cert ca.pem --client_cert me.pem --client_key me.key status lm   # mutual TLS
    rnn-zoo-client --server host:8500 --auth_token_file token.txt status lm             # bearer token

`rnn-zoo-client`, `rnn-zoo-generate` and `rnn-zoo-generation-quality` take
these flags through `add_connection_arguments`. Importing this module imports
the standard library only (the commands parse flags before gRPC is imported).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib


@dataclasses.dataclass(frozen=True)
class ConnectionSecurity:
    """What a client presents to the server.

    Attributes:
        ca_cert: PEM file of the CA that signed the server's certificate;
            given (or with a client certificate), the channel uses TLS.
        client_cert: PEM certificate for mutual TLS (with `client_key`).
        client_key: PEM private key of `client_cert`.
        auth_token: Bearer token sent as `authorization: Bearer <token>`.
    """

    ca_cert: os.PathLike | None = None
    client_cert: os.PathLike | None = None
    client_key: os.PathLike | None = None
    auth_token: str | None = None

    def __post_init__(self):
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("give a client certificate and its key together (--client_cert, --client_key)")

    @property
    def uses_tls(self) -> bool:
        return self.ca_cert is not None or self.client_cert is not None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata carrying the token (none without one)."""
        return (("authorization", f"Bearer {self.auth_token}"),) if self.auth_token else ()


def open_channel(target: str, security: ConnectionSecurity | None = None, options=()):
    """A gRPC channel to `target`: TLS when `security` names a CA or client certificate, else plain.

    Raises:
        ValueError: A certificate or key file cannot be read.
    """
    import grpc

    options = list(options)
    if security is None or not security.uses_tls:
        return grpc.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read_pem(security.ca_cert, "--ca_cert"),
        private_key=_read_pem(security.client_key, "--client_key"),
        certificate_chain=_read_pem(security.client_cert, "--client_cert"))
    return grpc.secure_channel(target, credentials, options=options)


def _read_pem(path: os.PathLike | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {flag} {path}: {error}") from None


def read_tokens(path: os.PathLike) -> list[str]:
    """The tokens of a token file: its lines that are neither blank nor a `#` comment, stripped.

    The server reads every token of `--auth_token_file` (to rotate them), a
    client the first.

    Raises:
        ValueError: The file cannot be read or holds no token.
    """
    try:
        lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read --auth_token_file {path}: {error}") from None
    tokens = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not tokens:
        raise ValueError(f"--auth_token_file {path} holds no token (one per line)")
    return tokens


def read_token_file(path: os.PathLike) -> str:
    """A client's token: the first token of the file (see `read_tokens`).

    Raises:
        ValueError: The file cannot be read or holds no token.
    """
    return read_tokens(path)[0]


# === The flags ===


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--ca_cert, --client_cert, --client_key and --auth_token_file."""
    group = parser.add_argument_group("connection security")
    group.add_argument("--ca_cert", help="PEM file of the CA that signed the server's certificate; connects with TLS.")
    group.add_argument("--client_cert", help="PEM client certificate, for a server that asks for one (mutual TLS).")
    group.add_argument("--client_key", help="PEM private key of --client_cert.")
    group.add_argument("--auth_token_file", help="File whose first line is the bearer token the server expects.")


def security_from_arguments(arguments: argparse.Namespace) -> ConnectionSecurity:
    """The ConnectionSecurity the flags describe.

    Raises:
        ValueError: Only one of --client_cert and --client_key, or an unreadable token file.
    """
    token = read_token_file(arguments.auth_token_file) if arguments.auth_token_file else None
    return ConnectionSecurity(arguments.ca_cert, arguments.client_cert, arguments.client_key, token)
