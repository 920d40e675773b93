"""--precision: bfloat16 arithmetic where the CPU has it, a float32 model saved either way."""

import json

import keras
import numpy as np
import pytest

import zoo  # noqa: F401  (registers the zoo's classes for load_model)
from training import precision
from training import run as run_module
from training import train as train_cli

from tiny_corpora import write_text


def test_auto_takes_bfloat16_only_where_the_cpu_multiplies_it_natively():
    assert precision.resolve_precision("auto", {"avx2", "fma", "avx512f", "avx512_bf16"}) == "mixed_bfloat16"
    assert precision.resolve_precision("auto", {"avx2", "amx_tile", "amx_bf16"}) == "mixed_bfloat16"
    assert precision.resolve_precision("auto", {"avx2", "fma", "avx512f"}) == "float32"
    assert precision.resolve_precision("auto", set()) == "float32"
    assert precision.resolve_precision("float32", {"avx512_bf16"}) == "float32"
    with pytest.raises(ValueError, match="Unknown precision 'fp8'. Valid precisions: float32, mixed_bfloat16, auto"):
        precision.resolve_precision("fp8")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512_bf16\n\n")
    assert precision.cpu_flags(cpuinfo) == {"fpu", "sse2", "avx2", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") == set()


def test_the_command_lines_precisions_are_the_trainers():
    assert train_cli._PRECISIONS == precision.PRECISIONS


def test_an_unknown_precision_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match="Unknown precision"):
        run_module.resolve_config(task="language_model", training={"precision": "half"}, data={"source": "x"})


def test_a_bfloat16_run_trains_and_saves_a_float32_model(tmp_path):
    data = write_text(tmp_path / "ptb", "ptb.train.txt", "ptb.valid.txt")
    config = run_module.resolve_config(
        task="language_model", cell="lstm", model={"embedding_dim": 8, "hidden_dim": 8},
        training={"batch_size": 4, "num_steps": 5, "epochs": 1, "precision": "mixed_bfloat16"},
        data={"source": str(data)}, output_dir=str(tmp_path / "run"))
    metrics = run_module.train(config, verbose=0)
    assert keras.config.dtype_policy().name == "float32", "the global policy is restored"
    assert np.isfinite(metrics["dev"]["cross_entropy"])
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    policies = {layer.dtype_policy.name for layer in model._flatten_layers()}
    assert policies == {"float32"}
    logits = model(np.array([[2, 3, 4]]))
    assert logits.dtype == "float32"
    assert all(weight.dtype == "float32" for weight in model.weights)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["precision"] == "mixed_bfloat16"
