"""pyvidgen.nn.FlowWarp and HuberPenalty."""

from __future__ import annotations

import pytest
import torch

import pyvidgen
from pyvidgen.kernels.reference import flow_smoothness as ref_smoothness
from pyvidgen.nn import FlowWarp, HuberPenalty
from pyvidgen.ops import flow_warp


def test_flow_warp_module_is_the_op(rng):
    x = torch.randn(2, 3, 6, 5, generator=rng)
    flow = torch.randn(2, 2, 6, 5, generator=rng)
    module = FlowWarp(padding_mode="reflection", normalized=True)
    assert torch.equal(module(x, flow), flow_warp(x, flow, padding_mode="reflection", normalized=True))
    assert "reflection" in repr(module)
    with pytest.raises(ValueError, match=r"padding_mode must be one of"):
        FlowWarp(padding_mode="circular")


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_huber_penalty_is_identity_forward_and_injects_gradient(backend, rng):
    flow = (torch.randn(2, 2, 7, 6, generator=rng, dtype=torch.float64) * 2).requires_grad_()
    penalty = HuberPenalty(weight=0.3, delta=0.5)
    with pyvidgen.backend(backend):
        out = penalty(flow)
        assert torch.equal(out, flow)
        upstream = torch.randn(out.shape, generator=rng, dtype=torch.float64)
        (grad,) = torch.autograd.grad(out, flow, upstream)
    expected = upstream + 0.3 * ref_smoothness.flow_smoothness_grad(flow.detach(), 0.5)
    torch.testing.assert_close(grad, expected)


def test_huber_penalty_equals_adding_the_loss(rng):
    """Injecting the gradient is the same as adding weight * flow_smoothness to the loss."""
    flow = (torch.randn(1, 2, 5, 5, generator=rng, dtype=torch.float64) * 2).requires_grad_()
    target = torch.randn(1, 2, 5, 5, generator=rng, dtype=torch.float64)
    (injected,) = torch.autograd.grad((HuberPenalty(1e-2, 1.0)(flow) - target).square().sum(), flow)
    loss = (flow - target).square().sum() + 1e-2 * ref_smoothness.flow_smoothness(flow, 1.0)
    (added,) = torch.autograd.grad(loss, flow)
    torch.testing.assert_close(injected, added)


def test_huber_penalty_no_grad_and_zero_weight(rng):
    flow = torch.randn(1, 2, 4, 4, generator=rng)
    assert HuberPenalty()(flow) is flow
    flow.requires_grad_()
    assert HuberPenalty(weight=0.0)(flow) is flow
    with pytest.raises(ValueError, match=r"delta must be > 0"):
        HuberPenalty(delta=-1.0)


def test_huber_penalty_compiles_fullgraph(rng):
    flow = (torch.randn(1, 2, 6, 6, generator=rng) * 2).requires_grad_()
    penalty, warp = HuberPenalty(1e-2), FlowWarp()
    x = torch.randn(1, 3, 6, 6, generator=rng)

    def step(x, flow):
        return warp(x, penalty(flow)).square().sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    (grad,) = torch.autograd.grad(compiled(x, flow), flow)
    (expected,) = torch.autograd.grad(step(x, flow), flow)
    torch.testing.assert_close(grad, expected)
