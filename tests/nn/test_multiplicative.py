"""pyvidgen.nn.MultiplicativeUnit and ResidualMultiplicativeBlock against VPN's formulas written out here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import pyvidgen
from pyvidgen._backend import _load_cpp
from pyvidgen.nn import MultiplicativeUnit, ResidualMultiplicativeBlock


def _cpp_has_mu() -> bool:
    return pyvidgen.available_backends("cpu")["cpp"] == "" and hasattr(_load_cpp()[0], "multiplicative_unit_forward")


BACKENDS = ["reference", "auto"] + (["cpp"] if _cpp_has_mu() else [])


def plain_mu(mu: MultiplicativeUnit, h):
    """σ(W1∗h)·tanh(σ(W2∗h)·h + σ(W3∗h)·tanh(W4∗h)) with the four convolutions done separately."""
    d, k = mu.conv.dilation[0], mu.conv.kernel_size[0]
    w, b = mu.conv.weight.chunk(4, dim=0), mu.conv.bias.chunk(4, dim=0)
    g1, g2, g3, u = (F.conv2d(h, w[i], b[i], padding=d * (k // 2), dilation=d) for i in range(4))
    return torch.sigmoid(g1) * torch.tanh(torch.sigmoid(g2) * h + torch.sigmoid(g3) * torch.tanh(u))


def plain_rmb(rmb: ResidualMultiplicativeBlock, x):
    h = F.conv2d(x, rmb.down.weight, rmb.down.bias)
    h = plain_mu(rmb.mu2, plain_mu(rmb.mu1, h))
    return x + F.conv2d(h, rmb.up.weight, rmb.up.bias)


def randomise(module, gen, scale=0.4):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return module


@pytest.mark.parametrize(("kernel_size", "dilation"), [(3, 1), (3, 2), (5, 4), (1, 1)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_mu_equals_formula(kernel_size, dilation, backend, rng):
    mu = randomise(MultiplicativeUnit(5, kernel_size, dilation), rng).double()
    assert mu.conv.out_channels == 20 and mu.conv.dilation == (dilation, dilation)
    h = torch.randn(2, 5, 9, 7, generator=rng, dtype=torch.float64)
    with pyvidgen.backend(backend):
        out = mu(h)
    assert out.shape == h.shape
    torch.testing.assert_close(out, plain_mu(mu, h))


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_rmb_equals_formula(dilation, backend, rng):
    rmb = randomise(ResidualMultiplicativeBlock(8, 3, dilation), rng).double()
    assert (rmb.down.in_channels, rmb.down.out_channels, rmb.up.out_channels) == (8, 4, 8)
    assert rmb.mu1.channels == rmb.mu2.channels == 4 and rmb.mu1.conv.dilation == (dilation, dilation)
    x = torch.randn(2, 8, 6, 10, generator=rng, dtype=torch.float64)
    with pyvidgen.backend(backend):
        out = rmb(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, plain_rmb(rmb, x))


def test_dilation_widens_the_receptive_field():
    """A single pixel's influence reaches exactly dilation * (k // 2) pixels away, per MU."""
    for dilation in (1, 3):
        mu = MultiplicativeUnit(2, 3, dilation).double()
        h = torch.zeros(1, 2, 15, 15, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(mu(h)[0, :, 7, 7].sum(), h)
        rows = grad.abs().sum(dim=(0, 1, 3)).nonzero().flatten()
        assert rows.min() == 7 - dilation and rows.max() == 7 + dilation


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "auto"])
def test_gradients_flow_to_input_and_all_parameters(backend, rng):
    rmb = randomise(ResidualMultiplicativeBlock(4, 3, 2), rng).double()
    x = torch.randn(1, 4, 5, 5, generator=rng, dtype=torch.float64, requires_grad=True)
    names, params = zip(*rmb.named_parameters(), strict=True)

    def call(x, *p):
        return functional_call(rmb, dict(zip(names, p, strict=True)), (x,))

    inputs = (x, *(p.detach().clone().requires_grad_() for p in params))
    with pyvidgen.backend(backend):
        assert torch.autograd.gradcheck(call, inputs, fast_mode=True)
        grads = torch.autograd.grad(rmb(x).square().sum(), [x, *rmb.parameters()])
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(("masked", "color_groups"), [(False, 1), (True, 1), (True, 3)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_channels_last_model_stays_channels_last(masked, color_groups, backend, rng):
    """A block of a channels_last model (weights and input channels_last, float32) gives the NCHW block's
    output and gradients, and keeps the layout: the fused ops hand channels_last feature maps on as they are."""
    rmb = randomise(ResidualMultiplicativeBlock(12, 3, 1, masked=masked, color_groups=color_groups), rng)
    x = torch.randn(2, 12, 9, 11, generator=rng)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    x = x.requires_grad_()
    with pyvidgen.backend(backend):
        expected = rmb(x)
        (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
        rmb_cl = rmb.to(memory_format=torch.channels_last)
        actual = rmb_cl(x_cl)
        (actual_grad,) = torch.autograd.grad(actual.square().sum(), x_cl)
    assert actual.is_contiguous(memory_format=torch.channels_last) and not actual.is_contiguous()
    assert actual_grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(actual_grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_compiles_fullgraph(rng):
    rmb = randomise(ResidualMultiplicativeBlock(4), rng)
    x = torch.randn(2, 4, 6, 6, generator=rng, requires_grad=True)

    def loss(x):
        return rmb(x).square().mean()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(torch.autograd.grad(compiled(x), x), torch.autograd.grad(loss(x), x))


def test_bad_arguments(rng):
    with pytest.raises(ValueError, match=r"kernel_size must be a positive odd int.*got 4"):
        MultiplicativeUnit(4, 4)
    with pytest.raises(ValueError, match=r"dilation must be an int >= 1, got 0"):
        MultiplicativeUnit(4, 3, 0)
    with pytest.raises(ValueError, match=r"channels \(2c\) must be even, got 5"):
        ResidualMultiplicativeBlock(5)
    with pytest.raises(ValueError, match=r"h must be \(B, C, H, W\) with C = 4, got \(1, 3, 5, 5\)"):
        MultiplicativeUnit(4)(torch.randn(1, 3, 5, 5, generator=rng))
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W\) with C = 8, got \(8, 5, 5\)"):
        ResidualMultiplicativeBlock(8)(torch.randn(8, 5, 5, generator=rng))
