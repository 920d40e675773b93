"""What a run directory was made from, so that a run never mixes two corpora or configs.

Every run writes `run.json` before it trains:

    {"config": {...},                      the resolved config that shapes the model and data
     "data": {"source": ..., "train": {"fingerprint": ..., "size": ...},
              "dev": {"fingerprint": ..., "size": ...}}}

The fingerprints are SHA-256 digests of the train and dev splits as the run
reads them (tokens, labels, tags), so a corpus edited in place, or another
corpus under the same path, is caught as surely as a different `--data`.

Starting a run into a directory then goes one of three ways:

- the directory is new or empty: a fresh run;
- its `run.json` matches: the same run, which resumes from its last finished
  epoch if it has a backup (the vocabularies are reloaded, so ids stay the
  same), and otherwise trains again from scratch;
- anything else (another corpus, another config, or files this version cannot
  identify): `RunDirectoryError`, naming both sides and the way out (a new
  `--output_dir`, or `--overwrite` to replace the old run).

The number of epochs is left out of the identity: running the same command with
a larger `--epochs` continues a run, as users expect of a resume.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

MANIFEST = "run.json"
BACKUP = "backup"
# Config entries that do not change what a run's files mean.
_UNIDENTIFYING = {"output_dir", "command"}
_UNIDENTIFYING_TRAINING = {"epochs"}
_UNIDENTIFYING_DATA = {"data_dir", "download"}


class RunDirectoryError(ValueError):
    """A run directory holds another run than the one asked for."""


def split_fingerprint(split) -> dict:
    """SHA-256 of a split's contents (tokens, sentences, labels, tags) and its size."""
    digest = hashlib.sha256()
    for field in ("tokens", "sentences", "labels", "label_names", "tags"):
        if hasattr(split, field):
            digest.update(field.encode())
            # One JSON document per field: unambiguous, and fast enough for PTB's
            # 930k tokens (about 0.3 s).
            digest.update(json.dumps(getattr(split, field), ensure_ascii=False).encode("utf-8"))
    size = len(split.tokens) if hasattr(split, "tokens") else len(split.sentences)
    return {"fingerprint": digest.hexdigest(), "size": size}


def identity(config: dict, train_split, dev_split) -> dict:
    """What `run.json` records for a run of `config` on these splits."""
    identifying = {key: value for key, value in config.items() if key not in _UNIDENTIFYING}
    identifying["training"] = {key: value for key, value in config["training"].items()
                               if key not in _UNIDENTIFYING_TRAINING}
    identifying["data"] = {key: value for key, value in config["data"].items()
                           if key not in _UNIDENTIFYING_DATA}
    return {"config": identifying,
            "data": {"source": config["data"]["source"],
                     "train": split_fingerprint(train_split), "dev": split_fingerprint(dev_split)}}


def read_identity(run_dir: Path) -> dict | None:
    """The `run.json` of a run directory, or None if it has none."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RunDirectoryError(f"{path} cannot be read ({error}); give a new --output_dir, or "
                                "--overwrite to replace that run.") from error


def write_identity(run_dir: Path, value: dict) -> None:
    (Path(run_dir) / MANIFEST).write_text(json.dumps(value, indent=2, sort_keys=True) + "\n",
                                          encoding="utf-8")


def is_resumable(run_dir: Path) -> bool:
    """Whether a run directory holds a backup of finished epochs to resume from."""
    return (Path(run_dir) / BACKUP).exists()


def prepare(run_dir: Path, wanted: dict, *, overwrite: bool = False) -> bool:
    """Checks that `run_dir` may hold the run `wanted` describes; clears it for a fresh run.

    Returns:
        True when the run resumes from a backup of the same run, False for a
        fresh run (the directory then holds nothing of an earlier run).

    Raises:
        RunDirectoryError: the directory holds another run, or files that do
            not say what they are, and `overwrite` is not set.
    """
    run_dir = Path(run_dir)
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return False
    found = read_identity(run_dir)
    if found is None:
        raise RunDirectoryError(
            f"{run_dir} already holds files ({_listing(run_dir)}) and no {MANIFEST} saying what "
            "they were made from, so this run cannot tell whether they are its own. Give a new "
            "--output_dir, or --overwrite to replace them.")
    differences = describe_differences(found, wanted)
    if differences:
        raise RunDirectoryError(
            f"{run_dir} holds another run: " + "; ".join(differences) + ". Give a new "
            "--output_dir for this one, or --overwrite to replace the old run.")
    if is_resumable(run_dir):
        return True
    clear(run_dir)
    return False


def clear(run_dir: Path) -> None:
    """Removes everything in a run directory (which stays)."""
    for path in Path(run_dir).iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def describe_differences(found: dict, wanted: dict) -> list[str]:
    """Human-readable differences between two identities: 'old' then 'new'."""
    differences = []
    old_data, new_data = found.get("data", {}), wanted["data"]
    if old_data.get("source") != new_data["source"]:
        differences.append(f"it was trained on {old_data.get('source')!r}, this command trains "
                           f"on {new_data['source']!r}")
    for split in ("train", "dev"):
        old, new = old_data.get(split, {}), new_data[split]
        if old.get("fingerprint") != new["fingerprint"] and old_data.get("source") == new_data["source"]:
            differences.append(
                f"its {split} split ({old.get('size')} items, sha256 {str(old.get('fingerprint'))[:12]}) "
                f"differs from this one ({new['size']} items, sha256 {new['fingerprint'][:12]})")
    for key, old, new in _config_changes(found.get("config", {}), wanted["config"]):
        if key in ("data.source",):
            continue
        differences.append(f"{key} was {json.dumps(old)}, now {json.dumps(new)}")
    return differences


def _config_changes(old: dict, new: dict, prefix: str = ""):
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            yield from _config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            yield f"{prefix}{key}", a, b


def _listing(run_dir: Path, limit: int = 4) -> str:
    names = sorted(path.name for path in run_dir.iterdir())
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
