"""pyvidgen.ops.multiplicative_unit: the shared op tester and the op's own cases and errors.

The reference is checked against per-element loop oracles in tests/oracles/test_lstm_oracles.py.
"""

from __future__ import annotations

import pytest
import torch

import pyvidgen
from pyvidgen.ops import OPS, multiplicative_unit
from pyvidgen.testing import check_backend
from tests.conftest import DEVICE, kernel_backends
from tests.ops.op_tester import OpTester, assert_ok

BACKENDS = kernel_backends()


class TestMultiplicativeUnit(OpTester):
    op_name = "multiplicative_unit"


@pytest.mark.parametrize("backend", BACKENDS)
def test_saturated_gates(backend, rng):
    """Pre-activations of tens: sigmoids and tanhs at 0 and ±1 (the exp range limits of fast kernels)."""
    op = OPS["multiplicative_unit"]
    pre, h = op.sample((2, 3, 6, 5), device=DEVICE, generator=rng, magnitude=40.0)
    pre[0, :, 0, 0] = torch.tensor([100.0, -100.0, 88.5, -88.5, 87.0, -87.0, 1e4, -1e4, 9.5, -9.5, 0.0, -0.0])
    h[1, :, 2, 2] = torch.tensor([1e3, -1e3, 30.0])
    assert_ok(check_backend(op, backend, (pre, h), rng), backend)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_nan_stays_in_its_cell(backend, rng):
    pre, h = OPS["multiplicative_unit"].sample((2, 2, 4, 4), dtype=torch.float64, generator=rng)
    pre[0, 0, 1, 1] = float("nan")  # g1 of channel 0
    pre[1, 3 * 2 + 1, 2, 3] = float("nan")  # u of channel 1
    h[1, 0, 3, 0] = float("nan")
    with pyvidgen.backend(backend):
        out = multiplicative_unit(pre.to(DEVICE), h.to(DEVICE))
    assert out[0, 0, 1, 1].isnan() and out[1, 1, 2, 3].isnan() and out[1, 0, 3, 0].isnan()
    assert out.isnan().sum() == 3


@pytest.mark.parametrize(
    ("pre_shape", "h_shape", "pattern"),
    [
        ((1, 8, 4), (1, 2, 4, 5), r"pre must be a 4-D tensor \(B, 4C, H, W\), got shape \(1, 8, 4\)"),
        ((1, 8, 4, 5), (2, 4, 5), r"h must be a 4-D tensor \(B, C, H, W\), got shape \(2, 4, 5\)"),
        ((1, 6, 4, 5), (1, 2, 4, 5), r"pre must have shape \(B, 4C, H, W\) = \(1, 8, 4, 5\) to match h"),
        ((2, 8, 4, 5), (1, 2, 4, 5), r"pre must have shape .* = \(1, 8, 4, 5\) .*got \(2, 8, 4, 5\)"),
        ((1, 8, 5, 4), (1, 2, 4, 5), r"pre must have shape .*got \(1, 8, 5, 4\)"),
    ],
)
def test_bad_shapes(pre_shape, h_shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        multiplicative_unit(torch.zeros(pre_shape), torch.zeros(h_shape))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to mix devices")
def test_cpu_cuda_mix():
    with pytest.raises(RuntimeError, match=r"pre is on cuda:0 but h is on cpu"):
        multiplicative_unit(torch.zeros(1, 8, 4, 5, device="cuda"), torch.zeros(1, 2, 4, 5))


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
def test_cpp_entry_point_messages():
    forward = torch.ops.pyvidgen_cpp.multiplicative_unit_forward
    backward = torch.ops.pyvidgen_cpp.multiplicative_unit_backward
    pre, h = torch.zeros(1, 8, 4, 5), torch.zeros(1, 2, 4, 5)
    with pytest.raises(ValueError, match=r"pre must have shape \(B, 4C, H, W\) = \[1, 8, 4, 5\], got \[1, 8, 5, 4\]"):
        forward(torch.zeros(1, 8, 5, 4), h)
    with pytest.raises(
        ValueError, match=r"grad_out must have shape \(B, C, H, W\) = \[1, 2, 4, 5\], got \[1, 2, 5, 4\]"
    ):
        backward(torch.zeros(1, 2, 5, 4), pre, h, [True, True])
    with pytest.raises(TypeError, match=r"grad_out has dtype Double but h has dtype Float"):
        backward(h.double(), pre, h, [True, True])
