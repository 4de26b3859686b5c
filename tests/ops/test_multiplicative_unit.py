"""pyvidgen.ops.multiplicative_unit: every kernel backend against the reference, plus the op's contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import pyvidgen
from pyvidgen._backend import cpp_module
from pyvidgen.ops import multiplicative_unit
from tests.conftest import DEVICE, deterministic_algorithms, kernel_backends, on_one_and_more_threads

BACKENDS = kernel_backends()
# Sizes 1, primes, non-powers of two; interpreted Triton gets these small ones only.
SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (3, 1, 2, 3), (2, 5, 1, 1), (1, 2, 1, 9), (2, 2, 7, 1)]
# cpp also gets planes longer than one work tile (2048 pixels) with ragged tails, and many channels.
LARGE_SHAPES = [(4, 19, 17, 23), (2, 3, 50, 47), (1, 64, 16, 16)]
TOLERANCE = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-12, "rtol": 1e-12}}


def _shapes_for(backend):
    return SHAPES + ([] if backend == "triton" else LARGE_SHAPES)


def _inputs(shape, dtype, rng, scale=2.0):
    batch, channels, height, width = shape
    pre = (torch.randn(batch, 4 * channels, height, width, generator=rng, dtype=torch.float64) * scale).to(
        DEVICE, dtype
    )
    h = (torch.randn(shape, generator=rng, dtype=torch.float64) * 1.5).to(DEVICE, dtype)
    return pre, h


def _run(backend, pre, h, grad_out):
    """Forward and both gradients on one backend."""
    pre = pre.detach().requires_grad_()
    h = h.detach().requires_grad_()
    with pyvidgen.backend(backend):
        out = multiplicative_unit(pre, h)
        grad_pre, grad_h = torch.autograd.grad(out, (pre, h), grad_out)
    return out.detach(), grad_pre, grad_h


def _assert_matches_reference(backend, pre, h, dtype, grad_out=None):
    grad_out = torch.randn_like(h) if grad_out is None else grad_out
    expected = _run("reference", pre, h, grad_out)
    actual = _run(backend, pre, h, grad_out)
    for name, a, e in zip(("out", "grad_pre", "grad_h"), actual, expected, strict=True):
        torch.testing.assert_close(a, e, equal_nan=True, **TOLERANCE[dtype], msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference_random(backend, dtype, rng):
    for shape in _shapes_for(backend):
        pre, h = _inputs(shape, dtype, rng)
        _assert_matches_reference(backend, pre, h, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_saturated_gates(backend, rng):
    """Pre-activations of tens: sigmoids and tanhs at 0 and ±1 (the exp range limits of fast kernels)."""
    pre, h = _inputs((2, 3, 6, 5), torch.float32, rng, scale=40.0)
    pre[0, :, 0, 0] = torch.tensor([100.0, -100.0, 88.5, -88.5, 87.0, -87.0, 1e4, -1e4, 9.5, -9.5, 0.0, -0.0])
    h[1, :, 2, 2] = torch.tensor([1e3, -1e3, 30.0])
    _assert_matches_reference(backend, pre, h, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend, rng):
    pre = (torch.randn(2, 5, 7, 12, generator=rng, dtype=torch.float64) * 2).to(DEVICE).permute(0, 3, 1, 2)
    h = torch.randn(2, 6, 10, 7, generator=rng, dtype=torch.float64).to(DEVICE)[:, ::2, ::2]
    assert pre.shape == (2, 12, 5, 7) and h.shape == (2, 3, 5, 7)
    assert not pre.is_contiguous() and not h.is_contiguous()
    _assert_matches_reference(backend, pre, h, torch.float64)
    grad_out = torch.randn(2, 7, 5, 3, dtype=torch.float64, device=DEVICE).permute(0, 3, 2, 1)
    _assert_matches_reference(backend, pre, h, torch.float64, grad_out=grad_out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_propagates(backend, rng):
    pre, h = _inputs((2, 2, 4, 4), torch.float64, rng)
    pre[0, 0, 1, 1] = float("nan")  # g1 of channel 0
    pre[1, 3 * 2 + 1, 2, 3] = float("nan")  # u of channel 1
    h[1, 0, 3, 0] = float("nan")
    with pyvidgen.backend(backend):
        out = multiplicative_unit(pre, h)
    assert out[0, 0, 1, 1].isnan() and out[1, 1, 2, 3].isnan() and out[1, 0, 3, 0].isnan()
    assert out.isnan().sum() == 3
    _assert_matches_reference(backend, pre, h, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_and_channels(backend):
    for shape in [(0, 3, 4, 5), (2, 0, 4, 5), (0, 1, 1, 1)]:
        batch, channels, height, width = shape
        pre = torch.randn(batch, 4 * channels, height, width, device=DEVICE, requires_grad=True)
        h = torch.randn(shape, device=DEVICE, requires_grad=True)
        with pyvidgen.backend(backend):
            out = multiplicative_unit(pre, h)
            out.sum().backward()
        assert out.shape == shape and pre.grad.shape == pre.shape and h.grad.shape == h.shape


def test_gradcheck_float64(rng):
    backend = "cpp" if "cpp" in BACKENDS else "reference"
    pre, h = _inputs((2, 3, 4, 5), torch.float64, rng)
    with pyvidgen.backend(backend):
        assert torch.autograd.gradcheck(multiplicative_unit, (pre.requires_grad_(), h.requires_grad_()))


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_opcheck(backend, rng):
    pre, h = _inputs((2, 3, 5, 4), torch.float32, rng)
    with pyvidgen.backend(backend):
        torch.library.opcheck(
            torch.ops.pyvidgen.multiplicative_unit.default, (pre.requires_grad_(), h.requires_grad_())
        )
        # The backward op is not itself differentiable: check it on plain tensors.
        grad_out = torch.randn_like(h).detach()
        torch.library.opcheck(
            torch.ops.pyvidgen.multiplicative_unit_backward.default, (grad_out, pre.detach(), h.detach())
        )


def test_torch_compile_fullgraph(rng):
    """Two residual multiplicative units as in VPN's blocks: four convolutions of h give the pre-activations."""
    batch, channels, height, width = 2, 3, 6, 5
    h0 = torch.randn(batch, channels, height, width, generator=rng).to(DEVICE)
    weight = (torch.randn(4 * channels, channels, 3, 3, generator=rng) * 0.3).to(DEVICE).requires_grad_()

    def block(h, weight):
        for _ in range(2):
            h = h + multiplicative_unit(F.conv2d(h, weight, padding=1), h)
        return h.square().mean()

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    loss = compiled(h0, weight)
    (grad,) = torch.autograd.grad(loss, (weight,))
    expected_loss = block(h0, weight)
    (expected,) = torch.autograd.grad(expected_loss, (weight,))
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic(backend, rng):
    pre, h = _inputs((5, 3, 9, 7), torch.float32, rng)
    grad_out = torch.randn_like(h)
    with deterministic_algorithms():
        first = _run(backend, pre, h, grad_out)
        second = _run(backend, pre, h, grad_out)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
