"""Triton flow warping against the reference: forward, grad_x and grad_flow.

Under ``TRITON_INTERPRET=1`` (set by tests/conftest.py without CUDA) the kernels run on CPU tensors,
so every shape here is tiny.
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch

pytest.importorskip("triton")

from pyvidgen.kernels.reference import flow_warp as rfw  # noqa: E402
from pyvidgen.kernels.triton import flow_warp as tfw  # noqa: E402

pytestmark = pytest.mark.triton

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
MODES = ("zeros", "border", "reflection")
TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-12, "rtol": 1e-12}}


@pytest.fixture
def gen(request) -> torch.Generator:
    """A generator seeded per test (stable across runs, different between tests)."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def _randn(shape, dtype, gen, scale=1.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype=dtype, device=DEVICE)


def _check_all(x, flow, mode, normalized, gen, tol=None):
    """Forward and both gradients of the Triton kernels equal the reference (NaN where it is NaN)."""
    tol = tol or TOL[x.dtype]
    out = tfw.flow_warp_fwd(x, flow, mode, normalized)
    ref = rfw.flow_warp(x, flow, mode, normalized)
    assert out.dtype == x.dtype and out.shape == x.shape
    torch.testing.assert_close(out, ref, equal_nan=True, **tol)

    grad_out = _randn(x.shape, x.dtype, gen)
    grad_x, grad_flow = tfw.flow_warp_bwd(grad_out, x, flow, mode, normalized, (True, True))
    ref_gx, ref_gf = rfw.flow_warp_backward(grad_out, x, flow, mode, normalized)
    assert grad_x.dtype == x.dtype and grad_flow.dtype == flow.dtype
    torch.testing.assert_close(grad_x, ref_gx, **tol)
    torch.testing.assert_close(grad_flow, ref_gf, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 1, 6), (2, 1, 5, 1), (1, 2, 1, 1), (1, 2, 2, 3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_flow(dtype, mode, normalized, shape, seed):
    gen = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    x = _randn(shape, dtype, gen)
    # Pixels: a few pixels beyond the edges. Normalized: up to about one image extent.
    flow = _randn((b, 2, h, w), dtype, gen, scale=0.7 if normalized else 3.0)
    _check_all(x, flow, mode, normalized, gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalized", [False, True])
def test_integer_positions(dtype, mode, normalized, gen):
    """Taps exactly on pixel centres, where floor jumps and the flow derivative is one-sided."""
    shape = (2, 3, 4, 5)
    x = _randn(shape, dtype, gen)
    # Normalized, k / 2 moves by k (size - 1) / 4 pixels: whole pixels along the width (5), steps of
    # 0.75 pixel (exact in binary) along the height (4).
    flow = torch.randint(-6, 7, (2, 2, 4, 5), generator=gen).to(dtype=dtype, device=DEVICE)
    if normalized:
        flow = flow * 0.5
    _check_all(x, flow, mode, normalized, gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
def test_positions_on_borders(dtype, mode, gen):
    """Source positions exactly on the first/last pixel centre and one pixel beyond them."""
    c, h, w = 2, 3, 5
    rows = torch.arange(h, dtype=dtype).view(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=dtype).view(1, w).expand(h, w)
    # One batch item per (target column, target row) pair, every pixel sampling that one point.
    flows = [
        torch.stack((tx - cols, ty - rows))
        for tx in (-1.0, 0.0, w - 1.0, float(w))
        for ty in (-1.0, 0.0, h - 1.0, float(h))
    ]
    flow = torch.stack(flows).contiguous().to(DEVICE)
    x = _randn((flow.shape[0], c, h, w), dtype, gen)
    _check_all(x, flow, mode, False, gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_tiny_offsets(dtype, mode, sign, gen):
    """Positions a hair off the pixel centres; at column/row 0 they fall just outside the image."""
    x = _randn((2, 2, 3, 4), dtype, gen)
    flow = torch.full((2, 2, 3, 4), sign * 1e-30, dtype=dtype, device=DEVICE)
    _check_all(x, flow, mode, False, gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalized", [False, True])
def test_far_outside(dtype, mode, normalized, gen):
    """Flows of +-1e4 (folded by clamping or whole reflection periods) and random ones that large."""
    shape = (2, 2, 3, 4)
    x = _randn(shape, dtype, gen)
    signs = torch.randint(0, 2, (2, 2, 3, 4), generator=gen).to(dtype) * 2 - 1
    spread = torch.rand(2, 2, 3, 4, generator=gen, dtype=dtype)
    flow = signs * 1e4 * torch.where(torch.rand(2, 2, 3, 4, generator=gen) < 0.5, 1.0, spread)
    _check_all(x, flow.to(DEVICE), mode, normalized, gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 1, 4), (1, 2, 3, 1)])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy inf * 0
def test_non_finite_flow(dtype, mode, normalized, shape, gen):
    """NaN/inf flows: NaN output in every channel, no grad to x, zero grad to the flow."""
    b, c, h, w = shape
    x = _randn(shape, dtype, gen)
    flow = _randn((b, 2, h, w), dtype, gen, scale=2.0)
    pick = torch.randint(0, 6, (b, 2, h, w), generator=gen).to(DEVICE)
    flow = torch.where(pick == 0, float("nan"), flow)
    flow = torch.where(pick == 1, float("inf"), flow)
    flow = torch.where(pick == 2, float("-inf"), flow)
    _check_all(x, flow, mode, normalized, gen)
    out = tfw.flow_warp_fwd(x, flow, mode, normalized)
    # Scaling by (size - 1) / 2 keeps inf infinite, and turns it into NaN for a size-1 axis.
    bad = ~torch.isfinite(flow).all(1, keepdim=True).expand_as(out)
    assert bad.any() and torch.isnan(out[bad]).all() and not torch.isnan(out[~bad]).any()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalized", [False, True])
def test_several_tiles(mode, normalized, gen):
    """More channels than one channel tile and more pixels than one pixel block."""
    shape = (2, 17, 9, 17)
    x = _randn(shape, torch.float32, gen)
    flow = _randn((2, 2, 9, 17), torch.float32, gen, scale=0.6 if normalized else 4.0)
    _check_all(x, flow, mode, normalized, gen)


@pytest.mark.parametrize("needs_x_grad, needs_flow_grad", [(True, False), (False, True), (False, False)])
def test_gradient_subsets(needs_x_grad, needs_flow_grad, gen):
    shape = (2, 3, 4, 5)
    x = _randn(shape, torch.float64, gen)
    flow = _randn((2, 2, 4, 5), torch.float64, gen, scale=2.0)
    grad_out = _randn(shape, torch.float64, gen)
    grad_x, grad_flow = tfw.flow_warp_bwd(grad_out, x, flow, "reflection", False, (needs_x_grad, needs_flow_grad))
    ref_gx, ref_gf = rfw.flow_warp_backward(grad_out, x, flow, "reflection", False)
    if needs_x_grad:
        torch.testing.assert_close(grad_x, ref_gx, **TOL[torch.float64])
    else:
        assert grad_x is None
    if needs_flow_grad:
        torch.testing.assert_close(grad_flow, ref_gf, **TOL[torch.float64])
    else:
        assert grad_flow is None


@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5)])
def test_empty(shape, gen):
    b, c, h, w = shape
    x = torch.randn(shape, generator=gen).to(DEVICE)
    flow = torch.randn((b, 2, h, w), generator=gen).to(DEVICE)
    out = tfw.flow_warp_fwd(x, flow, "zeros", False)
    assert out.shape == x.shape and out.dtype == x.dtype
    grad_x, grad_flow = tfw.flow_warp_bwd(torch.ones_like(x), x, flow, "zeros", False, (True, True))
    ref_gx, ref_gf = rfw.flow_warp_backward(torch.ones_like(x), x, flow, "zeros", False)
    assert grad_x.shape == x.shape and grad_flow.shape == flow.shape
    torch.testing.assert_close(grad_x, ref_gx)
    torch.testing.assert_close(grad_flow, ref_gf)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
def test_half_inputs(dtype, mode, gen):
    """Half inputs are upcast inside the kernel: close to the float32 reference, results in half."""
    shape = (2, 3, 4, 5)
    x = _randn(shape, dtype, gen)
    flow = _randn((2, 2, 4, 5), dtype, gen, scale=2.0)
    grad_out = _randn(shape, dtype, gen)
    out = tfw.flow_warp_fwd(x, flow, mode, False)
    assert out.dtype == dtype
    ref = rfw.flow_warp(x.float(), flow.float(), mode, False)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=1e-2)
    grad_x, grad_flow = tfw.flow_warp_bwd(grad_out, x, flow, mode, False, (True, True))
    assert grad_x.dtype == dtype and grad_flow.dtype == dtype
    ref_gx, ref_gf = rfw.flow_warp_backward(grad_out.float(), x.float(), flow.float(), mode, False)
    torch.testing.assert_close(grad_x.float(), ref_gx, atol=3e-2, rtol=2e-2)
    torch.testing.assert_close(grad_flow.float(), ref_gf, atol=5e-2, rtol=2e-2)
