"""``pyvidgen bench --shape`` / ``--sweep`` and the copy-bandwidth roofline, on tiny sizes and budgets."""

from __future__ import annotations

import json
import math

import pytest

from pyvidgen.bench import cases, report, roofline, runner, sweep, sweep_report
from pyvidgen.cli.main import main
from pyvidgen.ops._spec import SWEEP_ELEMENTS, SWEEP_SIDES

FAST = {"seconds": 0.01, "min_runs": 3, "rounds": 2, "progress": False}
CPP_OK = not cases.available_backends("cpu")["cpp"]


@pytest.fixture
def small_copy(monkeypatch):
    """A 1 MiB copy row instead of one beyond the last-level cache: the CLI tests time sizes, not the machine."""
    monkeypatch.setattr(roofline, "copy_buffer_bytes", lambda device: 1 << 20)


def _listed(out: str) -> dict[str, list[str]]:
    """``--dry-run``'s "op: n shapes: a, b" lines as {op: [labels]}."""
    listed = {}
    for line in out.splitlines():
        if ": " in line and " shapes: " in line:
            op, rest = line.split(": ", 1)
            listed[op] = rest.split(" shapes: ", 1)[1].split(", ")
    return listed


def test_shape_is_timed_as_given_and_filled(capsys):
    ops = ["--op", "flow_warp", "--op", "draw_read", "--op", "masked_conv2d", "--op", "cross_conv2d"]
    assert main(["bench", *ops, "--shape", "2,3,8,8", "--shape", "1x3x16x16x5", "--dry-run"]) == 2
    assert "--shape 1,3,16,16,5: flow_warp takes 4 dims" in capsys.readouterr().err
    assert main(["bench", *ops, "--shape", "2,3,8,8", "--dry-run"]) == 0
    listed = _listed(capsys.readouterr().out)
    # Entries past B, C, H, W come from each op's first benchmark shape.
    assert listed == {
        "flow_warp": ["2x3x8x8"],
        "draw_read": ["2x3x8x8x12"],
        "masked_conv2d": ["2x3x8x8x64x7"],
        "cross_conv2d": ["2x3x8x8x5x5"],
    }
    assert main(["bench", "--op", "draw_read", "--shape", "2,3,8,8,4", "--shape", "1,1,5,7", "--dry-run"]) == 0
    assert _listed(capsys.readouterr().out) == {"draw_read": ["2x3x8x8x4", "1x1x5x7x12"]}


@pytest.mark.parametrize("text", ["2,3,x,8", "2,3,8", "2,3,0,8", "", "2,,3,8"])
def test_bad_shape_text(text, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--op", "flow_warp", "--shape", text, "--dry-run"])
    assert exc.value.code == 2
    assert "argument --shape" in capsys.readouterr().err


def test_bad_combinations(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--shape", "1,2,8,8", "--sweep", "--dry-run"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main(["bench", "--sweep-elements", "64", "--dry-run"]) == 2
    assert "--sweep-elements applies to --sweep only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--sweep", "--sweep-elements", "0", "--dry-run"])
    assert "argument --sweep-elements" in capsys.readouterr().err


def test_sweep_point_list(capsys):
    assert main(["bench", "--sweep", "--quick", "--sweep-elements", "4096", "--dry-run"]) == 0
    out = capsys.readouterr().out
    listed = _listed(out)
    assert set(listed) == set(cases.REGISTRY)
    expected = {
        # sides x channels x magnitudes
        "flow_warp": 5 * 2 * 4,
        "flow_smoothness": 5,
        "conv_lstm_gates": 10,
        "multiplicative_unit": 10,
        "cross_conv2d": 10,
        "masked_conv2d": 4,
        "draw_read": 4,
        "draw_write": 4,
    }
    assert {op: len(labels) for op, labels in listed.items()} == expected
    # The count up front; compiled providers are left out of a sweep unless named.
    assert f"sweep: {sum(expected.values())} points" in out and "compiled" not in out.splitlines()[0]
    assert "1x3x32x32/m=0" in listed["flow_warp"] and "2x2x32x32" in listed["flow_smoothness"]


