"""pyvidgen.bench: the runner on tiny shapes, the table, JSON/PNG output and the ``bench`` command."""

from __future__ import annotations

import json

import pytest
import torch

import pyvidgen
from pyvidgen._backend import available_backends
from pyvidgen.bench import cases, report, runner
from pyvidgen.cli.main import main

TINY = {"flow_warp": [(1, 2, 6, 6)], "flow_smoothness": [(1, 2, 6, 6)]}
FAST = {"seconds": 0.01, "min_runs": 3, "rounds": 2, "progress": False}
CPP_OK = not cases.available_backends("cpu")["cpp"]


@pytest.fixture(scope="module")
def rows():
    providers = ["eager", "grid_sample", "cpp", "triton"]
    return runner.run(list(TINY), shapes=TINY, providers=providers, device="cpu", **FAST)


def _row(rows, op, mode, provider):
    (row,) = [r for r in rows if (r["op"], r["mode"], r["provider"]) == (op, mode, provider)]
    return row


def test_rows(rows):
    # flow_warp: eager, grid_sample, cpp, triton; flow_smoothness has no grid_sample; both modes.
    assert len(rows) == 2 * 4 + 2 * 3
    for op in TINY:
        for mode in cases.MODES:
            eager = _row(rows, op, mode, "eager")
            assert eager["status"] == "ok" and eager["ms"] > 0 and eager["runs"] >= FAST["min_runs"]
            assert eager["speedup"]["eager"] == 1.0 and eager["max_abs_diff"] == 0.0
            assert eager["shape"] == list(TINY[op][0]) and eager["dtype"] == "float32"
            triton = _row(rows, op, mode, "triton")
            assert triton["status"] == "skipped" and triton["ms"] is None and triton["reason"]
            if CPP_OK:
                cpp = _row(rows, op, mode, "cpp")
                assert cpp["status"] == "ok" and cpp["max_abs_diff"] < 1e-4
                assert cpp["speedup"]["eager"] == pytest.approx(eager["ms"] / cpp["ms"])
    grid = _row(rows, "flow_warp", "fwd+bwd", "grid_sample")
    assert set(grid["speedup"]) == {"eager", "grid_sample"}


def test_bytes_moved(rows):
    """x, flow and out are 72 floats each: forward 3 tensors; fwd+bwd adds grad_out, 2 inputs re-read, 2 grads."""
    forward = _row(rows, "flow_warp", "forward", "eager")
    assert forward["bytes"] == 3 * 72 * 4
    assert forward["gbps"] == pytest.approx(forward["bytes"] / (forward["ms"] * 1e-3) / 1e9)
    assert _row(rows, "flow_warp", "fwd+bwd", "eager")["bytes"] == (3 + 1 + 2 + 2) * 72 * 4
    # flow_smoothness: one input of 72 floats, a scalar output.
    assert _row(rows, "flow_smoothness", "forward", "eager")["bytes"] == 72 * 4 + 4


def test_table(rows):
    table = report.format_table(rows)
    header = table.splitlines()[0].split()
    assert header[:4] == ["op", "shape", "mode", "provider"]
    assert "vs grid_sample" in table and "vs eager" in table and header[-1] == "GB/s"
    assert "flow_smoothness  1x2x6x6" in table
    assert "not measured: triton" in table
    # The flow_smoothness rows have no grid_sample baseline: "-" in that column.
    smooth = [line for line in table.splitlines() if line.startswith("flow_smoothness")]
    assert smooth and all(" - " in line for line in smooth)
    assert report.format_table([]).startswith("(no measurements)")


def test_json_and_png(rows, tmp_path):
    paths = report.save(rows, tmp_path / "out")
    payload = json.loads(paths["json"].read_text())
    assert payload["machine"]["torch"] == torch.__version__ and payload["machine"]["cpu_threads"] >= 1
    assert len(payload["rows"]) == len(rows)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_target_lines():
    base = {"op": "flow_warp", "shape_label": "16x64x64x64", "mode": "fwd+bwd", "device": "cpu", "target": True}
    rows = [{**base, "provider": "cpp", "status": "ok", "speedup": {"grid_sample": 3.5, "grid_sample_compiled": 0.9}}]
    lines = report.target_lines(rows)
    assert any("cpp vs grid_sample 3.50x (goal >= 3.00x) MET" in line for line in lines)
    assert any("cpp vs grid_sample_compiled 0.90x (goal >= 1.00x) NOT MET" in line for line in lines)


def test_a_failing_provider_is_recorded(monkeypatch):
    class Broken(cases.OpBench):
        """flow_smoothness whose own kernel raises."""

        @property
        def name(self) -> str:
            return "broken_op"

        def op(self, *args):
            raise RuntimeError("kernel exploded")

    smoothness = cases.get("flow_smoothness")
    entry = Broken(smoothness.declared, smoothness.bench)
    monkeypatch.setitem(cases.REGISTRY, "broken_op", entry)
    rows = runner.run(
        ["broken_op"], shapes={"broken_op": [(1, 2, 4, 4)]}, modes=["forward"], providers=["eager", "cpp"], **FAST
    )
    by_provider = {r["provider"]: r for r in rows}
    assert by_provider["eager"]["status"] == "ok"
    if CPP_OK:
        assert by_provider["cpp"]["status"] == "error" and "kernel exploded" in by_provider["cpp"]["reason"]
        assert "FAILED: cpp" in report.format_table(rows)


