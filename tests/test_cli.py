"""Every command: `--help` works and names the command, and building a parser imports no TensorFlow.

Every command parses its arguments before TensorFlow (about 5 s to import) is
imported, so `--help` and argument errors answer at once. The checks run in
fresh subprocesses, since the test process may have imported TensorFlow already.
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# command -> the module holding its build_parser() and main()
COMMANDS = {
    "rnn-zoo-train": "training.train",
    "rnn-zoo-evaluate": "training.evaluate",
    "rnn-zoo-export": "serving.export.cli",
    "rnn-zoo-serve": "serving.server.cli",
    "rnn-zoo-client": "serving.client.cli",
    "rnn-zoo-generate": "serving.generation.cli",
    "rnn-zoo-generation-quality": "serving.generation.quality.cli",
    "rnn-zoo-demo": "serving.demo",
    "rnn-zoo-diagnose": "training.diagnostics.cli",
    "rnn-zoo-ensemble": "training.ensemble",
}
HEAVY_MODULES = ("tensorflow", "keras", "zoo", "tensorflow_serving", "grpc")


def _run(command, timeout=60):
    return subprocess.run(command, cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_names_the_command(command):
    executable = BIN / command  # the entry point pyproject.toml declares, installed by `pip install -e .`
    assert executable.exists(), f"{command} is not installed: pip install -e ."
    completed = _run([str(executable), "--help"])
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.startswith(f"usage: {command} ")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_argument_error_names_the_command(command):
    completed = _run([sys.executable, "-m", COMMANDS[command], "--no_such_flag"])
    assert completed.returncode == 2
    assert completed.stderr.startswith(f"usage: {command} ") and f"\n{command}: error: " in completed.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_building_the_parser_imports_no_tensorflow(command):
    module = COMMANDS[command]
    script = (f"import sys, {module} as cli; cli.build_parser(); "
              f"print(sorted(name for name in {HEAVY_MODULES!r} if name in sys.modules))")
    completed = _run([sys.executable, "-c", script])
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "[]", f"{module} imports {completed.stdout.strip()}"
