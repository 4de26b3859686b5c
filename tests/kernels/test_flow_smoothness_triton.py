"""Triton Huber flow smoothness against the reference: the penalty and its gradient."""

from __future__ import annotations

import os
import zlib

import pytest
import torch

pytest.importorskip("triton")

from pyvidgen.kernels.reference import flow_smoothness as rfs  # noqa: E402
from pyvidgen.kernels.triton import flow_smoothness as tfs  # noqa: E402

pytestmark = pytest.mark.triton

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-12, "rtol": 1e-12}}


@pytest.fixture
def gen(request) -> torch.Generator:
    """A generator seeded per test (stable across runs, different between tests)."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def _check(flow, delta, gen, tol=None):
    tol = tol or TOL[flow.dtype]
    loss = tfs.flow_smoothness_fwd(flow, delta)
    assert loss.dtype == (torch.float64 if flow.dtype == torch.float64 else torch.float32) and loss.dim() == 0
    torch.testing.assert_close(loss, rfs.flow_smoothness(flow, delta), equal_nan=True, **tol)

    grad = (torch.randn((), generator=gen, dtype=torch.float64) + 2.0).to(dtype=flow.dtype, device=DEVICE)
    (out,) = tfs.flow_smoothness_bwd(grad, flow, delta)
    assert out.dtype == flow.dtype and out.shape == flow.shape
    torch.testing.assert_close(out, grad * rfs.flow_smoothness_grad(flow, delta), equal_nan=True, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 2, 5, 7), (1, 3, 1, 9), (2, 1, 6, 1), (1, 2, 1, 1), (3, 1, 2, 3)])
@pytest.mark.parametrize("delta", [0.1, 1.0, 1 / 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_flow(dtype, shape, delta, seed):
    gen = torch.Generator().manual_seed(seed)
    # Differences of a few units: both Huber branches are taken for every delta.
    flow = (torch.randn(shape, generator=gen, dtype=torch.float64) * 1.5).to(dtype=dtype, device=DEVICE)
    _check(flow, delta, gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_several_blocks(dtype, gen):
    """More pixels per plane than one block: neighbours across block boundaries."""
    flow = torch.randn((2, 2, 37, 41), generator=gen, dtype=dtype).to(DEVICE)
    _check(flow, 0.5, gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_differences_equal_to_delta(dtype, gen):
    """|d| == delta exactly: the quadratic branch and an unclamped gradient, as in the reference."""
    delta = 0.5
    flow = (torch.randint(-3, 4, (2, 2, 4, 5), generator=gen) * delta).to(dtype=dtype, device=DEVICE)
    _check(flow, delta, gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_flow(dtype, bad, gen):
    flow = torch.randn((1, 2, 3, 4), generator=gen, dtype=dtype)
    flow[0, 1, 1, 2] = bad
    _check(flow.to(DEVICE), 1.0, gen)


def test_empty():
    flow = torch.zeros((0, 2, 3, 4), device=DEVICE)
    loss = tfs.flow_smoothness_fwd(flow, 1.0)
    assert loss.dim() == 0 and loss.item() == 0.0
    (grad,) = tfs.flow_smoothness_bwd(torch.ones((), device=DEVICE), flow, 1.0)
    assert grad.shape == flow.shape


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype, gen):
    """Half flows are upcast inside the kernel: close to the float32 reference; the sum stays float32."""
    flow = torch.randn((2, 2, 4, 5), generator=gen).to(dtype=dtype, device=DEVICE)
    loss = tfs.flow_smoothness_fwd(flow, 1.0)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.float(), rfs.flow_smoothness(flow.float(), 1.0), atol=1e-2, rtol=1e-2)
    grad = torch.tensor(1.5, dtype=dtype, device=DEVICE)
    (out,) = tfs.flow_smoothness_bwd(grad, flow, 1.0)
    assert out.dtype == dtype
    ref = 1.5 * rfs.flow_smoothness_grad(flow.float(), 1.0)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=1e-2)