def test_cpp_result_independent_of_thread_count(rng):
    pre, h = _inputs((3, 40, 50, 47), torch.float32, rng)
    grad_out = torch.randn_like(h)
    single, multi = on_one_and_more_threads(lambda: _run("cpp", pre, h, grad_out))
    for a, b in zip(single, multi, strict=True):
        assert torch.equal(a, b)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(0, 4),
    channels=st.integers(1, 5),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    scale=st.sampled_from([0.1, 2.0, 20.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_matches_reference(batch, channels, height, width, scale, seed):
    backend = BACKENDS[0] if BACKENDS else "reference"
    rng = torch.Generator().manual_seed(seed)
    pre, h = _inputs((batch, channels, height, width), torch.float64, rng, scale=scale)
    _assert_matches_reference(backend, pre, h, torch.float64)


@pytest.mark.parametrize(
    ("pre_shape", "h_shape", "pattern"),
    [
        ((1, 8, 4), (1, 2, 4, 5), r"pre must be a 4-D tensor \(B, 4C, H, W\), got shape \(1, 8, 4\)"),
        ((1, 8, 4, 5), (2, 4, 5), r"h must be a 4-D tensor \(B, C, H, W\), got shape \(2, 4, 5\)"),
        ((1, 6, 4, 5), (1, 2, 4, 5), r"pre must have shape \(B, 4C, H, W\) = \(1, 8, 4, 5\) to match h"),
        ((2, 8, 4, 5), (1, 2, 4, 5), r"pre must have shape .* = \(1, 8, 4, 5\) .*got \(2, 8, 4, 5\)"),
        ((1, 8, 5, 4), (1, 2, 4, 5), r"pre must have shape .*got \(1, 8, 5, 4\)"),
    ],
)
def test_bad_shapes(pre_shape, h_shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        multiplicative_unit(torch.zeros(pre_shape), torch.zeros(h_shape))


def test_bad_dtypes_and_devices():
    pre, h = torch.zeros(1, 8, 4, 5), torch.zeros(1, 2, 4, 5)
    with pytest.raises(TypeError, match=r"pre has dtype torch.float64 but h has dtype torch.float32"):
        multiplicative_unit(pre.double(), h)
    with pytest.raises(TypeError, match=r"h must have a floating-point dtype, got torch.int64"):
        multiplicative_unit(pre, h.long())
    with pytest.raises(TypeError, match=r"pre must be a torch.Tensor \(B, 4C, H, W\), got list"):
        multiplicative_unit([[1.0]], h)
    with pytest.raises(RuntimeError, match=r"pre is on meta but h is on cpu"):
        multiplicative_unit(pre.to("meta"), h)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to mix devices")
def test_cpu_cuda_mix():
    with pytest.raises(RuntimeError, match=r"pre is on cuda:0 but h is on cpu"):
        multiplicative_unit(torch.zeros(1, 8, 4, 5, device="cuda"), torch.zeros(1, 2, 4, 5))


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
def test_cpp_entry_points_check_their_inputs():
    """A direct call into _C (no Python checks in front) raises instead of reading out of bounds."""
    module = cpp_module()
    pre, h = torch.zeros(1, 8, 4, 5), torch.zeros(1, 2, 4, 5)
    forward, backward = module.multiplicative_unit_forward, module.multiplicative_unit_backward
    with pytest.raises(ValueError, match=r"pre must be 4-D \(B, 4C, H, W\), got \[1, 8, 4\]"):
        forward(torch.zeros(1, 8, 4), h)
    with pytest.raises(ValueError, match=r"h must be 4-D \(B, C, H, W\), got \[1, 2, 4\]"):
        forward(pre, torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"pre must have shape \(B, 4C, H, W\) = \[1, 8, 4, 5\] to match h"):
        forward(torch.zeros(1, 8, 5, 4), h)
    with pytest.raises(TypeError, match=r"pre has dtype Double but h has dtype Float"):
        forward(pre.double(), h)
    with pytest.raises(TypeError, match=r"supports float32 and float64, got Half"):
        forward(pre.half(), h.half())
    with pytest.raises(RuntimeError, match=r"needs CPU tensors, got pre on meta"):
        forward(pre.to("meta"), h)
    with pytest.raises(ValueError, match=r"grad_out must have the shape of h \[1, 2, 4, 5\], got \[1, 2, 5, 4\]"):
        backward(torch.zeros(1, 2, 5, 4), pre, h)
    with pytest.raises(TypeError, match=r"grad_out has dtype Double but h has dtype Float"):
        backward(h.double(), pre, h)
