"""Which versions are loaded: polling, loading, availability-preserving unloading, labels.

The manager reads a `ModelServerConfig` (`serving.server.model_config`),
polls each base path, loads the versions the policy asks for and unloads the
others only once their replacement serves, so a new export never causes a
failed request. A version that fails to load is kept in the status table
with its error, and the previous one keeps serving.

Requests find a version with `resolve(model_spec)`, which reads a small
copy-on-write table and never waits for a load in progress.
"""

import dataclasses
import logging
import os
import pathlib
import threading
import time
from collections.abc import Callable

from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.protocol import errors
from serving.protocol.errors import ServingError, invalid_argument, not_found
from serving.server.model_config import (aspired_versions, discover_models, read_model_config_file, scan_versions,
                                         validate_config)
from serving.server.servable import Servable

logger = logging.getLogger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State


# === Versions and models ===


@dataclasses.dataclass
class VersionStatus:
    """A row of GetModelStatus: a version, its state and, after a failure, the error."""

    version: int
    state: int
    error: ServingError | None = None


@dataclasses.dataclass
class _VersionRecord:
    version: int
    state: int
    error: ServingError | None = None
    servable: Servable | None = None
    fingerprint: tuple | None = None  # of the directory when a load was last tried


@dataclasses.dataclass
class _ModelEntry:
    config: model_server_config_pb2.ModelConfig
    base_path: pathlib.Path
    versions: dict[int, _VersionRecord] = dataclasses.field(default_factory=dict)
    warned_missing: bool = False
    warned_empty: bool = False


def _servable_id(name: str, version: int) -> str:
    return f"{{name: {name} version: {version}}}"


def _fingerprint(path: pathlib.Path) -> tuple:
    """Changes when a version directory is rewritten, so a failed load is retried then."""
    parts = []
    for candidate in (path, path / "saved_model.pb", path / "variables"):
        try:
            stat = candidate.stat()
            parts.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            parts.append(None)
    return tuple(parts)


