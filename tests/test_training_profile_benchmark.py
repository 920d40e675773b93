"""benchmarks/training_profile.py: the trace summary adds up op events by type and name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import training_profile  # noqa: E402


def _trace(path: Path) -> Path:
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    names = {1: "model/dense/MatMul:_MklMatMul", 2: "model/loss/Exp:Exp", 3: "ExecutorState::Process",
             4: "model/lstm/MatMul_1:_MklMatMul"}
    for key, name in names.items():
        plane.event_metadata[key].id = key
        plane.event_metadata[key].name = name
    line = plane.lines.add(name="tf_Compute")
    for key, milliseconds in ((1, 6.0), (2, 2.0), (3, 50.0), (4, 2.0), (1, 4.0)):
        line.events.add(metadata_id=key, duration_ps=int(milliseconds * 1e9))
    space.planes.add(name="/device:GPU:0")  # other planes are not the host's ops
    path.write_bytes(space.SerializeToString())
    return path


def test_op_events_are_summed_per_step_by_type_and_by_name(tmp_path):
    summary = training_profile.summarize_trace(_trace(tmp_path / "t.xplane.pb"), steps=2)
    assert summary["op_ms_per_step"] == 7.0  # (6 + 2 + 2 + 4) / 2; the executor's own event left out
    by_type = {row["op_type"]: row for row in summary["by_type"]}
    assert by_type["_MklMatMul"]["ms_per_step"] == 6.0 and by_type["_MklMatMul"]["calls_per_step"] == 1.5
    assert abs(by_type["Exp"]["share"] - 1 / 7) < 1e-12
    assert summary["by_name"][0] == {"op": "model/dense/MatMul:_MklMatMul", "ms_per_step": 5.0, "share": 5 / 7}


def test_the_report_names_the_machine_and_the_command(tmp_path):
    summary = training_profile.summarize_trace(_trace(tmp_path / "t.xplane.pb"), steps=1)
    report = training_profile.markdown_report({
        "preset": "ptb_small", "cell": "lstm", "precision": "float32", "command": "python x --shape small",
        "machine": {"cpu_model": "Some CPU", "cpu_family_model": "family 6, model 1", "logical_cpus": 2,
                    "flags": {"avx2": True, "amx_bf16": False}},
        "step_ms_untraced": 50.0, "step_ms_traced": 52.0, "tokens_per_step": 400, "trace": summary})
    assert "Some CPU" in report and "flags: avx2." in report and "`python x --shape small`" in report
    assert "| _MklMatMul | 12.00 | 85.7% | 3 |" in report
