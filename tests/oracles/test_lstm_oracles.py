"""The gate references against the loop oracles, and their closed-form backwards against autograd."""

from __future__ import annotations

import pytest
import torch

from pyvidgen.kernels.reference import conv_lstm_gates as ref_lstm
from pyvidgen.kernels.reference import multiplicative_unit as ref_mu
from tests.oracles.lstm_oracles import conv_lstm_gates_oracle, multiplicative_unit_oracle, sigmoid

SHAPES = [(2, 3, 4, 5), (1, 1, 1, 1), (1, 2, 1, 7), (3, 1, 3, 1)]
PEEPHOLES = (None, "pixel", "channel")


def _peephole(kind, shape, rng):
    if kind is None:
        return None
    _, channels, height, width = shape
    size = (3, channels, height, width) if kind == "pixel" else (3, channels, 1, 1)
    return torch.randn(size, generator=rng, dtype=torch.float64)


def _gates(shape, rng, scale=2.5):
    batch, channels, height, width = shape
    return torch.randn(batch, 4 * channels, height, width, generator=rng, dtype=torch.float64) * scale


def test_sigmoid_oracle_edges():
    assert sigmoid(0.0) == 0.5 and sigmoid(float("inf")) == 1.0 and sigmoid(float("-inf")) == 0.0
    assert sigmoid(-800.0) == 0.0 and sigmoid(800.0) == 1.0 and sigmoid(float("nan")) != sigmoid(float("nan"))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_reference_conv_lstm_matches_oracle(rng, shape, peephole):
    gates, c, weights = _gates(shape, rng), torch.randn(shape, generator=rng, dtype=torch.float64), None
    weights = _peephole(peephole, shape, rng)
    expected = conv_lstm_gates_oracle(gates, c, weights)
    actual = ref_lstm.conv_lstm_gates(gates, c, weights)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e)


def test_reference_conv_lstm_nonfinite_matches_oracle(rng):
    shape = (1, 2, 2, 3)
    gates, c = _gates(shape, rng), torch.randn(shape, generator=rng, dtype=torch.float64)
    gates[0, :, 0, 0] = torch.tensor([float("inf"), float("-inf"), float("inf"), float("-inf")] * 2)
    gates[0, 1, 1, 2] = float("nan")
    gates[0, 6, 0, 1] = 1e3  # a saturated g
    c[0, 0, 1, 0] = float("nan")
    expected = conv_lstm_gates_oracle(gates, c)
    actual = ref_lstm.conv_lstm_gates(gates, c)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, equal_nan=True)
        assert a.isnan().sum() == 2


@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("used", ["both", "h", "c_next"])
def test_reference_conv_lstm_backward_is_autograd_of_forward(rng, peephole, used):
    shape = (2, 3, 4, 5)
    gates = _gates(shape, rng).requires_grad_()
    c = torch.randn(shape, generator=rng, dtype=torch.float64, requires_grad=True)
    weights = _peephole(peephole, shape, rng)
    leaves = [gates, c] + ([weights.requires_grad_()] if weights is not None else [])
    h, c_next = ref_lstm.conv_lstm_gates(gates, c, weights)
    grad_h = torch.randn(shape, generator=rng, dtype=torch.float64) if used != "c_next" else torch.zeros(shape)
    grad_c = torch.randn(shape, generator=rng, dtype=torch.float64) if used != "h" else torch.zeros(shape)
    expected = torch.autograd.grad((h, c_next), leaves, (grad_h.double(), grad_c.double()))
    actual = ref_lstm.conv_lstm_gates_backward(
        grad_h.double(), grad_c.double(), gates.detach(), c.detach(), weights.detach() if weights is not None else None
    )
    assert (actual[2] is None) == (weights is None)
    for a, e in zip(actual, expected, strict=False):
        torch.testing.assert_close(a, e)
    assert torch.autograd.gradcheck(lambda *args: ref_lstm.conv_lstm_gates(*args), tuple(leaves))


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_multiplicative_unit_matches_oracle(rng, shape):
    pre, h = _gates(shape, rng), torch.randn(shape, generator=rng, dtype=torch.float64) * 2
    torch.testing.assert_close(ref_mu.multiplicative_unit(pre, h), multiplicative_unit_oracle(pre, h))


def test_reference_multiplicative_unit_nonfinite_matches_oracle(rng):
    shape = (1, 2, 2, 3)
    pre, h = _gates(shape, rng), torch.randn(shape, generator=rng, dtype=torch.float64)
    pre[0, :, 0, 0] = torch.tensor([float("inf"), float("-inf")] * 4)
    pre[0, 7, 1, 2] = float("nan")
    h[0, 0, 1, 0] = float("-inf")  # sigmoid(g2) * -inf saturates the tanh: finite output
    out = ref_mu.multiplicative_unit(pre, h)
    torch.testing.assert_close(out, multiplicative_unit_oracle(pre, h), equal_nan=True)
    assert out.isnan().sum() == 1


def test_reference_multiplicative_unit_backward_is_autograd_of_forward(rng):
    shape = (2, 3, 4, 5)
    pre = _gates(shape, rng).requires_grad_()
    h = (torch.randn(shape, generator=rng, dtype=torch.float64) * 2).requires_grad_()
    out = ref_mu.multiplicative_unit(pre, h)
    grad_out = torch.randn(shape, generator=rng, dtype=torch.float64)
    expected = torch.autograd.grad(out, (pre, h), grad_out)
    actual = ref_mu.multiplicative_unit_backward(grad_out, pre.detach(), h.detach())
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e)
    assert torch.autograd.gradcheck(ref_mu.multiplicative_unit, (pre, h))
