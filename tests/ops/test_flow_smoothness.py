"""pyvidgen.ops.flow_smoothness: kernel backends against the reference, plus the op's contract."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pyvidgen
from pyvidgen.kernels.reference import flow_smoothness as reference
from pyvidgen.ops import flow_smoothness, flow_smoothness_grad
from tests.conftest import DEVICE, kernel_backends

BACKENDS = kernel_backends()
SHAPES = [(2, 2, 5, 7), (1, 2, 1, 1), (1, 3, 1, 9), (2, 2, 8, 1), (3, 2, 17, 13)]
TOLERANCE = {torch.float32: {"atol": 1e-4, "rtol": 1e-5}, torch.float64: {"atol": 1e-10, "rtol": 1e-10}}


def _value_and_grad(backend, flow, delta):
    flow = flow.detach().requires_grad_()
    with pyvidgen.backend(backend):
        value = flow_smoothness(flow, delta=delta)
        (grad,) = torch.autograd.grad(value * 1.7, flow)
    return value.detach(), grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("delta", [0.25, 1.0, 5.0])
def test_matches_reference(backend, dtype, delta, rng):
    for shape in SHAPES:
        flow = (torch.randn(shape, generator=rng, dtype=torch.float64) * 1.5).to(DEVICE, dtype)
        expected = _value_and_grad("reference", flow, delta)
        actual = _value_and_grad(backend, flow, delta)
        torch.testing.assert_close(actual[0], expected[0], **TOLERANCE[dtype])
        torch.testing.assert_close(actual[1], expected[1], **TOLERANCE[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_differences_exactly_at_delta_and_nan(backend):
    flow = torch.zeros(1, 2, 3, 4, dtype=torch.float64, device=DEVICE)
    flow[0, 0, :, 1:] = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)  # differences of exactly delta
    expected = _value_and_grad("reference", flow, 0.5)
    actual = _value_and_grad(backend, flow, 0.5)
    torch.testing.assert_close(actual, expected)
    flow[0, 1, 1, 1] = float("nan")
    value, grad = _value_and_grad(backend, flow, 0.5)
    assert value.isnan()
    torch.testing.assert_close(grad, _value_and_grad("reference", flow, 0.5)[1], equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_and_empty(backend, rng):
    flow = torch.randn(3, 9, 8, 2, generator=rng, dtype=torch.float64).to(DEVICE).permute(0, 3, 2, 1)
    torch.testing.assert_close(_value_and_grad(backend, flow, 1.0), _value_and_grad("reference", flow, 1.0))
    empty = torch.zeros(0, 2, 4, 4, device=DEVICE)
    value, grad = _value_and_grad(backend, empty, 1.0)
    assert value.item() == 0.0 and grad.shape == empty.shape


def test_gradcheck_float64(rng):
    backend = "cpp" if "cpp" in BACKENDS else "reference"
    flow = (torch.randn(2, 2, 5, 6, generator=rng, dtype=torch.float64) * 1.5).requires_grad_()
    with pyvidgen.backend(backend):
        assert torch.autograd.gradcheck(lambda f: flow_smoothness(f, delta=0.6), (flow,))


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_opcheck(backend, rng):
    flow = torch.randn(2, 2, 5, 4, generator=rng, requires_grad=True)
    with pyvidgen.backend(backend):
        torch.library.opcheck(torch.ops.pyvidgen.flow_smoothness.default, (flow, 0.5))
        torch.library.opcheck(
            torch.ops.pyvidgen.flow_smoothness_backward.default, (torch.tensor(2.0), flow.detach(), 0.5)
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_helper_scales(backend, rng):
    flow = torch.randn(2, 2, 6, 5, generator=rng, dtype=torch.float64)
    with pyvidgen.backend(backend):
        grad = flow_smoothness_grad(flow, delta=0.4, scale=1e-3)
    torch.testing.assert_close(grad, 1e-3 * reference.flow_smoothness_grad(flow, 0.4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic(backend, rng):
    flow = torch.randn(4, 2, 33, 31, generator=rng)
    first = _value_and_grad(backend, flow, 1.0)
    second = _value_and_grad(backend, flow, 1.0)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(0, 3), st.integers(1, 3), st.integers(1, 12), st.integers(1, 12)),
    delta=st.floats(0.05, 4.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_matches_reference(shape, delta, seed):
    backend = BACKENDS[0] if BACKENDS else "reference"
    flow = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    torch.testing.assert_close(_value_and_grad(backend, flow, delta), _value_and_grad("reference", flow, delta))


@pytest.mark.parametrize(
    ("flow", "kwargs", "error", "pattern"),
    [
        (torch.zeros(2, 4, 4), {}, ValueError, r"flow must be a 4-D tensor \(B, C, H, W\), got shape \(2, 4, 4\)"),
        (torch.zeros(1, 2, 4, 4, dtype=torch.int32), {}, TypeError, r"flow must have a floating-point dtype"),
        (torch.zeros(1, 2, 4, 4), {"delta": 0.0}, ValueError, r"delta must be a finite number > 0, got 0.0"),
        (torch.zeros(1, 2, 4, 4), {"delta": float("inf")}, ValueError, r"delta must be a finite number > 0"),
        ("flow", {}, TypeError, r"flow must be a torch.Tensor"),
    ],
)
def test_bad_inputs(flow, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        flow_smoothness(flow, **kwargs)


def test_bad_grad_scale():
    with pytest.raises(ValueError, match=r"scale must have shape \(\) = \(\), got \(2\)"):
        flow_smoothness_grad(torch.zeros(1, 2, 3, 3), scale=torch.ones(2))
    with pytest.raises(TypeError, match=r"scale has dtype torch.float64 but flow has dtype torch.float32"):
        flow_smoothness_grad(torch.zeros(1, 2, 3, 3), scale=torch.tensor(1.0, dtype=torch.float64))
