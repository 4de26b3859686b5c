"""pyvidgen.ops.flow_warp: the shared op tester, the loop oracles and the op's own cases and errors."""

from __future__ import annotations

import pytest
import torch

import pyvidgen
from pyvidgen.kernels.reference import flow_warp as reference
from pyvidgen.ops import PADDING_MODES, flow_warp
from pyvidgen.testing import run_backend
from tests.conftest import DEVICE, kernel_backends
from tests.ops.op_tester import OpTester
from tests.oracles.flow_oracles import flow_warp_flow_derivative_oracle, flow_warp_oracle

BACKENDS = kernel_backends()
# Full-size images are too slow for the Triton interpreter on a CPU.
COMPILED_BACKENDS = [name for name in BACKENDS if name != "triton" or DEVICE == "cuda"]


class TestFlowWarp(OpTester):
    op_name = "flow_warp"


def _run(backend, x, flow, grad_out, **kwargs):
    x, flow = x.detach().requires_grad_(), flow.detach().requires_grad_()
    with pyvidgen.backend(backend):
        out = flow_warp(x, flow, **kwargs)
        grad_x, grad_flow = torch.autograd.grad(out, (x, flow), grad_out)
    return out.detach(), grad_x, grad_flow


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@pytest.mark.parametrize("mode", PADDING_MODES)
def test_integer_border_and_far_positions_match_oracle(backend, mode, rng):
    """Exact pixel hits (where floor jumps), exact borders and flows far outside, against the loop oracle."""
    shape = (2, 3, 5, 6)
    x = torch.randn(shape, generator=rng, dtype=torch.float64)
    flow = torch.randint(-7, 8, (2, 2, 5, 6), generator=rng).double()
    flow[0, 0, :, :] = 5 - torch.arange(6).double()  # every sample on the last column
    flow[0, 1, 0, :] = -0.0  # exactly on row 0
    flow[1, 0, 0, :] = torch.tensor([1e4, -1e4, 2.5e3, -333.25, 1e9, -1e9], dtype=torch.float64)
    grad_out = torch.randn(shape, generator=rng, dtype=torch.float64)
    out, grad_x, grad_flow = _run(backend, x.to(DEVICE), flow.to(DEVICE), grad_out.to(DEVICE), padding_mode=mode)
    torch.testing.assert_close(out.cpu(), flow_warp_oracle(x, flow, mode))
    # Finite differences are meaningless 1e9 pixels away (the step is below float64 resolution there).
    oracle_grad = flow_warp_flow_derivative_oracle(x, flow, grad_out, mode)
    torch.testing.assert_close(grad_flow.cpu()[0], oracle_grad[0], atol=1e-5, rtol=1e-5)
    expected = _run("reference", x, flow, grad_out, padding_mode=mode)
    torch.testing.assert_close(grad_x.cpu(), expected[1])
    torch.testing.assert_close(grad_flow.cpu(), expected[2])


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("reach", [5e9, 3e38])
def test_exploded_float32_flows_sample_inside_the_image(backend, mode, reach, rng):
    """Flows of billions of pixels (a diverging training run): a defined result from inside the image, the
    reference's, forward and backward, and never a crash or a read out of bounds (the C++ kernels once
    folded reflected positions of |p| > 2^31 out of the image)."""
    x = torch.rand(2, 16, 8, 16, generator=rng).to(DEVICE)
    flow = ((torch.rand(2, 2, 8, 16, generator=rng, dtype=torch.float64) * 2 - 1) * reach).float().to(DEVICE)
    grad_out = torch.randn(x.shape, generator=rng).to(DEVICE)
    out, grad_x, grad_flow = _run(backend, x, flow, grad_out, padding_mode=mode)
    # A convex combination of pixels of the image (zeros padding may blend in zeros).
    low = 0.0 if mode == "zeros" else float(x.min())
    assert out.isfinite().all() and float(out.min()) >= low - 1e-6 and float(out.max()) <= float(x.max()) + 1e-6
    expected = _run("reference", x, flow, grad_out, padding_mode=mode)
    for actual, wanted in zip((out, grad_x, grad_flow), expected, strict=True):
        torch.testing.assert_close(actual, wanted, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize(
    "shape", [(2, 3, 40, 256), (1, 20, 72, 64), (1, 2, 40, 2100)], ids=["rgb", "two-chunks", "one-row-bands"]
)
@pytest.mark.parametrize("flows", ["small", "integer-reach", "vertical", "one-far-pixel", "non-finite"])
def test_tall_images_with_bounded_flows_match_the_reference(backend, mode, normalized, shape, flows, rng):
    """Images much taller than a band whose vertical flows stay within a few rows: the C++ kernels then keep
    only a ring of source and grad_x rows around each band. Taps on the window's edge (flows of exactly the
    largest magnitude, pointing up and down), one far pixel (the whole image is held), NaN and inf flows,
    every mode, pixel and normalised units, channel chunks and bands of one row; forward and both gradients
    (also each alone), against the reference in float64."""
    batch, channels, height, width = shape
    x = torch.randn(shape, generator=rng, dtype=torch.float64)
    flow = (torch.rand(batch, 2, height, width, generator=rng, dtype=torch.float64) * 2 - 1) * 3
    if flows == "integer-reach":
        flow = torch.randint(-4, 5, flow.shape, generator=rng).double()
        flow[:, 1, 0, :] = -4.0
        flow[:, 1, -1, :] = 4.0
    elif flows == "vertical":
        flow[:, 0] = 0
        flow[:, 1] = flow[:, 1].sign() * 5.5
    elif flows == "one-far-pixel":
        flow[-1, 1, height // 2, width // 3] = -0.8 * height
    elif flows == "non-finite":
        flow[0, 1, 5, 7] = float("nan")
        flow[-1, 0, height - 3, 1] = float("inf")
        flow[-1, 1, 2, width - 2] = float("-inf")
    if normalized:
        flow = flow / torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=torch.float64).view(1, 2, 1, 1)
    grad_out = torch.randn(shape, generator=rng, dtype=torch.float64)
    kwargs = {"padding_mode": mode, "normalized": normalized}
    actual = _run(backend, x.to(DEVICE), flow.to(DEVICE), grad_out.to(DEVICE), **kwargs)
    expected = _run("reference", x, flow, grad_out, **kwargs)
    for got, wanted in zip(actual, expected, strict=True):
        torch.testing.assert_close(got.cpu(), wanted, equal_nan=True)
    with pyvidgen.backend(backend):
        x_only = torch.autograd.grad(flow_warp(x.requires_grad_(), flow, **kwargs), x, grad_out)[0]
        flow_only = torch.autograd.grad(flow_warp(x.detach(), flow.requires_grad_(), **kwargs), flow, grad_out)[0]
    torch.testing.assert_close(x_only, expected[1], equal_nan=True)
    torch.testing.assert_close(flow_only, expected[2], equal_nan=True)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_positions_are_computed_in_float32(backend, dtype, rng):
    """A zero flow is the identity in half precision too, even where j + 0 is not a half number (W = 300)."""
    x = torch.randn(1, 2, 3, 300, generator=rng).to(DEVICE, dtype)
    with pyvidgen.backend(backend):
        assert torch.equal(flow_warp(x, torch.zeros(1, 2, 3, 300, dtype=dtype, device=DEVICE)), x)


def test_identity_and_integer_shift(rng):
    """Zero flow is the identity; a whole-pixel shift moves the image (zeros shifted in)."""
    x = torch.randn(2, 3, 6, 7, generator=rng)
    assert torch.equal(flow_warp(x, torch.zeros(2, 2, 6, 7)), x)
    flow = torch.zeros(2, 2, 6, 7)
    flow[:, 0] = 2.0  # sample two columns to the right
    out = flow_warp(x, flow)
    torch.testing.assert_close(out[..., :-2], x[..., 2:])
    assert (out[..., -2:] == 0).all()


def test_matches_grid_sample_float32(rng):
    """What users write today (F.grid_sample) and the op agree for ordinary flows."""
    x = torch.randn(2, 4, 16, 12, generator=rng)
    flow = torch.randn(2, 2, 16, 12, generator=rng) * 3
    for mode in PADDING_MODES:
        torch.testing.assert_close(
            flow_warp(x, flow, padding_mode=mode), reference.flow_warp_grid_sample(x, flow, mode), atol=1e-5, rtol=1e-5
        )


def test_padding_modes_reach_every_backend_by_name(rng):
    """The padding mode travels as its name to every kernel: each name gives a different, correct result."""
    op = pyvidgen.ops.OPS["flow_warp"]
    args = op.sample((1, 2, 4, 5), generator=rng, magnitude=6.0)
    results = {mode: run_backend(op, "reference", (*args[:2], mode, False), None)["out"] for mode in PADDING_MODES}
    assert not torch.equal(results["zeros"], results["border"]) and not torch.equal(
        results["border"], results["reflection"]
    )
    for backend in BACKENDS:
        for mode in PADDING_MODES:
            torch.testing.assert_close(run_backend(op, backend, (*args[:2], mode, False), None)["out"], results[mode])


@pytest.mark.parametrize(
    ("x_shape", "flow_shape", "kwargs", "pattern"),
    [
        ((1, 3, 4, 5), (1, 3, 4, 5), {}, r"flow must have shape \(B, 2, H, W\) = \(1, 2, 4, 5\) to match x"),
        ((2, 3, 4, 5), (1, 2, 4, 5), {}, r"flow must have shape .* = \(2, 2, 4, 5\).*got \(1, 2, 4, 5\)"),
        ((1, 3, 4, 5), (1, 2, 5, 4), {}, r"flow must have shape .*got \(1, 2, 5, 4\)"),
        ((1, 3, 4, 5), (1, 2, 4, 5), {"padding_mode": "wrap"}, r"padding_mode must be one of .*'wrap'"),
    ],
)
def test_bad_inputs(x_shape, flow_shape, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        flow_warp(torch.zeros(x_shape), torch.zeros(flow_shape), **kwargs)


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
def test_cpp_rejects_an_unknown_padding_mode():
    with pytest.raises(ValueError, match=r"padding_mode must be one of 'zeros', 'border', 'reflection', got 'wrap'"):
        torch.ops.pyvidgen_cpp.flow_warp_forward(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2), "wrap", False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to mix devices")
def test_cpu_cuda_mix():
    with pytest.raises(RuntimeError, match=r"flow is on cuda:0 but x is on cpu"):
        flow_warp(torch.zeros(1, 3, 4, 5), torch.zeros(1, 2, 4, 5, device="cuda"))
