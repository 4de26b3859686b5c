"""pyvidgen.ops.flow_smoothness: the shared op tester and the op's own cases and errors."""

from __future__ import annotations

import pytest
import torch

import pyvidgen
from pyvidgen.kernels.reference import flow_smoothness as reference
from pyvidgen.ops import flow_smoothness, flow_smoothness_grad
from tests.conftest import DEVICE, kernel_backends
from tests.ops.op_tester import OpTester

BACKENDS = kernel_backends()


class TestFlowSmoothness(OpTester):
    op_name = "flow_smoothness"


def _value_and_grad(backend, flow, delta):
    flow = flow.detach().requires_grad_()
    with pyvidgen.backend(backend):
        value = flow_smoothness(flow, delta=delta)
        (grad,) = torch.autograd.grad(value * 1.7, flow)
    return value.detach(), grad


def test_reference_matches_a_loop():
    """The reference against the definition written out pixel by pixel."""
    flow = torch.randn(2, 2, 4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.5
    delta, total = 0.7, 0.0
    for b in range(2):
        for ch in range(2):
            for i in range(4):
                for j in range(5):
                    for di, dj in ((0, 1), (1, 0)):
                        if i + di < 4 and j + dj < 5:
                            d = float(flow[b, ch, i + di, j + dj] - flow[b, ch, i, j])
                            total += d * d / 2 if abs(d) <= delta else delta * (abs(d) - delta / 2)
    assert float(reference.flow_smoothness(flow, delta)) == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_differences_exactly_at_delta_and_nan(backend):
    flow = torch.zeros(1, 2, 3, 4, dtype=torch.float64, device=DEVICE)
    flow[0, 0, :, 1:] = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)  # differences of exactly delta
    expected = _value_and_grad("reference", flow, 0.5)
    torch.testing.assert_close(_value_and_grad(backend, flow, 0.5), expected)
    flow[0, 1, 1, 1] = float("nan")
    value, grad = _value_and_grad(backend, flow, 0.5)
    assert value.isnan()
    torch.testing.assert_close(grad, _value_and_grad("reference", flow, 0.5)[1], equal_nan=True)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_half_flows_sum_in_float32(backend, rng):
    """16 x 2 x 64 x 64 order-one differences sum past float16's largest value: the penalty is float32."""
    flow = torch.randn(16, 2, 64, 64, generator=rng).to(DEVICE)
    with pyvidgen.backend(backend):
        for dtype in (torch.float16, torch.bfloat16):
            value = flow_smoothness(flow.to(dtype))
            assert value.dtype == torch.float32 and value.isfinite()
            torch.testing.assert_close(
                value, reference.flow_smoothness(flow.to(dtype).double()).float(), rtol=1e-4, atol=0
            )


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_grad_helper_scales(backend, rng):
    flow = torch.randn(2, 2, 6, 5, generator=rng, dtype=torch.float64).to(DEVICE)
    with pyvidgen.backend(backend):
        grad = flow_smoothness_grad(flow, delta=0.4, scale=1e-3)
    torch.testing.assert_close(grad, 1e-3 * reference.flow_smoothness_grad(flow, 0.4))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"delta": 0.0}, r"delta must be a finite number > 0, got 0.0"),
        ({"delta": float("inf")}, r"delta must be a finite number > 0, got inf"),
        ({"delta": -1}, r"delta must be a finite number > 0, got -1.0"),
    ],
)
def test_bad_delta(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        flow_smoothness(torch.zeros(1, 2, 4, 4), **kwargs)
    with pytest.raises(ValueError, match=pattern):
        flow_smoothness_grad(torch.zeros(1, 2, 4, 4), **kwargs)


def test_bad_grad_scale():
    with pytest.raises(ValueError, match=r"scale must be a 0-dim tensor or a number, got shape \(2,\)"):
        flow_smoothness_grad(torch.zeros(1, 2, 3, 3), scale=torch.ones(2))
    with pytest.raises(TypeError, match=r"scale has dtype torch.float64 but flow has dtype torch.float32"):
        flow_smoothness_grad(torch.zeros(1, 2, 3, 3), scale=torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
def test_cpp_entry_point_messages():
    flow = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match=r"delta must be a finite number > 0, got -1"):
        torch.ops.pyvidgen_cpp.flow_smoothness_forward(flow, -1.0)
    with pytest.raises(ValueError, match=r"grad_loss must have shape \(\) = \[\], got \[2\]"):
        torch.ops.pyvidgen_cpp.flow_smoothness_backward(torch.ones(2), flow, 1.0, [True])
