"""The model benchmark: the usual ops equal the fused ones, the substitution hook, the usual models, the rows."""

from __future__ import annotations

import pytest
import torch

import pyvidgen.bench.models as bench_models
from pyvidgen._backend import backend
from pyvidgen.bench.model_step import PROBLEMS
from pyvidgen.bench.models import MODELS, time_model, time_models
from pyvidgen.bench.models_report import format_models_table
from pyvidgen.bench.usual import USUAL_OPS, UsualConvLSTM, fused_names, usual_model, usual_ops
from pyvidgen.nn import ConvLSTM
from pyvidgen.ops import OPS, _define, flow_smoothness, flow_warp
from pyvidgen.ops._define import substituted

# Tiny problems: a step takes milliseconds.
TINY = {
    "st-ae": {"batch": 2, "seq_len": 3, "size": 16},
    "vpn": {"batch": 2, "seq_len": 3, "size": 16},
    "draw": {"batch": 2, "glimpses": 3, "encoder_size": 16, "decoder_size": 16, "z_size": 4, "height": 28, "width": 28},
    "cross-conv": {"batch": 2, "size": 16},
}
FAST = {"seconds": 0.02, "min_runs": 1, "rounds": 1}
CASES = [(name, v.name) for name, op in OPS.items() for v in op.spec.samples.variants]


def _outputs_and_grads(fn, args, positions, seed=2):  # noqa: ANN001, ANN202
    leaves = [args[p].detach().clone().requires_grad_() for p in positions]
    call = list(args)
    for p, leaf in zip(positions, leaves, strict=True):
        call[p] = leaf
    outputs = fn(*call)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    gen = torch.Generator().manual_seed(seed)
    grad_outputs = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outputs]
    return outputs, torch.autograd.grad(outputs, leaves, grad_outputs)


def test_every_op_has_a_usual_version():
    assert set(USUAL_OPS) == set(OPS)


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}[{v}]" for n, v in CASES])
def test_usual_op_equals_fused_op(name, variant):
    """Forward and every input gradient, float32, within the op's own tolerance (masked_conv2d: A, B, 3 colour
    groups; flow_warp: every padding mode, pixels and normalised)."""
    op = OPS[name]
    args = op.sample(op.spec.samples.check_dims, variant=variant, generator=torch.Generator().manual_seed(1))
    positions = [p for p in op.tensor_positions if args[p] is not None]
    with backend("auto"):
        fused, fused_grads = _outputs_and_grads(op, args, positions)
    usual, usual_grads = _outputs_and_grads(USUAL_OPS[name], args, positions)
    for output, a, b in zip(op.output_names, fused, usual, strict=True):
        torch.testing.assert_close(b, a, **op.tolerance(output, args, torch.float32), msg=f"{name} {output}")
    for p, a, b in zip(positions, fused_grads, usual_grads, strict=True):
        argument = op.arguments[p].name
        torch.testing.assert_close(b, a, **op.tolerance(f"grad_{argument}", args, torch.float32), msg=argument)


def test_substituted_nests_and_restores_on_exit_and_on_exception():
    flow = torch.randn(1, 2, 4, 5)
    real = float(flow_smoothness(flow))
    seen = []

    def outer(flow, delta):  # noqa: ANN001, ANN202
        seen.append(("outer", delta))
        return torch.tensor(1.0)

    with substituted({"flow_smoothness": outer}):
        assert float(flow_smoothness(flow, delta=0.5)) == 1.0
        with substituted({"flow_smoothness": lambda flow, delta: torch.tensor(2.0)}):
            assert float(flow_smoothness(flow)) == 2.0
        assert float(flow_smoothness(flow)) == 1.0
        with pytest.raises(RuntimeError, match="boom"), substituted({"flow_smoothness": lambda *a: torch.tensor(3.0)}):
            raise RuntimeError("boom")
        assert float(flow_smoothness(flow)) == 1.0
        # The substitute gets checked arguments: a bad call still fails as the op's would.
        with pytest.raises(ValueError):
            flow_smoothness(flow, delta=-1.0)
    assert seen == [("outer", 0.5), ("outer", 1.0), ("outer", 1.0)]
    assert _define._SUBSTITUTES == {} and float(flow_smoothness(flow)) == real
    with pytest.raises(ValueError, match="not declared ops"), substituted({"nope": outer}):
        pass


def test_usual_ops_bypass_the_custom_ops():
    x, flow = torch.randn(1, 3, 6, 7), torch.randn(1, 2, 6, 7)
    with usual_ops(), torch.profiler.profile() as prof:
        flow_warp(x, flow)
    keys = {e.key for e in prof.key_averages()}
    assert "aten::grid_sampler_2d" in keys and "usual::flow_warp" in keys
    assert not any(k.startswith("pyvidgen::") for k in keys)
    assert _define._SUBSTITUTES == {}


@pytest.mark.parametrize("name", MODELS)
def test_usual_model_runs_no_pyvidgen_op(name):
    spec = PROBLEMS[name](**TINY[name])
    model, _ = usual_model(spec.base)
    with usual_ops(), torch.profiler.profile() as prof:
        spec.loss_fn(model).backward()
    keys = {e.key for e in prof.key_averages()}
    assert not [k for k in keys if "pyvidgen" in k], name
    assert any(k.startswith("usual::") for k in keys)
    if name == "st-ae":
        assert {"aten::grid_sampler_2d", "aten::grid_sampler_2d_backward", "usual::conv_lstm_cell"} <= keys


