"""pyvidgen.ops.flow_warp: every kernel backend against the reference, plus the op's contract."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pyvidgen
from pyvidgen.kernels.reference import flow_warp as reference
from pyvidgen.ops import PADDING_MODES, flow_warp
from tests.conftest import DEVICE, deterministic_algorithms, kernel_backends, on_one_and_more_threads
from tests.oracles.flow_oracles import flow_warp_flow_derivative_oracle, flow_warp_oracle

BACKENDS = kernel_backends()
# Interpreted Triton is slow: it gets the small shapes only.
SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (2, 2, 1, 9), (3, 2, 8, 1), (1, 5, 13, 11)]
LARGE_SHAPES = [(4, 19, 17, 23), (1, 64, 16, 16)]
TOLERANCE = {torch.float32: {"atol": 2e-5, "rtol": 2e-5}, torch.float64: {"atol": 1e-10, "rtol": 1e-10}}


def _inputs(shape, dtype, rng, scale=3.0, requires_grad=True):
    batch, channels, height, width = shape
    x = torch.randn(shape, generator=rng, dtype=torch.float64).to(DEVICE, dtype)
    flow = (torch.randn(batch, 2, height, width, generator=rng, dtype=torch.float64) * scale).to(DEVICE, dtype)
    return x.requires_grad_(requires_grad), flow.requires_grad_(requires_grad)


def _run(backend, x, flow, grad_out, **kwargs):
    """Forward and both gradients on one backend."""
    x = x.detach().requires_grad_()
    flow = flow.detach().requires_grad_()
    with pyvidgen.backend(backend):
        out = flow_warp(x, flow, **kwargs)
        out.backward(grad_out)
    return out.detach(), x.grad, flow.grad


def _assert_matches_reference(backend, x, flow, dtype, **kwargs):
    grad_out = torch.randn_like(x)
    expected = _run("reference", x, flow, grad_out, **kwargs)
    actual = _run(backend, x, flow, grad_out, **kwargs)
    for name, a, e in zip(("out", "grad_x", "grad_flow"), actual, expected, strict=True):
        tolerance = dict(TOLERANCE[dtype])
        if name == "grad_flow":
            # A sum over C channels in another order, then scaled by (W - 1) / 2 for normalised flows:
            # float32 rounding grows with both, so the tolerance does too.
            scale = max(1.0, (max(x.shape[-2:]) - 1) / 2) if kwargs.get("normalized") else 1.0
            tolerance = {k: v * scale * max(1.0, x.shape[1] / 16) for k, v in tolerance.items()}
        torch.testing.assert_close(a, e, equal_nan=True, **tolerance, msg=lambda m, n=name: f"{n}: {m}")


def _shapes_for(backend):
    return SHAPES + ([] if backend == "triton" else LARGE_SHAPES)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("normalized", [False, True])
def test_matches_reference_random(backend, dtype, mode, normalized, rng):
    for shape in _shapes_for(backend):
        x, flow = _inputs(shape, dtype, rng, scale=0.7 if normalized else 3.0)
        _assert_matches_reference(backend, x, flow, dtype, padding_mode=mode, normalized=normalized)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", PADDING_MODES)
def test_integer_border_and_far_positions_match_oracle(backend, mode, rng):
    """Exact pixel hits (where floor jumps), exact borders and flows far outside, against the oracle."""
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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", PADDING_MODES)
def test_non_contiguous_inputs(backend, mode, rng):
    base_x = torch.randn(3, 8, 7, 4, generator=rng, dtype=torch.float64).to(DEVICE)
    x = base_x.permute(0, 3, 2, 1)  # (3, 4, 7, 8), channels-last-like strides
    flow = (torch.randn(3, 7, 8, 2, generator=rng, dtype=torch.float64) * 2).to(DEVICE).permute(0, 3, 1, 2)
    assert not x.is_contiguous() and not flow.is_contiguous()
    _assert_matches_reference(backend, x, flow, torch.float64, padding_mode=mode)
    sliced = torch.randn(2, 6, 9, 10, generator=rng, dtype=torch.float64).to(DEVICE)[:, ::2, 1:, ::3]
    flow = torch.randn(2, 2, 8, 4, generator=rng, dtype=torch.float64).to(DEVICE)
    _assert_matches_reference(backend, sliced, flow, torch.float64, padding_mode=mode)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", PADDING_MODES)
def test_nan_propagates(backend, mode):
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, device=DEVICE)
    x[0, 1, 2, 2] = float("nan")
    flow = torch.zeros(1, 2, 4, 4, dtype=torch.float64, device=DEVICE)
    flow[0, 0, 0, 3] = float("nan")
    flow[0, 1, 3, 0] = float("-inf")
    with pyvidgen.backend(backend):
        out = flow_warp(x, flow, padding_mode=mode)
    assert out[0, :, 0, 3].isnan().all() and out[0, :, 3, 0].isnan().all()
    assert out[0, 1, 2, 2].isnan() and not out[0, 0, 2, 2].isnan()
    _assert_matches_reference(backend, x, flow, torch.float64, padding_mode=mode)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_and_channels(backend):
    for shape in [(0, 3, 4, 5), (2, 0, 4, 5)]:
        x = torch.randn(shape, device=DEVICE, requires_grad=True)
        flow = torch.randn(shape[0], 2, 4, 5, device=DEVICE, requires_grad=True)
        with pyvidgen.backend(backend):
            out = flow_warp(x, flow)
            out.sum().backward()
        assert out.shape == shape
        assert x.grad.shape == x.shape and flow.grad.shape == flow.shape
        assert (flow.grad == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_needed_gradients(backend, rng):
    x, flow = _inputs((2, 3, 5, 4), torch.float64, rng)
    with pyvidgen.backend(backend):
        flow_warp(x.detach(), flow).sum().backward()
        flow_warp(x, flow.detach()).sum().backward()
    assert flow.grad is not None and x.grad is not None
    with pyvidgen.backend("reference"):
        expected = torch.autograd.grad(flow_warp(x, flow).sum(), (x, flow))
    torch.testing.assert_close(x.grad, expected[0])
    torch.testing.assert_close(flow.grad, expected[1])


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("normalized", [False, True])
def test_gradcheck_float64(mode, normalized, rng):
    backend = "cpp" if "cpp" in BACKENDS else "reference"
    x, flow = _inputs((2, 3, 4, 5), torch.float64, rng, scale=0.6 if normalized else 2.5)
    with pyvidgen.backend(backend):
        assert torch.autograd.gradcheck(
            lambda a, f: flow_warp(a, f, padding_mode=mode, normalized=normalized), (x, flow), eps=1e-6, atol=1e-5
        )


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_opcheck(backend, rng):
    x, flow = _inputs((2, 3, 5, 4), torch.float32, rng)
    with pyvidgen.backend(backend):
        for mode in PADDING_MODES:
            torch.library.opcheck(torch.ops.pyvidgen.flow_warp.default, (x, flow, mode, False))
        # The backward op is not itself differentiable: check it on plain tensors.
        grad_out, x, flow = torch.randn_like(x), x.detach(), flow.detach()
        backward = torch.ops.pyvidgen.flow_warp_backward.default
        torch.library.opcheck(backward, (grad_out, x, flow, "zeros", True, True, True))
        torch.library.opcheck(backward, (grad_out, x, flow, "border", False, False, True))
        torch.library.opcheck(backward, (grad_out, x, flow, "reflection", False, True, False))


def test_torch_compile_fullgraph(rng):
    x, flow = _inputs((2, 3, 6, 5), torch.float32, rng)

    def step(x, flow):
        warped = flow_warp(x, flow, padding_mode="border")
        return warped.square().mean() + 1e-3 * pyvidgen.ops.flow_smoothness(flow)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(x, flow)
    grads = torch.autograd.grad(loss, (x, flow))
    expected_loss = step(x, flow)
    expected = torch.autograd.grad(expected_loss, (x, flow))
    torch.testing.assert_close(loss, expected_loss)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.slow
def test_torch_compile_inductor(rng):
    x, flow = _inputs((2, 3, 6, 5), torch.float32, rng)
    compiled = torch.compile(lambda a, f: flow_warp(a, f).sin().sum(), fullgraph=True)
    torch.testing.assert_close(compiled(x, flow), flow_warp(x, flow).sin().sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_mode(backend, rng):
    x, flow = _inputs((2, 20, 9, 7), torch.float32, rng)
    grad_out = torch.randn_like(x)
    with deterministic_algorithms():
        if backend == "triton":  # grad_x scatters with atomics: refused, with the reason
            with pytest.raises(RuntimeError, match="deterministic"):
                _run(backend, x, flow, grad_out)
            return
        first = _run(backend, x, flow, grad_out)
        second = _run(backend, x, flow, grad_out)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
def test_cpp_result_independent_of_thread_count(rng):
    x, flow = _inputs((3, 40, 6, 7), torch.float32, rng)
    grad_out = torch.randn_like(x)
    single, multi = on_one_and_more_threads(lambda: _run("cpp", x, flow, grad_out))
    for a, b in zip(single, multi, strict=True):
        assert torch.equal(a, b)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(0, 3),
    channels=st.integers(1, 5),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    mode=st.sampled_from(PADDING_MODES),
    scale=st.sampled_from([0.0, 0.5, 3.0, 50.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_cpp_matches_reference(batch, channels, height, width, mode, scale, seed):
    backend = BACKENDS[0] if BACKENDS else "reference"
    rng = torch.Generator().manual_seed(seed)
    x, flow = _inputs((batch, channels, height, width), torch.float64, rng, scale=scale)
    _assert_matches_reference(backend, x, flow, torch.float64, padding_mode=mode)


def test_identity_and_integer_shift(rng):
    """Zero flow is the identity; a whole-pixel shift moves the image (zeros shifted in)."""
    x = torch.randn(2, 3, 6, 7, generator=rng)
    assert torch.equal(flow_warp(x, torch.zeros(2, 2, 6, 7)), x)
    flow = torch.zeros(2, 2, 6, 7)
    flow[:, 0] = 2.0  # sample two columns to the right
    out = flow_warp(x, flow)
    torch.testing.assert_close(out[..., :-2], x[..., 2:])
    assert (out[..., -2:] == 0).all()


@pytest.mark.parametrize(
    ("x_shape", "flow_shape", "kwargs", "error", "pattern"),
    [
        ((3, 4, 5), (3, 2, 4, 5), {}, ValueError, r"x must be a 4-D tensor \(B, C, H, W\), got shape \(3, 4, 5\)"),
        ((1, 3, 4, 5), (1, 3, 4, 5), {}, ValueError, r"flow must have shape \(B, 2, H, W\) = \(1, 2, 4, 5\)"),
        ((2, 3, 4, 5), (1, 2, 4, 5), {}, ValueError, r"flow must have shape .* = \(2, 2, 4, 5\).*got \(1, 2, 4, 5\)"),
        ((1, 3, 4, 5), (1, 2, 5, 4), {}, ValueError, r"flow must have shape .*got \(1, 2, 5, 4\)"),
        ((1, 3, 4, 5), (1, 2, 4, 5, 1), {}, ValueError, r"flow must be a 4-D tensor"),
        ((1, 3, 4, 5), (1, 2, 4, 5), {"padding_mode": "wrap"}, ValueError, r"padding_mode must be one of .*'wrap'"),
    ],
)
def test_bad_inputs(x_shape, flow_shape, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        flow_warp(torch.zeros(x_shape), torch.zeros(flow_shape), **kwargs)


def test_bad_dtypes_and_devices():
    x = torch.zeros(1, 3, 4, 5)
    with pytest.raises(TypeError, match=r"flow has dtype torch.float64 but x has dtype torch.float32"):
        flow_warp(x, torch.zeros(1, 2, 4, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"x must have a floating-point dtype, got torch.int64"):
        flow_warp(torch.zeros(1, 3, 4, 5, dtype=torch.long), torch.zeros(1, 2, 4, 5))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        flow_warp([[1.0]], torch.zeros(1, 2, 4, 5))
    meta_flow = torch.zeros(1, 2, 4, 5, device="meta")
    with pytest.raises(RuntimeError, match=r"flow is on meta but x is on cpu"):
        flow_warp(x, meta_flow)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to mix devices")
def test_cpu_cuda_mix():
    with pytest.raises(RuntimeError, match=r"flow is on cuda:0 but x is on cpu"):
        flow_warp(torch.zeros(1, 3, 4, 5), torch.zeros(1, 2, 4, 5, device="cuda"))


def test_matches_grid_sample_float32(rng):
    """What users write today (F.grid_sample) and the op agree for ordinary flows."""
    x = torch.randn(2, 4, 16, 12, generator=rng)
    flow = torch.randn(2, 2, 16, 12, generator=rng) * 3
    for mode in PADDING_MODES:
        torch.testing.assert_close(
            flow_warp(x, flow, padding_mode=mode), reference.flow_warp_grid_sample(x, flow, mode), atol=1e-5, rtol=1e-5
        )