class ModelManager:
    """Loads, serves and unloads model versions according to a ModelServerConfig.

    Exactly one config source is used: a fixed config (flags or
    HandleReloadConfigRequest), a config file (re-read when it changes if
    `config_file_poll_wait_seconds` > 0), or a directory whose model
    sub-directories are discovered on every poll.

    Args:
        config: A fixed ModelServerConfig.
        config_file: Path of a ModelServerConfig text proto.
        model_base_dir: Directory of model directories to discover.
        poll_wait_seconds: Seconds between file-system polls; 0 polls once at start.
        config_file_poll_wait_seconds: Seconds between config-file reads; 0 reads once.
        metrics: Optional ServingMetrics for load counts and availability.
        on_availability_change: Called with {model name: has an available version}
            after any change (the server drives per-model health from it).
        load_servable: Loads one version: (name, version, path) -> Servable;
            `Servable.load` by default. The server's also applies
            `--saved_model_tags` and replays warm-up requests
            (`--enable_model_warmup`): whatever it raises fails the load, and
            the version becomes AVAILABLE only once it has returned.

    Raises:
        ServingError: INVALID_ARGUMENT for an invalid config or config file.
    """

    def __init__(self, *, config: model_server_config_pb2.ModelServerConfig | None = None,
                 config_file: os.PathLike | None = None,
                 model_base_dir: os.PathLike | None = None,
                 poll_wait_seconds: float = 1.0,
                 config_file_poll_wait_seconds: float = 0.0,
                 metrics=None,
                 on_availability_change: Callable[[dict[str, bool]], None] | None = None,
                 load_servable: Callable[[str, int, pathlib.Path], Servable] | None = None):
        if sum(source is not None for source in (config, config_file, model_base_dir)) != 1:
            raise ValueError("give exactly one of config, config_file and model_base_dir")
        if config is not None:
            validate_config(config)
        self._fixed_config = config
        self._config_file = pathlib.Path(config_file) if config_file is not None else None
        self._config_file_stamp = None
        if self._config_file is not None:  # read now, so a bad file fails before any port opens
            self._config_file_stamp = self._config_file_signature()
            self._fixed_config = read_model_config_file(self._config_file)
        self._model_base_dir = pathlib.Path(model_base_dir) if model_base_dir is not None else None
        self._poll_wait_seconds = poll_wait_seconds
        self._config_file_poll_wait_seconds = config_file_poll_wait_seconds
        self._metrics = metrics
        self._on_availability_change = on_availability_change
        self._load_servable = load_servable or Servable.load

        self._update_lock = threading.RLock()  # one config change or poll at a time (held while loading)
        self._state_lock = threading.Lock()  # guards the tables below (held briefly)
        self._entries: dict[str, _ModelEntry] = {}
        self._retired: dict[str, dict[int, _VersionRecord]] = {}  # removed models' final states
        self._available: dict[str, dict[int, Servable]] = {}  # copy-on-write; read by requests
        self._labels: dict[str, dict[str, int]] = {}
        self._last_availability: dict[str, bool] = {}
        self._stop = threading.Event()
        self._poll_thread: threading.Thread | None = None

    # --- lifecycle ---

    def start(self) -> None:
        """Loads the initial versions (blocking), then polls in a background thread."""
        if self._model_base_dir is not None and not self._model_base_dir.is_dir():
            logger.warning("Model base directory %s does not exist (yet); serving no models until it does",
                           self._model_base_dir)
        self.poll_once()
        if self._poll_wait_seconds > 0 or self._config_file_poll_wait_seconds > 0:
            self._poll_thread = threading.Thread(target=self._poll_loop, name="model-poller", daemon=True)
            self._poll_thread.start()

    def stop(self) -> None:
        """Stops polling and unloads every version."""
        self._stop.set()
        if self._poll_thread is not None:
            self._poll_thread.join(timeout=60)
        with self._update_lock:
            for entry in list(self._entries.values()):
                for version in sorted(entry.versions):
                    if entry.versions[version].state == State.AVAILABLE:
                        self._unload(entry, version)
            self._notify_availability()

    def _poll_loop(self) -> None:
        next_file_system_poll = time.monotonic() + self._poll_wait_seconds
        next_config_poll = time.monotonic() + self._config_file_poll_wait_seconds
        while not self._stop.is_set():
            now = time.monotonic()
            due = []
            if self._poll_wait_seconds > 0:
                due.append(next_file_system_poll)
            if self._config_file is not None and self._config_file_poll_wait_seconds > 0:
                due.append(next_config_poll)
            if self._stop.wait(max(0.0, min(due) - now)):
                return
            now = time.monotonic()
            try:
                if self._config_file is not None and self._config_file_poll_wait_seconds > 0 \
                        and now >= next_config_poll:
                    next_config_poll = now + self._config_file_poll_wait_seconds
                    self._reload_config_file_if_changed()
                if self._poll_wait_seconds > 0 and now >= next_file_system_poll:
                    next_file_system_poll = now + self._poll_wait_seconds
                    self.poll_once()
            except Exception:  # a poll must never end polling
                logger.exception("Polling the model directories failed; will retry")

    def _config_file_signature(self):
        try:
            stat = self._config_file.stat()
            return (stat.st_mtime_ns, stat.st_size)
        except OSError:
            return None

    def _reload_config_file_if_changed(self) -> None:
        stamp = self._config_file_signature()
        if stamp is None or stamp == self._config_file_stamp:
            return
        try:
            config = read_model_config_file(self._config_file)
        except ServingError as error:
            logger.error("Ignoring changed model config file %s: %s", self._config_file, error.message)
            self._config_file_stamp = stamp
            return
        logger.info("Model config file %s changed; applying it", self._config_file)
        self._config_file_stamp = stamp
        try:
            self.apply_config(config)
        except ServingError as error:
            logger.error("Ignoring changed model config file %s: %s", self._config_file, error.message)

    # --- config changes ---

    def apply_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Applies a new ModelServerConfig: adds, updates and removes models.

        Returns once the new config's versions are loaded (or failed), as TF
        Serving's ReloadConfig does. The new config replaces discovery from a
        model directory for good, and a config file's until the file changes.

        Raises:
            ServingError: INVALID_ARGUMENT for an invalid config (nothing changes).
        """
        validate_config(config)
        for entry in config.model_config_list.config:
            if scan_versions(self._resolve_base_path(entry.base_path)) is None:
                raise invalid_argument(f"Model {entry.name}: base path {entry.base_path} does not exist")
        with self._update_lock:
            self._fixed_config = config
            self._model_base_dir = None
            self.poll_once()

    def _current_config(self) -> model_server_config_pb2.ModelServerConfig:
        if self._model_base_dir is not None:
            return discover_models(self._model_base_dir)
        return self._fixed_config

    @staticmethod
    def _resolve_base_path(base_path: str) -> pathlib.Path:
        return pathlib.Path(base_path).expanduser().absolute()

    def _sync_entries(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        wanted = {entry.name: entry for entry in config.model_config_list.config}
        for name in list(self._entries):
            entry = self._entries[name]
            if name not in wanted or self._resolve_base_path(wanted[name].base_path) != entry.base_path:
                self._remove_model(name)
        for name, model_config in wanted.items():
            entry = self._entries.get(name)
            if entry is None:
                logger.info("Adding model %s from %s", name, model_config.base_path)
                entry = _ModelEntry(config=model_config, base_path=self._resolve_base_path(model_config.base_path))
                with self._state_lock:
                    self._entries[name] = entry
                    self._retired.pop(name, None)
            else:
                entry.config = model_config
        with self._state_lock:
            self._labels = {name: dict(model_config.version_labels) for name, model_config in wanted.items()}

    def _remove_model(self, name: str) -> None:
        entry = self._entries[name]
        logger.info("Removing model %s", name)
        for version, record in sorted(entry.versions.items()):
            if record.state == State.AVAILABLE:
                self._unload(entry, version)
        with self._state_lock:
            del self._entries[name]
            self._retired[name] = entry.versions
            self._available.pop(name, None)

    # --- polling ---

    def poll_once(self) -> None:
        """Brings every model in line with its policy and the versions on disk."""
        with self._update_lock:
            self._sync_entries(self._current_config())
            for entry in list(self._entries.values()):
                self._poll_model(entry)
            self._notify_availability()

    def _poll_model(self, entry: _ModelEntry) -> None:
        name = entry.config.name
        on_disk = scan_versions(entry.base_path)
        if on_disk is None:
            if not entry.warned_missing:
                logger.warning("Base path %s of model %s does not exist; keeping what is loaded",
                               entry.base_path, name)
                entry.warned_missing = True
            return
        entry.warned_missing = False
        if not on_disk and not entry.warned_empty:
            logger.warning("No versions of servable %s found under base path %s", name, entry.base_path)
        entry.warned_empty = not on_disk
        aspired = aspired_versions(entry.config.model_version_policy, on_disk)

        for version in aspired:  # newest first, so the newest serves soonest
            record = entry.versions.get(version)
            if record is not None and record.state == State.AVAILABLE:
                continue
            fingerprint = _fingerprint(on_disk[version])
            if record is not None and record.error is not None and record.fingerprint == fingerprint:
                continue  # failed before and unchanged since: do not retry every poll
            self._load(entry, version, on_disk[version], fingerprint)

        # Availability preserving: a version leaves only when the versions the
        # policy wants are serving; while one of them is missing (still
        # failing), the newest of the others fill in for it.
        available = {version for version, record in entry.versions.items() if record.state == State.AVAILABLE}
        keep = set(aspired) & available
        fill_ins = sorted(available - keep, reverse=True)[:max(0, len(aspired) - len(keep))]
        keep.update(fill_ins)
        for version in sorted(available - keep):
            self._unload(entry, version)

    def _set_record(self, entry: _ModelEntry, record: _VersionRecord) -> None:
        with self._state_lock:
            entry.versions[record.version] = record

    def _publish(self, entry: _ModelEntry) -> None:
        """Replaces the model's table of serving versions (requests read it lock-free)."""
        servables = {version: record.servable for version, record in entry.versions.items()
                     if record.state == State.AVAILABLE and record.servable is not None}
        with self._state_lock:
            self._available = {**self._available, entry.config.name: servables}
        if self._metrics is not None:
            self._metrics.set_available_versions(entry.config.name, len(servables))

    def _load(self, entry: _ModelEntry, version: int, path: pathlib.Path, fingerprint: tuple) -> None:
        name = entry.config.name
        self._set_record(entry, _VersionRecord(version, State.LOADING, fingerprint=fingerprint))
        logger.info("Loading servable version %s from %s", _servable_id(name, version), path)
        started = time.monotonic()
        try:
            servable = self._load_servable(name, version, path)
        except Exception as error:  # any failure stays with this version
            serving_error = errors.from_exception(error)
            logger.error("Loading servable: %s failed: %s", _servable_id(name, version), serving_error.message)
            self._set_record(entry, _VersionRecord(version, State.END, error=serving_error, fingerprint=fingerprint))
            if self._metrics is not None:
                self._metrics.model_loads.labels(model=name, outcome="failure").inc()
            return
        self._set_record(entry, _VersionRecord(version, State.AVAILABLE, servable=servable, fingerprint=fingerprint))
        self._publish(entry)
        logger.info("Successfully loaded servable version %s in %.2f s",
                    _servable_id(name, version), time.monotonic() - started)
        if self._metrics is not None:
            self._metrics.model_loads.labels(model=name, outcome="success").inc()

    def _unload(self, entry: _ModelEntry, version: int) -> None:
        name = entry.config.name
        record = entry.versions[version]
        logger.info("Unloading servable version %s", _servable_id(name, version))
        self._set_record(entry, dataclasses.replace(record, state=State.UNLOADING))
        self._publish(entry)
        # Requests that already hold the servable finish with it; dropping our
        # reference lets Python free it after the last of them.
        self._set_record(entry, _VersionRecord(version, State.END, fingerprint=record.fingerprint))
        logger.info("Done unloading servable version %s", _servable_id(name, version))

    def _notify_availability(self) -> None:
        with self._state_lock:
            availability = {name: bool(self._available.get(name)) for name in self._entries}
            availability.update({name: False for name in self._retired if name not in availability})
        if availability != self._last_availability:
            self._last_availability = availability
            if self._on_availability_change is not None:
                self._on_availability_change(dict(availability))

    # --- queries ---

    def resolve(self, model_spec: model_pb2.ModelSpec) -> Servable:
        """Finds the servable a request asks for (latest, a version, or a label).

        Raises:
            ServingError: INVALID_ARGUMENT for an empty name or an unknown label;
                NOT_FOUND `Servable not found for request: ...` as TF Serving.
        """
        name = model_spec.name
        if not name:
            raise invalid_argument("ModelSpec.name is empty: a request must name a model")
        with self._state_lock:
            servables = self._available.get(name, {})
            labels = self._labels.get(name, {})
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version_label":
            label = model_spec.version_label
            if label not in labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = labels[label]
        elif choice == "version":
            version = model_spec.version.value
        else:
            if not servables:
                raise not_found(f"Servable not found for request: Latest({name})")
            return servables[max(servables)]
        servable = servables.get(version)
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def model_status(self, model_spec: model_pb2.ModelSpec) -> list[VersionStatus]:
        """The GetModelStatus rows for a model (newest first), as TF Serving reports them.

        Raises:
            ServingError: INVALID_ARGUMENT for an empty name or unknown label,
                NOT_FOUND for an unknown model or version.
        """
        name = model_spec.name
        if not name:
            raise invalid_argument("ModelSpec.name is empty: a request must name a model")
        with self._state_lock:
            entry = self._entries.get(name)
            records = dict(entry.versions) if entry is not None else dict(self._retired.get(name, {}))
            labels = self._labels.get(name, {})
        choice = model_spec.WhichOneof("version_choice")
        if choice in ("version", "version_label"):
            if choice == "version_label":
                if model_spec.version_label not in labels:
                    raise invalid_argument(f"Unrecognized servable version label: {model_spec.version_label}")
                version = labels[model_spec.version_label]
            else:
                version = model_spec.version.value
            if version not in records:
                raise not_found(f"Could not find version {version} of model {name}")
            records = {version: records[version]}
        elif not records:
            raise not_found(f"Could not find any versions of model {name}")
        return [VersionStatus(version, record.state, record.error)
                for version, record in sorted(records.items(), reverse=True)]

    def is_known_model(self, name: str) -> bool:
        """Whether a model is configured now (the metrics label only known names)."""
        with self._state_lock:
            return name in self._entries

    def model_names(self) -> list[str]:
        with self._state_lock:
            return sorted(self._entries)
