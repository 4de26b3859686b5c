"""Triton ConvLSTM gate step against the reference: h, c_next and the gradients of gates, c and peephole.

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

from pyvidgen.kernels.reference import conv_lstm_gates as ref  # noqa: E402
from pyvidgen.kernels.triton import conv_lstm_gates as tcl  # noqa: E402

pytestmark = pytest.mark.triton

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-12, "rtol": 1e-12}}
PEEPHOLES = (None, "pixel", "channel")
# Sizes 1, primes and non-powers of two.
SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (3, 1, 2, 3), (2, 5, 1, 1), (1, 2, 1, 9), (2, 2, 7, 1)]


@pytest.fixture
def gen(request) -> torch.Generator:
    """A generator seeded per test (stable across runs, different between tests)."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def _randn(shape, dtype, gen, scale=1.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype=dtype, device=DEVICE)


def _inputs(shape, dtype, peephole, gen, scale=2.0):
    """gates (B, 4C, H, W), c (B, C, H, W) and a peephole of the given kind (or None)."""
    b, c, h, w = shape
    gates = _randn((b, 4 * c, h, w), dtype, gen, scale)
    cell = _randn(shape, dtype, gen, scale)
    weights = None
    if peephole == "pixel":
        weights = _randn((3, c, h, w), dtype, gen)
    elif peephole == "channel":
        weights = _randn((3, c, 1, 1), dtype, gen)
    return gates, cell, weights


