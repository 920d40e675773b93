"""Shared test setup: quiet TensorFlow, and a check that the suite writes nothing into the checkout."""

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# hypothesis keeps caches in ./.hypothesis unless told otherwise; the checkout must stay as it was.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "rnn-zoo-hypothesis"))

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
# What installing and running pytest itself writes; everything else must stay as it was.
_NOT_CHECKED = {".git", ".venv", ".pytest_cache", "__pycache__"}


def checkout_snapshot(root: Path = REPOSITORY_ROOT) -> dict[str, tuple[int, int]]:
    """Every file under `root` (less the tool folders above): path -> (size, mtime in ns)."""
    snapshot = {}
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [name for name in subdirectories
                             if name not in _NOT_CHECKED and not name.endswith(".egg-info")]
        for name in files:
            path = Path(directory) / name
            status = path.stat()
            snapshot[str(path.relative_to(root))] = (status.st_size, status.st_mtime_ns)
        for name in subdirectories:  # an empty directory left behind counts too
            path = Path(directory) / name
            snapshot[str(path.relative_to(root)) + "/"] = (0, 0)
    return snapshot


def checkout_changes(before: dict, after: dict) -> list[str]:
    """Paths added, removed or rewritten between two snapshots, each with what happened."""
    changes = [f"added {path}" for path in sorted(set(after) - set(before))]
    changes += [f"removed {path}" for path in sorted(set(before) - set(after))]
    changes += [f"rewrote {path}" for path in sorted(set(before) & set(after)) if before[path] != after[path]]
    return changes


def pytest_sessionstart(session):
    session.config._checkout_before = checkout_snapshot()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_checkout_before", None)
    if before is None:
        return
    changes = checkout_changes(before, checkout_snapshot())
    if changes:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "The tests changed the checkout (they must write only to temporary directories):\n  " \
            + "\n  ".join(changes[:20])
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
