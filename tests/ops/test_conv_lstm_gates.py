"""pyvidgen.ops.conv_lstm_gates: the shared op tester and the op's own cases and errors.

The reference is checked against per-element loop oracles in tests/oracles/test_lstm_oracles.py.
"""

from __future__ import annotations

import pytest
import torch

import pyvidgen
from pyvidgen.ops import OPS, conv_lstm_gates
from pyvidgen.testing import check_backend
from tests.conftest import DEVICE, kernel_backends
from tests.ops.op_tester import OpTester, assert_ok

BACKENDS = kernel_backends()


class TestConvLSTMGates(OpTester):
    op_name = "conv_lstm_gates"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("peephole", [None, "pixel", "channel"])
def test_saturated_gates(backend, peephole, rng):
    """Pre-activations of tens: sigmoids and tanhs at 0 and ±1 (the exp range limits of fast kernels)."""
    op = OPS["conv_lstm_gates"]
    gates, c, weights = op.sample(
        (2, 3, 6, 5), device=DEVICE, generator=rng, magnitude=40.0, variant=f"peephole={peephole or 'none'}"
    )
    gates[0, :, 0, 0] = torch.tensor([100.0, -100.0, 88.5, -88.5, 87.0, -87.0, 1e4, -1e4, 9.5, -9.5, 0.0, -0.0])
    assert_ok(check_backend(op, backend, (gates, c, weights), rng), backend)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_nan_stays_in_its_cell(backend, rng):
    gates, c, _ = OPS["conv_lstm_gates"].sample((2, 2, 4, 4), dtype=torch.float64, generator=rng)
    gates[0, 0, 1, 1] = float("nan")  # i of channel 0
    gates[1, 2 * 2 + 1, 2, 3] = float("nan")  # g of channel 1
    c[1, 0, 3, 0] = float("nan")
    with pyvidgen.backend(backend):
        h, c_next = conv_lstm_gates(gates.to(DEVICE), c.to(DEVICE))
    for out in (h, c_next):
        assert out[0, 0, 1, 1].isnan() and out[1, 1, 2, 3].isnan() and out[1, 0, 3, 0].isnan()
        assert out.isnan().sum() == 3


def test_without_peepholes_the_backward_returns_an_empty_gradient(rng):
    """Custom ops return tensors: an empty tensor stands for "no peephole", on every backend."""
    gates, c, _ = OPS["conv_lstm_gates"].sample((1, 2, 3, 3), dtype=torch.float64, generator=rng)
    for backend in ["reference", *BACKENDS]:
        with pyvidgen.backend(backend):
            grads = torch.ops.pyvidgen.conv_lstm_gates_backward(c, c, gates, c, None, [True, True, False])
        assert grads[2].numel() == 0 and grads[0].shape == gates.shape


BAD_SHAPES = [
    ((1, 8, 4), (1, 2, 4, 5), None, r"gates must be a 4-D tensor \(B, 4C, H, W\), got shape \(1, 8, 4\)"),
    ((1, 8, 4, 5), (2, 4, 5), None, r"c must be a 4-D tensor \(B, C, H, W\), got shape \(2, 4, 5\)"),
    ((1, 6, 4, 5), (1, 2, 4, 5), None, r"gates must have shape \(B, 4C, H, W\) = \(1, 8, 4, 5\) to match c"),
    ((2, 8, 4, 5), (1, 2, 4, 5), None, r"gates must have shape .* = \(1, 8, 4, 5\) .*got \(2, 8, 4, 5\)"),
    ((1, 8, 5, 4), (1, 2, 4, 5), None, r"gates must have shape .*got \(1, 8, 5, 4\)"),
    ((1, 8, 4, 5), (1, 2, 4, 5), (2, 2, 4, 5), r"peephole must have shape \(3, C, H, W\) = \(3, 2, 4, 5\) or"),
    ((1, 8, 4, 5), (1, 2, 4, 5), (3, 2, 4, 1), r"\(3, C, 1, 1\) = \(3, 2, 1, 1\) to match c .*, got \(3, 2, 4, 1\)"),
    ((1, 8, 4, 5), (1, 2, 4, 5), (3, 1, 1, 1), r"peephole must have shape .*got \(3, 1, 1, 1\)"),
    ((1, 8, 4, 5), (1, 2, 4, 5), (3, 2, 4), r"peephole must be a 4-D tensor \(3, C, H, W\) or \(3, C, 1, 1\)"),
]


@pytest.mark.parametrize(("gates_shape", "c_shape", "peephole_shape", "pattern"), BAD_SHAPES)
def test_bad_shapes(gates_shape, c_shape, peephole_shape, pattern):
    peephole = torch.zeros(peephole_shape) if peephole_shape is not None else None
    with pytest.raises(ValueError, match=pattern):
        conv_lstm_gates(torch.zeros(gates_shape), torch.zeros(c_shape), peephole)


def test_peephole_must_be_a_tensor_or_none():
    with pytest.raises(TypeError, match=r"peephole must be a torch.Tensor"):
        conv_lstm_gates(torch.zeros(1, 8, 4, 5), torch.zeros(1, 2, 4, 5), 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to mix devices")
def test_cpu_cuda_mix():
    with pytest.raises(RuntimeError, match=r"gates is on cuda:0 but c is on cpu"):
        conv_lstm_gates(torch.zeros(1, 8, 4, 5, device="cuda"), torch.zeros(1, 2, 4, 5))


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
def test_cpp_entry_point_messages():
    forward = torch.ops.pyvidgen_cpp.conv_lstm_gates_forward
    backward = torch.ops.pyvidgen_cpp.conv_lstm_gates_backward
    gates, c = torch.zeros(1, 8, 4, 5), torch.zeros(1, 2, 4, 5)
    with pytest.raises(ValueError, match=r"gates must have shape \(B, 4C, H, W\) = \[1, 8, 4, 5\], got \[1, 7, 4, 5\]"):
        forward(torch.zeros(1, 7, 4, 5), c, None)
    with pytest.raises(
        ValueError, match=r"peephole must have shape \(3, C, H, W\) = \[3, 2, 4, 5\], got \[3, 2, 1, 5\]"
    ):
        forward(gates, c, torch.zeros(3, 2, 1, 5))
    with pytest.raises(TypeError, match=r"peephole has dtype Double but c has dtype Float"):
        forward(gates, c, torch.zeros(3, 2, 1, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"grad_h must have shape \(B, C, H, W\) = \[1, 2, 4, 5\], got \[1, 2, 4, 4\]"):
        backward(torch.zeros(1, 2, 4, 4), c, gates, c, None, [True, True, True])
    with pytest.raises(TypeError, match=r"grad_c_next has dtype Double but c has dtype Float"):
        backward(c, c.double(), gates, c, None, [True, True, True])
