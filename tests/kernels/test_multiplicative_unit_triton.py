"""Triton multiplicative unit against the reference: the output and the gradients of pre and h.

Under ``TRITON_INTERPRET=1`` (set by tests/conftest.py without CUDA) the kernels run on CPU tensors,
so every shape here is tiny; shrinking the block size makes tiny shapes span several programs.
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("triton")

from pyvidgen.kernels.reference import multiplicative_unit as ref  # noqa: E402
from pyvidgen.kernels.triton import multiplicative_unit as tmu  # noqa: E402

pytestmark = pytest.mark.triton

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-12, "rtol": 1e-12}}
SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (3, 1, 2, 3), (2, 5, 1, 1), (1, 2, 1, 9), (2, 2, 7, 1)]


@pytest.fixture
def gen(request) -> torch.Generator:
    """A generator seeded per test (stable across runs, different between tests)."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def _randn(shape, dtype, gen, scale=1.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype=dtype, device=DEVICE)


def _inputs(shape, dtype, gen, scale=2.0):
    """pre (B, 4C, H, W) and h (B, C, H, W)."""
    b, c, h, w = shape
    return _randn((b, 4 * c, h, w), dtype, gen, scale), _randn(shape, dtype, gen, scale)


def _check_all(pre, h, gen, tol=None):
    """Output and both gradients equal the reference's (NaN where it is NaN); returns them."""
    tol = tol or TOL[h.dtype]
    out = tmu.multiplicative_unit_fwd(pre, h)
    assert out.dtype == h.dtype and out.shape == h.shape
    torch.testing.assert_close(out, ref.multiplicative_unit(pre, h), equal_nan=True, **tol)

    grad_out = _randn(h.shape, h.dtype, gen)
    grad_pre, grad_h = tmu.multiplicative_unit_bwd(grad_out, pre, h)
    ref_pre, ref_h = ref.multiplicative_unit_backward(grad_out, pre, h)
    assert grad_pre.dtype == pre.dtype and grad_pre.shape == pre.shape
    assert grad_h.dtype == h.dtype and grad_h.shape == h.shape
    torch.testing.assert_close(grad_pre, ref_pre, equal_nan=True, **tol)
    torch.testing.assert_close(grad_h, ref_h, equal_nan=True, **tol)
    return out, grad_pre, grad_h


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_random(dtype, shape, gen):
    _check_all(*_inputs(shape, dtype, gen), gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5, 1, 2, 3), (3, 2, 3, 5), (2, 3, 1, 1), (2, 17, 1, 1)])
def test_tiny_blocks(dtype, shape, gen, monkeypatch):
    """Items smaller than a block and spanning several, none a multiple of it: partial last blocks."""
    monkeypatch.setattr(tmu, "_BLOCK", 16)
    monkeypatch.setattr(tmu, "_BLOCK_BWD", 8)
    _check_all(*_inputs(shape, dtype, gen), gen)


def test_several_default_blocks(gen):
    """More elements than one default block, not a multiple of it."""
    _check_all(*_inputs((3, 5, 9, 31), torch.float32, gen), gen)


def test_empty_batch(gen):
    out, grad_pre, grad_h = _check_all(*_inputs((0, 3, 4, 5), torch.float32, gen), gen)
    assert out.shape == (0, 3, 4, 5) and grad_pre.shape == (0, 12, 4, 5) and grad_h.shape == (0, 3, 4, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("magnitude", [50.0, 1e4])
def test_large_magnitudes(dtype, magnitude, gen):
    """Saturated pre-activations and a large h: finite everywhere, and the reference's saturated values.

    A tanh through exp(2x), or a sigmoid through exp(-x), would give inf / inf = NaN here.
    """
    pre, h = _inputs((2, 3, 4, 5), dtype, gen)
    signs = torch.randint(0, 2, pre.shape, generator=gen).to(dtype=dtype, device=DEVICE) * 2 - 1
    pre = signs * magnitude
    h = torch.where(h > 0, 50.0, -50.0).to(dtype)
    for t in _check_all(pre, h, gen):
        assert torch.isfinite(t).all()


def test_saturated_values_exact(gen):
    """g1, g2, g3, u all +inf: out = tanh(h + 1), grad_h = grad_out (1 - out^2), no gradient to pre."""
    _, h = _inputs((2, 3, 2, 3), torch.float32, gen)
    pre = torch.full((2, 12, 2, 3), float("inf"), device=DEVICE)
    out, grad_pre, _ = _check_all(pre, h, gen)
    torch.testing.assert_close(out, torch.tanh(h + 1.0))
    assert not grad_pre.any()
    grad_out = torch.ones_like(h)
    _, grad_h = tmu.multiplicative_unit_bwd(grad_out, pre, h)
    torch.testing.assert_close(grad_h, 1 - torch.tanh(h + 1.0) ** 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy
def test_nan_propagates(dtype, gen):
    """NaN in pre or h: NaN exactly where the reference has NaN, in every output."""
    pre, h = _inputs((2, 3, 4, 5), dtype, gen)
    pre = torch.where(torch.rand(pre.shape, generator=gen).to(DEVICE) < 0.05, float("nan"), pre)
    h = torch.where(torch.rand(h.shape, generator=gen).to(DEVICE) < 0.05, float("nan"), h)
    out, grad_pre, grad_h = _check_all(pre, h, gen)
    assert torch.isnan(out).any() and not torch.isnan(out).all()
    assert torch.isnan(grad_pre).any() and torch.isnan(grad_h).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype, gen):
    """Half inputs are upcast inside the kernel: close to the float32 reference, results in half."""
    pre, h = _inputs((2, 3, 4, 5), dtype, gen)
    grad_out = _randn(h.shape, dtype, gen)
    out = tmu.multiplicative_unit_fwd(pre, h)
    grad_pre, grad_h = tmu.multiplicative_unit_bwd(grad_out, pre, h)
    expected = (
        ref.multiplicative_unit(pre.float(), h.float()),
        *ref.multiplicative_unit_backward(grad_out.float(), pre.float(), h.float()),
    )
    for got, want in zip((out, grad_pre, grad_h), expected, strict=True):
        assert got.dtype == dtype and got.shape == want.shape
        torch.testing.assert_close(got.float(), want, atol=1e-2, rtol=1e-2)


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(0, 3),
    channels=st.integers(1, 4),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_property_shapes(batch, channels, height, width, seed):
    gen = torch.Generator().manual_seed(seed)
    _check_all(*_inputs((batch, channels, height, width), torch.float64, gen), gen)
