"""Which models and versions to serve: ModelServerConfig files and flags, model directories, version policies.

TensorFlow Serving's layout is the contract: a model is a base path holding
one directory per version, named by its number (`lm/1/`, `lm/2/`). A config
comes from `--model_name`/`--model_base_path`, from a text-proto file, or is
discovered from a directory of models; a version policy (latest N, all,
specific) picks the versions on disk to serve.
"""

import os
import pathlib
from collections.abc import Iterable

from google.protobuf import text_format
from tensorflow_serving.config import file_system_storage_path_source_pb2, model_server_config_pb2

from serving.protocol.errors import invalid_argument

_SUPPORTED_PLATFORMS = ("", "tensorflow")

# === Config ===


def config_for_single_model(model_name: str, model_base_path: os.PathLike) -> model_server_config_pb2.ModelServerConfig:
    """The config TF Serving builds from `--model_name` and `--model_base_path`."""
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name = model_name
    entry.base_path = os.fspath(model_base_path)
    entry.model_platform = "tensorflow"
    return config


def parse_model_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    """Parses a ModelServerConfig in protobuf text format and validates it.

    Raises:
        ServingError: INVALID_ARGUMENT for a syntax error or an invalid config.
    """
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise invalid_argument(f"Invalid ModelServerConfig text proto: {error}") from None
    validate_config(config)
    return config


def read_model_config_file(path: os.PathLike) -> model_server_config_pb2.ModelServerConfig:
    """Reads `--model_config_file`; see `parse_model_config`.

    A file that cannot be read or parsed is refused with TF Serving's words
    (util.h ParseProtoTextFile: `Invalid protobuf file: '<path>'`), followed
    by the parser's reason.
    """
    try:
        text = pathlib.Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise invalid_argument(f"Invalid protobuf file: '{path}': cannot read it ({error})") from None
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise invalid_argument(f"Invalid protobuf file: '{path}': not a ModelServerConfig text proto "
                               f"({error})") from None
    validate_config(config)
    return config


def validate_config(config: model_server_config_pb2.ModelServerConfig) -> None:
    """Checks what TF Serving checks before applying a config.

    Raises:
        ServingError: INVALID_ARGUMENT naming the offending entry.
    """
    if config.WhichOneof("config") != "model_config_list":
        raise invalid_argument(
            "ServerModelConfig type not supported by HandleReloadConfigRequest."
            " Only ModelConfigList is currently supported")
    seen = set()
    for entry in config.model_config_list.config:
        if not entry.name:
            raise invalid_argument("Illegal to have a model with an empty name in the config")
        if entry.name in seen:
            raise invalid_argument(f"Illegal to list model {entry.name} multiple times in config list")
        seen.add(entry.name)
        if not entry.base_path:
            raise invalid_argument(f"Model {entry.name} has no base_path")
        if entry.model_platform not in _SUPPORTED_PLATFORMS:
            raise invalid_argument(
                f"Model {entry.name} has model_platform {entry.model_platform!r}; this server "
                "serves TensorFlow SavedModels only (model_platform: \"tensorflow\")")
        policy = entry.model_version_policy
        if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
            raise invalid_argument(f"Model {entry.name}: the specific version policy lists no versions")
        for label, version in entry.version_labels.items():
            if version <= 0:
                raise invalid_argument(f"Model {entry.name}: label {label} points at version {version}")


def discover_models(model_base_dir: os.PathLike) -> model_server_config_pb2.ModelServerConfig:
    """Builds a config serving every model directory under `model_base_dir`.

    A model directory is one holding at least one version directory (a name
    made of digits); each is served under its directory name, latest version.
    """
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.SetInParent()
    base = pathlib.Path(model_base_dir)
    try:
        children = sorted(base.iterdir())
    except OSError:
        return config
    for child in children:
        if child.name.startswith(".") or not child.is_dir():
            continue
        if scan_versions(child):
            entry = config.model_config_list.config.add()
            entry.name = child.name
            entry.base_path = str(child.resolve())
            entry.model_platform = "tensorflow"
    return config


def scan_versions(base_path: os.PathLike) -> dict[int, pathlib.Path] | None:
    """Lists the version directories of a model; None when the base path is missing.

    Only names made of digits count: exporters write to a temporary name and
    rename, so a numbered directory is a complete export when it appears.
    """
    versions = {}
    try:
        with os.scandir(base_path) as entries:
            for entry in entries:
                if entry.name.isascii() and entry.name.isdigit() and entry.is_dir():
                    versions[int(entry.name)] = pathlib.Path(entry.path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return versions


VersionPolicy = file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy


def aspired_versions(policy: VersionPolicy, on_disk: Iterable[int]) -> list[int]:
    """Applies a version policy (latest N, all, specific) to the versions on disk."""
    on_disk = sorted(on_disk, reverse=True)
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return on_disk
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [version for version in on_disk if version in wanted]
    num_versions = policy.latest.num_versions if choice == "latest" else 0
    return on_disk[:max(num_versions, 1)]