def test_channels_last_inputs():
    """--channels-last feeds every provider channels_last inputs and gradients, in rows labelled apart; the op
    that keeps the layout returns it, and every provider computes the reference's values."""
    shapes = {"multiplicative_unit": [(1, 3, 5, 6)]}
    rows = runner.run(["multiplicative_unit"], shapes=shapes, providers=["eager", "cpp"], channels_last=True, **FAST)
    assert rows and all(r["layout"] == "channels_last" and r["shape_label"].endswith(" channels_last") for r in rows)
    assert all(r["status"] == "ok" for r in rows if r["provider"] == "eager" or CPP_OK)
    assert all(r["max_abs_diff"] < 1e-5 for r in rows if r["status"] == "ok" and r["mode"] == "forward")
    work = runner.make_workload(
        cases.get("multiplicative_unit"), cases.Shape((1, 3, 5, 6)), "fwd+bwd", "cpu", channels_last=True
    )
    assert all(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous() for t in work.tensors)
    assert all(g.is_contiguous(memory_format=torch.channels_last) for g in work.grad_outputs)
    assert main(["bench", "--layers", "--channels-last"]) == 2


def test_deadline_skips_groups():
    rows = runner.run(["flow_smoothness"], shapes=TINY, modes=["forward"], deadline=0.0, **FAST)
    assert rows and all(r["status"] == "skipped" and r["reason"] == "time budget exhausted" for r in rows)


def test_bad_arguments():
    with pytest.raises(ValueError, match="no benchmark registered for op 'nope'"):
        runner.run(["nope"], progress=False)
    with pytest.raises(ValueError, match="unknown mode"):
        runner.run(["flow_warp"], modes=["sideways"], progress=False)
    with pytest.raises(ValueError, match="unknown provider"):
        cases.provider(cases.get("flow_smoothness"), "grid_sample", "cpu")


def test_registry_entries():
    for entry in cases.REGISTRY.values():
        assert any(s.quick for s in entry.shapes) and any(s.target for s in entry.shapes)
        kernels = [b for b in ("cpp", "triton") if b in entry.declared.spec.backends]
        assert entry.providers()[:2] == ["eager", "compiled"] and entry.providers()[-len(kernels) :] == kernels
        dims = entry.declared.spec.samples.dims[0]
        inputs = entry.make_inputs(dims, torch.device("cpu"), torch.float32, torch.Generator())
        assert all(t.dtype == torch.float32 for t in inputs if isinstance(t, torch.Tensor))
        assert entry.shape_doc and set(entry.options()) == set(entry.declared.option_names)
    assert cases.get("flow_warp").providers() == [
        "eager",
        "compiled",
        "grid_sample",
        "grid_sample_compiled",
        "cpp",
        "triton",
    ]


def test_cli(tmp_path, capsys):
    argv = ["bench", "--op", "flow_smoothness", "--quick", "--mode", "forward", "--out", str(tmp_path)]
    assert main([*argv, "--provider", "eager", "--provider", "cpp", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "flow_smoothness  16x2x64x64  forward" in out and "median ms" in out
    assert (tmp_path / "bench.json").exists() and (tmp_path / "bench.png").exists()
    assert json.loads((tmp_path / "bench.json").read_text())["machine"]["cpu_tensor_cache"] is False
    assert main(["bench", "--op", "nope", "--out", str(tmp_path), "--no-progress"]) == 2


@pytest.mark.skipif(bool(available_backends("cpu")["cpp"]), reason="the C++ extension (and its cache) is not built")
def test_cli_cache_cpu_tensors_is_recorded_and_undone(tmp_path):
    argv = ["bench", "--op", "flow_smoothness", "--quick", "--mode", "forward", "--out", str(tmp_path)]
    assert main([*argv, "--provider", "cpp", "--no-progress", "--cache-cpu-tensors"]) == 0
    assert json.loads((tmp_path / "bench.json").read_text())["machine"]["cpu_tensor_cache"] is True
    assert pyvidgen.output_cache_info()["all_cpu_tensors"] == 0


@pytest.mark.slow
def test_compiled_provider():
    """torch.compile warm-up (tens of seconds on a small CPU): compiled rows are timed and correct."""
    rows = runner.run(["flow_smoothness"], shapes=TINY, providers=["eager", "compiled"], **FAST)
    for row in rows:
        assert row["status"] == "ok", row
    compiled = [r for r in rows if r["provider"] == "compiled"]
    assert len(compiled) == 2 and all(r["max_abs_diff"] < 1e-4 for r in compiled)


def test_cli_info_and_check(capsys):
    from pyvidgen.cli.main import main

    assert main(["info"]) == 0
    assert "backend in force: auto" in capsys.readouterr().out
    assert main(["check", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "flow_warp" in out and "flow_smoothness" in out
    assert "all backends agree with the reference" in out or "nothing to check" in out
