"""The reference implementations against the loop oracles (the first layer of truth)."""

from __future__ import annotations

import pytest
import torch

from pyvidgen.kernels.reference import flow_smoothness as ref_smoothness
from pyvidgen.kernels.reference import flow_warp as ref_warp
from tests.oracles.flow_oracles import (
    flow_smoothness_oracle,
    flow_warp_flow_derivative_oracle,
    flow_warp_oracle,
)

SHAPES = [(2, 3, 5, 7), (1, 2, 1, 6), (1, 2, 4, 1), (1, 1, 1, 1), (2, 1, 6, 6)]


@pytest.mark.parametrize("mode", ref_warp.PADDING_MODES)
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_reference_warp_matches_oracle(rng, mode, normalized, shape):
    batch, channels, height, width = shape
    x = torch.randn(shape, generator=rng, dtype=torch.float64)
    scale = 0.8 if normalized else 3.0
    flow = torch.randn(batch, 2, height, width, generator=rng, dtype=torch.float64) * scale
    flow[0, 0, 0, 0] = 40.5  # far outside, several reflection periods away
    torch.testing.assert_close(
        ref_warp.flow_warp(x, flow, mode, normalized), flow_warp_oracle(x, flow, mode, normalized)
    )


@pytest.mark.parametrize("mode", ref_warp.PADDING_MODES)
def test_reference_warp_integer_and_border_positions(rng, mode):
    """Integer flows land exactly on pixels and on the borders: values and right-derivatives."""
    x = torch.randn(1, 2, 4, 5, generator=rng, dtype=torch.float64)
    flow = torch.randint(-6, 7, (1, 2, 4, 5), generator=rng).double()
    flow[0, 0, 0, :] = 4 - torch.arange(5).double()  # lands exactly on the last column
    flow[0, 1, :, 0] = -torch.arange(4).double()  # lands on row 0
    torch.testing.assert_close(ref_warp.flow_warp(x, flow, mode), flow_warp_oracle(x, flow, mode))
    grad_out = torch.randn(1, 2, 4, 5, generator=rng, dtype=torch.float64)
    _, grad_flow = ref_warp.flow_warp_backward(grad_out, x, flow, mode)
    torch.testing.assert_close(
        grad_flow, flow_warp_flow_derivative_oracle(x, flow, grad_out, mode), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("mode", ref_warp.PADDING_MODES)
def test_reference_warp_nonfinite_flow_gives_nan(mode):
    x = torch.ones(1, 2, 3, 3, dtype=torch.float64)
    flow = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    flow[0, 0, 1, 1] = float("nan")
    flow[0, 1, 2, 2] = float("inf")
    out = ref_warp.flow_warp(x, flow, mode)
    assert out[0, :, 1, 1].isnan().all() and out[0, :, 2, 2].isnan().all()
    assert torch.isfinite(out[0, :, 0]).all()
    torch.testing.assert_close(out, flow_warp_oracle(x, flow, mode), equal_nan=True)


@pytest.mark.parametrize("mode", ref_warp.PADDING_MODES)
@pytest.mark.parametrize("normalized", [False, True])
def test_reference_backward_is_autograd_of_forward(rng, mode, normalized):
    x = torch.randn(2, 3, 5, 6, generator=rng, dtype=torch.float64, requires_grad=True)
    flow = (torch.randn(2, 2, 5, 6, generator=rng, dtype=torch.float64) * 2).requires_grad_()
    out = ref_warp.flow_warp(x, flow, mode, normalized)
    grad_out = torch.randn(out.shape, generator=rng, dtype=torch.float64)
    expected = torch.autograd.grad(out, (x, flow), grad_out)
    actual = ref_warp.flow_warp_backward(grad_out, x.detach(), flow.detach(), mode, normalized)
    torch.testing.assert_close(actual[0], expected[0])
    torch.testing.assert_close(actual[1], expected[1])
    assert torch.autograd.gradcheck(lambda a, f: ref_warp.flow_warp(a, f, mode, normalized), (x, flow))


@pytest.mark.parametrize("mode", ref_warp.PADDING_MODES)
@pytest.mark.parametrize("normalized", [False, True])
def test_reference_matches_grid_sample(rng, mode, normalized):
    """For H, W > 1 the contract is grid_sample(align_corners=True) on the normalised grid."""
    x = torch.randn(2, 3, 7, 9, generator=rng, dtype=torch.float64)
    flow = torch.randn(2, 2, 7, 9, generator=rng, dtype=torch.float64) * (0.7 if normalized else 4.0)
    torch.testing.assert_close(
        ref_warp.flow_warp(x, flow, mode, normalized), ref_warp.flow_warp_grid_sample(x, flow, mode, normalized)
    )


@pytest.mark.parametrize("shape", [(2, 2, 5, 7), (1, 3, 1, 4), (1, 2, 6, 1), (1, 1, 1, 1)])
@pytest.mark.parametrize("delta", [0.3, 1.0])
def test_reference_smoothness_matches_oracle(rng, shape, delta):
    flow = torch.randn(shape, generator=rng, dtype=torch.float64) * 1.5
    torch.testing.assert_close(
        ref_smoothness.flow_smoothness(flow, delta),
        torch.tensor(flow_smoothness_oracle(flow, delta), dtype=torch.float64),
    )


def test_reference_smoothness_grad_is_autograd(rng):
    flow = (torch.randn(2, 2, 6, 5, generator=rng, dtype=torch.float64) * 2).requires_grad_()
    (expected,) = torch.autograd.grad(ref_smoothness.flow_smoothness(flow, 0.5), flow)
    torch.testing.assert_close(ref_smoothness.flow_smoothness_grad(flow.detach(), 0.5), expected)
    assert torch.autograd.gradcheck(lambda f: ref_smoothness.flow_smoothness(f, 0.5), (flow,))