def test_usual_model_swaps_the_conv_lstm_only_where_naive_can_reproduce_it():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {
            "same": ConvLSTM(3, [4, 5], 3, forget_bias=0.5),
            "kernels": ConvLSTM(3, 4, 3, hidden_kernel_size=5),
            "peephole": ConvLSTM(3, 4, 3, peephole=True),
        }
    )
    usual, note = usual_model(model)
    assert model["same"].__class__ is ConvLSTM  # the original is untouched
    assert isinstance(usual["same"], UsualConvLSTM)
    assert isinstance(usual["kernels"], ConvLSTM) and isinstance(usual["peephole"], ConvLSTM)
    assert "same: ConvLSTM -> NaiveConvLSTM" in note
    assert "kernels: pyvidgen ConvLSTM kept (different input and hidden kernel sizes)" in note
    assert "peephole: pyvidgen ConvLSTM kept (peepholes)" in note
    x = torch.randn(2, 3, 3, 6, 5)
    with backend("reference"):
        expected, expected_states = model["same"](x)
        grads = torch.autograd.grad(expected.square().sum(), list(model["same"].parameters()))
    got, states = usual["same"](x)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(states[-1][1], expected_states[-1][1])
    params = dict(usual["same"].named_parameters())
    usual_grads = dict(zip(params, torch.autograd.grad(got.square().sum(), list(params.values())), strict=True))
    renamed = fused_names(usual["same"], usual_grads)
    names = [n for n, _ in model["same"].named_parameters()]
    assert sorted(renamed) == sorted(names)
    for n, g in zip(names, grads, strict=True):
        torch.testing.assert_close(renamed[n], g, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="zero states"):
        usual["same"](x, [(s[0], s[1]) for s in states])


@pytest.mark.parametrize("name", MODELS)
def test_eager_rows_agree_with_the_usual_model(name):
    rows = time_model(name, compile=False, **FAST, **TINY[name])
    assert [r["provider"] for r in rows] == ["fused", "usual"]
    for r in rows:
        assert r["ms"] > 0 and r["runs"] >= 1 and r["compile_s"] is None, r
        assert r["loss_diff_vs_usual"] <= 1e-5 * max(1.0, abs(r["loss"])), r
        assert r["max_grad_diff_vs_usual"] < 1e-4, r
        assert 0 < r["hot_spot_share"] <= 1 and 0 <= r["convolution_share"] <= 1, r
    assert rows[0]["fused_speedup"] == 1.0 and rows[1]["fused_speedup"] > 0
    if name in ("st-ae", "vpn"):
        assert "ConvLSTM -> NaiveConvLSTM" in rows[1]["notes"]
    table = format_models_table(rows)
    assert f"{name} small" in table and "usual" in table


def test_a_failing_provider_is_a_note(monkeypatch):
    def broken(model):  # noqa: ANN001, ANN202
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: broken)
    rows = time_model("cross-conv", **FAST, **TINY["cross-conv"])
    failed = {r["provider"]: r for r in rows if r["ms"] is None}
    assert set(failed) == {"fused_compiled", "usual_compiled"}
    assert all("failed: RuntimeError: no compiler here" in r["notes"] for r in failed.values())
    assert "failed" in format_models_table(rows)


def test_wrong_gradients_are_named():
    expected = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([10.0])}
    assert bench_models._disagreeing({"a": expected["a"] + 1e-4, "b": expected["b"]}, expected) == ""
    note = bench_models._disagreeing({"a": expected["a"], "b": torch.tensor([0.0])}, expected)
    assert note == "b: 100% of its largest gradient"


def test_cli_models_tiny(monkeypatch, tmp_path, capsys):
    from pyvidgen.cli.main import main

    real = bench_models.time_models
    monkeypatch.setattr(bench_models, "time_models", lambda **kw: real(["cross-conv"], **{**kw, **FAST, "sizes": TINY}))
    argv = ["bench", "--models", "--no-compile", "--quick", "--threads", "1", "--out", str(tmp_path), "--no-progress"]
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "cross-conv small 2x2x16^2" in out and "fused is" in out
    assert (tmp_path / "models.json").exists()
    assert main(["bench", "--models", "--op", "flow_warp", "--out", str(tmp_path)]) == 2
    assert main(["bench", "--no-compile", "--op", "flow_warp", "--out", str(tmp_path)]) == 2


@pytest.mark.slow
def test_compiled_providers_st_ae():
    """torch.compile of the fused and usual losses (about a minute on 2 cores): timed, same loss and gradients."""
    rows = time_model("st-ae", **FAST, **TINY["st-ae"])
    assert [r["provider"] for r in rows] == ["fused", "fused_compiled", "usual", "usual_compiled"]
    for r in rows:
        assert r["ms"] > 0, r
        assert r["loss_diff_vs_usual"] < 1e-5 and r["max_grad_diff_vs_usual"] < 1e-4, r
    compiled = [r for r in rows if r["provider"].endswith("_compiled")]
    assert all(r["compile_s"] > 0 and r["hot_spot_share"] is None for r in compiled)


@pytest.mark.slow
def test_cli_models_small_eager(tmp_path, capsys):
    """The real small models, eager only, quick budget."""
    from pyvidgen.cli.main import main

    argv = ["bench", "--models", "--no-compile", "--quick", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for name in MODELS:
        assert f"{name} small" in out
    assert (tmp_path / "models.json").exists()


def test_time_models_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown models"):
        time_models(["nope"])
