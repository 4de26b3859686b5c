"""benchmarks/gpu_check.py's logic on CPU: its checks run the Triton kernels under TRITON_INTERPRET=1.

The script itself needs CUDA; here its check functions, failure handling and report writing run
on tiny CPU tensors (tests/conftest.py switches the interpreter on when there is no GPU).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from pyvidgen._backend import triton_interpreted  # noqa: E402
from pyvidgen.ops import OPS  # noqa: E402

pytestmark = pytest.mark.triton

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
DEVICE = torch.device("cuda" if torch.cuda.is_available() and not triton_interpreted() else "cpu")
# Tiny timings for every op the registry holds (one missing would be timed at its large benchmark sizes).
TINY_TIMING_SHAPES = {name: [op.spec.samples.dims[0]] for name, op in OPS.items()}


@pytest.fixture(scope="module")
def gpu_check():
    """The script loaded as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("pyvidgen_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class body is built.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_script_lists_every_declared_op(gpu_check):
    ops = {check.op for factory in gpu_check.CHECKS for check in factory(DEVICE, (torch.float32,), True)}
    assert ops == {name for name, op in OPS.items() if "triton" in op.spec.backends}
    assert ops >= {"flow_warp", "flow_smoothness", "conv_lstm_gates", "multiplicative_unit"}


def test_checks_cover_variants_dtypes_magnitudes_and_autocast(gpu_check):
    op = OPS["conv_lstm_gates"]
    names = [c.name for c in gpu_check.op_checks(op, DEVICE, gpu_check.DTYPES, tiny=False)]
    variants, sizes = len(op.spec.samples.variants), 2
    assert len(names) == variants * (sizes * len(gpu_check.DTYPES) + len(op.spec.samples.magnitudes) - 1 + 2)
    assert any("float64" in n for n in names) and any("magnitude=1e+30" in n for n in names)
    assert any("autocast float16" in n for n in names) and any("(16, 64, 32, 32)" in n for n in names)


def test_tiny_fp32_checks_pass(gpu_check):
    records = gpu_check.run_correctness(DEVICE, dtypes=(torch.float32,), tiny=True, log=lambda line: None)
    expected = sum(
        len(op.spec.samples.variants) * (2 + len(op.spec.samples.magnitudes) - 1)
        for op in OPS.values()
        if "triton" in op.spec.backends
    )
    assert len(records) == expected
    failed = [(r["name"], r.get("parts"), r.get("error")) for r in records if r["status"] != "pass"]
    assert not failed


def test_tiny_bf16_checks_pass(gpu_check):
    """bf16 inputs against the fp32 reference with the loose tolerance (the kernels upcast), and autocast."""
    records = gpu_check.run_correctness(DEVICE, dtypes=(torch.bfloat16,), tiny=True, log=lambda line: None)
    assert any("autocast bfloat16" in r["name"] for r in records)
    failed = [(r["name"], r.get("parts"), r.get("error")) for r in records if r["status"] != "pass"]
    assert not failed


def _first_check(gpu_check, op_name, dims=(1, 2, 5, 7), variant=None):
    op = OPS[op_name]
    return gpu_check._backend_check(op, DEVICE, torch.float32, dims, op.spec.samples.variant(variant), None, seed=0)


def test_a_wrong_kernel_is_caught(gpu_check, monkeypatch):
    """The checks really run the Triton launchers: a perturbed one fails its check."""
    from pyvidgen.kernels.triton import flow_warp as triton_flow_warp

    launcher = triton_flow_warp.flow_warp_fwd
    monkeypatch.setattr(triton_flow_warp, "flow_warp_fwd", lambda *args: launcher(*args) + 1e-3)
    result = _first_check(gpu_check, "flow_warp", variant="border")
    assert not result["ok"] and not result["parts"]["out"]["ok"] and result["parts"]["grad_x"]["ok"]


def test_a_wrong_peephole_gradient_is_caught(gpu_check, monkeypatch):
    """The conv_lstm_gates check compares the peephole gradient too (it is reduced outside the kernel)."""
    from pyvidgen.kernels.triton import conv_lstm_gates as triton_conv_lstm_gates

    launcher = triton_conv_lstm_gates.conv_lstm_gates_bwd

    def perturbed(*args):
        grad_gates, grad_c, grad_peephole = launcher(*args)
        return grad_gates, grad_c, grad_peephole * 1.01

    monkeypatch.setattr(triton_conv_lstm_gates, "conv_lstm_gates_bwd", perturbed)
    result = _first_check(gpu_check, "conv_lstm_gates", (2, 3, 4, 5), "peephole=channel")
    assert not result["ok"] and not result["parts"]["grad_peephole"]["ok"]
    assert all(result["parts"][name]["ok"] for name in ("h", "c_next", "grad_gates", "grad_c"))


def test_a_wrong_multiplicative_unit_is_caught(gpu_check, monkeypatch):
    from pyvidgen.kernels.triton import multiplicative_unit as triton_multiplicative_unit

    launcher = triton_multiplicative_unit.multiplicative_unit_fwd
    monkeypatch.setattr(triton_multiplicative_unit, "multiplicative_unit_fwd", lambda *args: launcher(*args) + 1e-3)
    result = _first_check(gpu_check, "multiplicative_unit")
    assert not result["ok"] and not result["parts"]["out"]["ok"] and result["parts"]["grad_h"]["ok"]


def test_a_wrong_autocast_policy_is_caught(gpu_check, monkeypatch):
    """An op that ignored autocast would hand mixed dtypes to its checks: the autocast check records the failure."""
    op = OPS["multiplicative_unit"]
    monkeypatch.setattr(op, "autocast_arguments", lambda args, device_type: tuple(args))
    with pytest.raises(TypeError, match=r"pre has dtype torch.bfloat16 but h has dtype torch.float32"):
        gpu_check._autocast_check(op, DEVICE, torch.bfloat16, (1, 2, 5, 7), op.spec.samples.variants[0], seed=0)


def test_a_raising_or_failing_check_is_recorded_not_fatal(gpu_check, monkeypatch):
    def broken(device, dtypes, tiny):
        return [
            gpu_check.Check("raises", "x", lambda: 1 / 0),
            gpu_check.Check("wrong", "x", lambda: {"ok": False, "parts": {"out": {"ok": False, "bad": 3}}}),
            gpu_check.Check("right", "x", lambda: {"ok": True, "parts": {}}),
        ]

    def factory_error(device, dtypes, tiny):
        raise RuntimeError("cannot build checks")

    monkeypatch.setattr(gpu_check, "CHECKS", [broken, factory_error])
    records = gpu_check.run_correctness(DEVICE, log=lambda line: None)
    assert [r["status"] for r in records] == ["error", "fail", "pass", "error"]
    assert "ZeroDivisionError" in records[0]["error"] and "cannot build checks" in records[3]["error"]
    skipped = gpu_check.run_correctness(DEVICE, deadline=0.0, log=lambda line: None)
    assert [r["status"] for r in skipped[:3]] == ["skipped"] * 3


def test_execute_writes_the_report(gpu_check, tmp_path, monkeypatch, capsys):
    """The whole script flow with tiny checks and tiny eager-only timings; a failure sets the status."""
    out = tmp_path / "report.json"
    status = gpu_check.execute(
        DEVICE,
        out,
        dtypes=(torch.float32,),
        tiny=True,
        timing_shapes=TINY_TIMING_SHAPES,
        timing_providers=["eager", "grid_sample"],
        sweep_elements=1024,
        sweep_sides=(8,),
        copy_bytes=1 << 20,
    )
    assert status == 0
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["machine"]["torch"] == torch.__version__
    assert report["copy"]["op"] == "copy" and report["copy"]["gbps"] > 0
    swept = {r["op"] for r in report["sweep"] if r["status"] == "ok"}
    assert swept >= {"flow_warp", "conv_lstm_gates", "multiplicative_unit", "flow_smoothness"}
    assert {r["magnitude"] for r in report["sweep"] if r["op"] == "flow_warp"} == {0, 2, 8, 32}
    memory_bound = [r for r in report["sweep"] if r["op"] == "conv_lstm_gates" and r["status"] == "ok"]
    assert memory_bound and all(r["copy_fraction"] > 0 for r in memory_bound)
    assert {(r["op"], r["provider"]) for r in report["timings"] if r["status"] == "ok"} >= {
        ("flow_warp", "eager"),
        ("flow_warp", "grid_sample"),
        ("flow_smoothness", "eager"),
        ("conv_lstm_gates", "eager"),
    }
    assert "PASS" in capsys.readouterr().out

    monkeypatch.setattr(gpu_check, "CHECKS", [lambda d, t, tiny: [gpu_check.Check("bad", "x", lambda: 1 / 0)]])
    assert gpu_check.execute(DEVICE, out, timings=False) == 1
    assert json.loads(out.read_text())["correctness"][0]["status"] == "error"


def test_bandwidth_lines_judge_large_triton_rows_against_the_goal(gpu_check, monkeypatch):
    """Only triton rows of memory-bound ops that move at least 4x the cache get a verdict, against 85%."""
    monkeypatch.setattr(gpu_check, "_cache_bytes", lambda device: 1000)
    base = {"op": "conv_lstm_gates", "shape_label": "16x64x64x64", "mode": "fwd+bwd", "gbps": 3000.0}
    rows = [
        {**base, "provider": "triton", "bytes": 4000, "copy_fraction": 0.9},
        {**base, "provider": "triton", "bytes": 5000, "copy_fraction": 0.5},
        {**base, "provider": "triton", "bytes": 3999, "copy_fraction": 0.1},  # cache-sized: no verdict
        {**base, "provider": "eager", "bytes": 9000, "copy_fraction": 0.1},
        {**base, "provider": "triton", "bytes": 9000, "copy_fraction": None},  # not memory-bound
    ]
    lines = gpu_check.bandwidth_lines(rows, "cpu")
    assert len(lines) == 2 and lines[0].endswith(" MET") and lines[1].endswith("NOT MET")
    assert "90% of copy bandwidth" in lines[0] and "goal >= 85%" in lines[0]


def test_report_name_has_date_and_gpu_slug(gpu_check):
    path = gpu_check.default_report_path("NVIDIA H200 (141 GB)")
    assert path.parent.name == "results" and path.name.endswith("-nvidia-h200-141-gb.json")
    assert path.name.startswith("gpu_check-20")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_main_without_cuda_exits_2(gpu_check, capsys):
    assert gpu_check.main([]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