@pytest.mark.parametrize("elements", [SWEEP_ELEMENTS, 4096])
def test_sweep_dims_keep_the_element_budget(elements):
    for entry in cases.REGISTRY.values():
        bench = entry.bench
        assert bench.sweep is not None, entry.name
        points = sweep.sweep_points(entry, elements)
        assert len(points) == len(bench.sweep_sides) * len(bench.sweep_channels) * max(1, len(bench.sweep_magnitudes))
        assert set(bench.sweep_sides) <= set(SWEEP_SIDES)
        for point in points:
            tags = point.tags
            batch, channels, height, width = point.dims[:4]
            assert (height, width, channels) == (tags["side"], tags["side"], tags["channels"])
            assert tags["elements"] == batch * channels * height * width
            if channels * height * width <= elements:
                assert elements / 2 < tags["elements"] <= elements, (entry.name, point.label)
            else:
                assert batch == 1, (entry.name, point.label)  # one image is over the budget on its own
    # Channel counts: free ones at 3 and 32; a flow has 2.
    assert cases.get("flow_warp").bench.sweep_channels == (3, 32)
    assert cases.get("flow_smoothness").bench.sweep_channels == (2,)


def test_flow_warp_sweep_magnitudes():
    entry = cases.get("flow_warp")
    points = sweep.sweep_points(entry, elements=3 * 16 * 16, sides=(16,))
    assert [p.tags.get("magnitude") for p in points] == [0.0, 2.0, 8.0, 32.0] * 2
    assert points[2].label == "1x3x16x16/m=8"
    for point in points[:4]:
        work = runner.make_workload(entry, point, "forward", "cpu")
        flow = work.args[1].abs()
        # Uniform in [-m, m] pixels: 512 draws reach 0.9 m (all staying below has probability 0.9^512).
        assert float(flow.max()) <= point.magnitude
        assert float(flow.max()) >= 0.9 * point.magnitude
    # Without a magnitude, the op's typical one (3 pixels).
    work = runner.make_workload(entry, cases.Shape((1, 3, 16, 16)), "forward", "cpu")
    assert 2.7 <= float(work.args[1].abs().max()) <= 3.0


@pytest.fixture(scope="module")
def sweep_rows():
    entry = cases.get("flow_warp")
    points = [p for p in sweep.sweep_points(entry, elements=3 * 8 * 8, sides=(4, 8)) if p.tags["channels"] == 3]
    return runner.run(["flow_warp"], shapes={"flow_warp": points}, providers=["eager", "cpp"], device="cpu", **FAST)


