"""Every module under torch.autocast (CPU bfloat16 and float16 here; CUDA in benchmarks/gpu_check.py).

Mixed precision is how these models are trained on GPUs: inside autocast a convolution returns the
low-precision dtype while states, peepholes and user inputs stay float32. Each module must run unchanged,
forward and backward, and agree with its float32 result within the low-precision rounding.
"""

from __future__ import annotations

import pytest
import torch

from pyvidgen.nn import ConvLSTM, ConvLSTMCell, FlowWarp, HuberPenalty, MultiplicativeUnit, ResidualMultiplicativeBlock

DTYPES = [torch.bfloat16, torch.float16]


def _compare_autocast(build, make_inputs, dtype, rng, rtol=5e-2):
    """Run a module in float32 and under autocast from the same weights and inputs; compare outputs and grads."""
    results = []
    for enabled in (False, True):
        torch.manual_seed(0)
        module = build()
        inputs = [t.clone().requires_grad_() for t in make_inputs(torch.Generator().manual_seed(1))]
        with torch.autocast("cpu", dtype=dtype, enabled=enabled):
            out = module(*inputs)
        flat = torch.cat([o.float().flatten() for o in _tensors(out)])
        weights = torch.randn(flat.shape, generator=torch.Generator().manual_seed(2))
        (flat * weights).sum().backward()
        grads = [t.grad for t in inputs] + [p.grad for p in module.parameters() if p.grad is not None]
        results.append((flat.detach(), torch.cat([g.float().flatten() for g in grads])))
    (out32, grads32), (out16, grads16) = results
    assert out16.isfinite().all() and grads16.isfinite().all()
    scale = out32.abs().max().clamp_min(1.0)
    torch.testing.assert_close(out16 / scale, out32 / scale, rtol=rtol, atol=rtol)
    assert torch.nn.functional.cosine_similarity(grads16, grads32, dim=0) > 0.98


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    raise TypeError(type(out))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("peephole_shape", [None, "channel", "pixel"])
def test_conv_lstm_cell(dtype, peephole_shape, rng):
    def build():
        cell = ConvLSTMCell(
            3,
            8,
            3,
            peephole=peephole_shape is not None,
            peephole_shape=peephole_shape or "channel",
            peephole_size=(8, 8),
        )
        if cell.peephole is not None:
            torch.nn.init.normal_(cell.peephole, std=0.3)  # zero-initialised: make them count
        return cell

    _compare_autocast(lambda: step_twice(build()), lambda g: [torch.randn(2, 3, 8, 8, generator=g)], dtype, rng)


class _Wrapped(torch.nn.Module):
    """A callable that also owns the module's parameters (so the helper can find their gradients)."""

    def __init__(self, module, fn):
        super().__init__()
        self.module, self.fn = module, fn

    def forward(self, *args):
        return self.fn(self.module, *args)


def step_twice(cell):
    return _Wrapped(cell, lambda m, x: m(x, m(x)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_conv_lstm_stack(dtype, bidirectional, rng):
    build = lambda: ConvLSTM(2, [6, 4], [3, (3, 5)], peephole=True, bidirectional=bidirectional)  # noqa: E731
    _compare_autocast(build, lambda g: [torch.randn(2, 4, 2, 8, 8, generator=g)], dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
def test_multiplicative_unit_and_block(dtype, rng):
    _compare_autocast(lambda: MultiplicativeUnit(4), lambda g: [torch.randn(2, 4, 8, 8, generator=g)], dtype, rng)
    _compare_autocast(
        lambda: ResidualMultiplicativeBlock(8, dilation=2), lambda g: [torch.randn(2, 8, 8, 8, generator=g)], dtype, rng
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalized", [False, True])
def test_flow_warp_after_a_convolution(dtype, normalized, rng):
    """The flow comes out of a convolution (low precision) and the features do not: promoted, never rounded down."""

    class Warp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.flow = torch.nn.Conv2d(3, 2, 3, padding=1)
            self.penalty, self.warp = HuberPenalty(1e-2), FlowWarp("border", normalized=normalized)

        def forward(self, x):
            return self.warp(x, self.penalty(self.flow(x) * (0.3 if normalized else 2.0)))

    _compare_autocast(Warp, lambda g: [torch.randn(2, 3, 9, 11, generator=g)], dtype, rng)


def test_conv_lstm_cell_state_dtypes_under_autocast():
    """The cell runs in the autocast dtype (as torch.lstm_cell does), a float32 peephole included."""
    cell = ConvLSTMCell(3, 4, 3, peephole=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, c = cell(torch.randn(1, 3, 5, 5))
        h, c = cell(torch.randn(1, 3, 5, 5), (h.float(), c.float()))
    assert h.dtype == c.dtype == torch.bfloat16