def _check_all(gates, c, peephole, gen, tol=None):
    """Forward and every gradient equal the reference's (NaN where it is NaN); returns them all."""
    tol = tol or TOL[c.dtype]
    h, c_next = tcl.conv_lstm_gates_fwd(gates, c, peephole)
    ref_h, ref_c_next = ref.conv_lstm_gates(gates, c, peephole)
    assert h.dtype == c.dtype and c_next.dtype == c.dtype and h.shape == c.shape and c_next.shape == c.shape
    torch.testing.assert_close(h, ref_h, equal_nan=True, **tol)
    torch.testing.assert_close(c_next, ref_c_next, equal_nan=True, **tol)

    grad_h, grad_c_next = _randn(c.shape, c.dtype, gen), _randn(c.shape, c.dtype, gen)
    grads = tcl.conv_lstm_gates_bwd(grad_h, grad_c_next, gates, c, peephole)
    ref_grads = ref.conv_lstm_gates_backward(grad_h, grad_c_next, gates, c, peephole)
    for name, got, expected in zip(("grad_gates", "grad_c", "grad_peephole"), grads, ref_grads, strict=True):
        if expected is None:
            assert got is None, name
            continue
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        torch.testing.assert_close(got, expected, equal_nan=True, msg=lambda m, n=name: f"{n}: {m}", **tol)
    return (h, c_next, *grads)


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of 16 (forward) and 8 (backward) elements: tiny shapes take several programs."""
    monkeypatch.setattr(tcl, "_BLOCK", 16)
    monkeypatch.setattr(tcl, "_BLOCK_BWD", 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("shape", SHAPES)
def test_random(dtype, peephole, shape, gen):
    _check_all(*_inputs(shape, dtype, peephole, gen), gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("shape", [(5, 1, 2, 3), (3, 2, 3, 5), (2, 3, 1, 1), (2, 17, 1, 1)])
def test_tiny_blocks(dtype, peephole, shape, gen, tiny_blocks):
    """Items smaller than a block and spanning several, none a multiple of it: partial last blocks."""
    _check_all(*_inputs(shape, dtype, peephole, gen), gen)


@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_several_default_blocks(peephole, gen):
    """More elements than one default block, not a multiple of it."""
    _check_all(*_inputs((3, 5, 9, 31), torch.float32, peephole, gen), gen)


@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_empty_batch(peephole, gen):
    """No elements: empty outputs, and a zero peephole gradient (an empty sum), as in the reference."""
    gates, c, weights = _inputs((0, 3, 4, 5), torch.float32, peephole, gen)
    h, c_next, grad_gates, grad_c, grad_peephole = _check_all(gates, c, weights, gen)
    assert h.shape == c.shape and grad_gates.shape == gates.shape and grad_c.shape == c.shape
    if weights is not None:
        assert grad_peephole.shape == weights.shape and not grad_peephole.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("magnitude", [50.0, 1e4])
def test_large_magnitudes(dtype, peephole, magnitude, gen):
    """Saturated gates and cells: finite everywhere, and the reference's saturated values.

    A tanh through exp(2x), or a sigmoid through exp(-x), would give inf / inf = NaN here.
    """
    shape = (2, 3, 4, 5)
    gates, c, weights = _inputs(shape, dtype, peephole, gen)
    signs = torch.randint(0, 2, gates.shape, generator=gen).to(dtype=dtype, device=DEVICE) * 2 - 1
    gates = signs * magnitude
    c = torch.where(c > 0, 50.0, -50.0).to(dtype)
    outputs = _check_all(gates, c, weights, gen)
    for t in outputs:
        if t is not None:
            assert torch.isfinite(t).all()


@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_saturated_values_exact(peephole, gen):
    """All gates +inf: i = f = o = 1, g = 1, so c_next = c + 1, h = tanh(c + 1), no gradient to the gates."""
    shape = (2, 3, 2, 3)
    _, c, weights = _inputs(shape, torch.float32, peephole, gen)
    gates = torch.full((2, 12, 2, 3), float("inf"), device=DEVICE)
    h, c_next, grad_gates, grad_c, _ = _check_all(gates, c, weights, gen)
    torch.testing.assert_close(c_next, c + 1.0)
    torch.testing.assert_close(h, torch.tanh(c + 1.0))
    assert not grad_gates.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy
def test_nan_propagates(dtype, peephole, gen):
    """NaN in gates, c or the peephole: NaN exactly where the reference has NaN, in every output."""
    shape = (2, 3, 4, 5)
    gates, c, weights = _inputs(shape, dtype, peephole, gen)
    gates = torch.where(torch.rand(gates.shape, generator=gen).to(DEVICE) < 0.05, float("nan"), gates)
    c = torch.where(torch.rand(c.shape, generator=gen).to(DEVICE) < 0.05, float("nan"), c)
    if weights is not None:
        weights = weights.clone()
        weights.view(-1)[1] = float("nan")
    h, c_next, grad_gates, grad_c, _ = _check_all(gates, c, weights, gen)
    assert torch.isnan(h).any() and not torch.isnan(h).all()
    assert torch.isnan(grad_gates).any() and torch.isnan(grad_c).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_half_inputs(dtype, peephole, gen):
    """Half inputs are upcast inside the kernel: close to the float32 reference, results in half."""
    gates, c, weights = _inputs((2, 3, 4, 5), dtype, peephole, gen)
    grad_h, grad_c_next = _randn(c.shape, dtype, gen), _randn(c.shape, dtype, gen)
    up = (gates.float(), c.float(), weights.float() if weights is not None else None)
    outs = tcl.conv_lstm_gates_fwd(gates, c, weights)
    grads = tcl.conv_lstm_gates_bwd(grad_h, grad_c_next, gates, c, weights)
    expected = (*ref.conv_lstm_gates(*up), *ref.conv_lstm_gates_backward(grad_h.float(), grad_c_next.float(), *up))
    for got, want in zip((*outs, *grads), expected, strict=True):
        if want is None:
            assert got is None
            continue
        assert got.dtype == dtype and got.shape == want.shape
        torch.testing.assert_close(got.float(), want, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("peephole", ["pixel", "channel"])
def test_backward_is_deterministic(peephole, gen, tiny_blocks):
    gates, c, weights = _inputs((3, 2, 3, 5), torch.float32, peephole, gen)
    grad_h, grad_c_next = _randn(c.shape, torch.float32, gen), _randn(c.shape, torch.float32, gen)
    first = tcl.conv_lstm_gates_bwd(grad_h, grad_c_next, gates, c, weights)
    second = tcl.conv_lstm_gates_bwd(grad_h, grad_c_next, gates, c, weights)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(0, 3),
    channels=st.integers(1, 4),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    peephole=st.sampled_from(PEEPHOLES),
    seed=st.integers(0, 2**16),
)
def test_property_shapes(batch, channels, height, width, peephole, seed):
    gen = torch.Generator().manual_seed(seed)
    _check_all(*_inputs((batch, channels, height, width), torch.float64, peephole, gen), gen)