def test_sweep_rows_and_report(sweep_rows, tmp_path):
    ok = [r for r in sweep_rows if r["status"] == "ok"]
    assert len(sweep_rows) == 2 * 4 * 2 * 2  # sides x magnitudes x modes x providers
    for row in ok:
        assert {"side", "channels", "magnitude", "elements"} <= set(row)
        assert row["ns_per_element"] == pytest.approx(row["ms"] * 1e6 / row["elements"])
        assert row["shape_label"].endswith(f"/m={row['magnitude']:g}")
    table = report.format_table(sweep_rows)
    header = table.splitlines()[0].split()
    assert header[4:8] == ["side", "C", "mag", "elements"] and header[-1] == "ns/elem"
    lines = sweep_report.spread_lines(sweep_rows)
    assert any(line.startswith("ns/elem across sides: flow_warp forward eager varies up to") for line in lines)
    if CPP_OK:
        assert any("flow_warp fwd+bwd cpp" in line and "(goal <= 1.5x)" in line for line in lines)
    path = sweep_report.plot_sweep(sweep_rows, tmp_path / "sweep.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_copy_row_and_fraction():
    copy = roofline.copy_row("cpu", 1 << 20, [1.0, 2.0, 3.0])  # a fake timing: median 2 ms
    assert copy["op"] == "copy" and copy["ms"] == 2.0 and copy["bytes"] == 2 << 20
    assert copy["gbps"] == pytest.approx((2 << 20) / 2e-3 / 1e9)
    base = {"device": "cpu", "status": "ok", "provider": "cpp", "mode": "fwd+bwd", "ms": 1.0, "iqr": None}
    rows = [
        {**base, "op": "conv_lstm_gates", "shape_label": "16x64x32x32", "gbps": 0.8 * copy["gbps"]},
        {**base, "op": "multiplicative_unit", "shape_label": "16x128x64x64", "gbps": 0.5 * copy["gbps"]},
        {**base, "op": "multiplicative_unit", "shape_label": "4x256x16x16", "gbps": 0.5 * copy["gbps"]},
        {**base, "op": "masked_conv2d", "shape_label": "16x64x32x32x64x7/A", "gbps": 3.0},  # not memory-bound
        {**base, "op": "flow_warp", "shape_label": "1x2x6x6", "status": "skipped", "gbps": None, "ms": None},
    ]
    roofline.annotate(rows, copy)
    assert [r.get("copy_fraction") for r in rows] == [pytest.approx(0.8), pytest.approx(0.5), 0.5, None, None]
    goals = roofline.goal_lines(rows)
    assert goals == [
        "target conv_lstm_gates 16x64x32x32 fwd+bwd on cpu: cpp at 80% of copy bandwidth (goal >= 75%) MET",
        "target multiplicative_unit 16x128x64x64 fwd+bwd on cpu: cpp at 50% of copy bandwidth (goal >= 75%) NOT MET",
    ]
    table = report.format_table([copy, *rows])
    assert table.splitlines()[0].split()[-2:] == ["%", "copy"]
    assert any(line.startswith("copy") and line.split()[-1] == "100" for line in table.splitlines())
    assert "copy bandwidth 1.0 GB/s" in table and goals[0] in table


def test_memory_bound_declarations():
    bound = {name for name, entry in cases.REGISTRY.items() if entry.bench.memory_bound}
    assert bound == {"flow_warp", "flow_smoothness", "conv_lstm_gates", "multiplicative_unit"}
    for name in ("conv_lstm_gates", "multiplicative_unit"):
        entry = cases.get(name)
        labels = {s.label for s in entry.shapes}
        target = next(s for s in entry.shapes if s.target)
        assert set(entry.bench.copy_goal.shapes) <= labels and target.label in entry.bench.copy_goal.shapes
        # The 4x shape: four times the target's elements, not in the quick subset.
        (big,) = [s for s in entry.shapes if s.label in entry.bench.copy_goal.shapes and s != target]
        assert math.prod(big.dims) == 4 * math.prod(target.dims) and not big.quick


def test_measure_copy():
    copy = roofline.measure_copy("cpu", nbytes=1 << 20, runs=3, warmup=1)
    assert copy["status"] == "ok" and copy["runs"] == 3 and copy["bytes"] == 2 << 20 and copy["gbps"] > 0
    assert roofline.copy_buffer_bytes("cpu") >= max(128 << 20, 4 * (roofline._llc_bytes() or 0)) or (
        roofline.copy_buffer_bytes("cpu") == roofline.COPY_MAX_BYTES
    )


def test_cli_shape_run_has_copy_row(tmp_path, capsys, small_copy):
    argv = ["bench", "--op", "flow_smoothness", "--shape", "1,2,8,8", "--mode", "forward", "--out", str(tmp_path)]
    assert main([*argv, "--provider", "eager", "--provider", "cpp", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "flow_smoothness  1x2x8x8" in out and "% copy" in out and "copy bandwidth" in out
    payload = json.loads((tmp_path / "bench.json").read_text())
    assert payload["rows"][0]["op"] == "copy" and payload["rows"][0]["bytes"] == 2 << 20
    smooth = [r for r in payload["rows"] if r["op"] == "flow_smoothness" and r["status"] == "ok"]
    assert smooth and all(r["copy_fraction"] == pytest.approx(r["gbps"] / payload["rows"][0]["gbps"]) for r in smooth)


def test_cli_sweep_writes_table_json_and_plot(tmp_path, capsys, small_copy):
    argv = ["bench", "--op", "flow_smoothness", "--sweep", "--quick", "--sweep-elements", "64", "--mode", "forward"]
    assert main([*argv, "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sweep: 5 points (flow_smoothness 5) x 1 modes")
    assert "ns/elem across sides: flow_smoothness forward eager" in out
    payload = json.loads((tmp_path / "bench.json").read_text())
    sides = sorted({r["side"] for r in payload["rows"] if r["op"] == "flow_smoothness"})
    assert sides == list(SWEEP_SIDES)
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
