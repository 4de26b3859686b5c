"""pytest-benchmark suite of the ConvLSTM layer: :class:`pyvidgen.nn.ConvLSTM` vs the popular per-step formulation.

Implementations (see :data:`pyvidgen.bench.layers.CONV_LSTM_PROVIDERS`): ``pyvidgen`` (backend auto),
``naive`` (:class:`pyvidgen.bench.conv_lstm_baseline.NaiveConvLSTM`, same weights) and
``pyvidgen_reference``. Shapes are (batch, steps, channels, size, kernel); "forward" runs under no_grad.
For one interleaved table with ratios, call :func:`pyvidgen.bench.layers.time_conv_lstm_layer`.
"""

from __future__ import annotations

import functools
import math
import os
import time

import pytest
import torch

from pyvidgen.bench.conv_lstm_baseline import NaiveConvLSTM
from pyvidgen.bench.layers import CONV_LSTM_PROVIDERS
from pyvidgen.nn import ConvLSTM

SECONDS = float(os.environ.get("PYVIDGEN_BENCH_SECONDS", "1.0"))
SHAPES = [
    pytest.param((4, 5, 16, 16, 3), id="4x5x16x16k3", marks=pytest.mark.quick),
    pytest.param((16, 10, 64, 32, 3), id="16x10x64x32k3"),
]


@functools.cache
def _setup(shape: tuple[int, ...]):
    batch, steps, channels, size, kernel = shape
    torch.manual_seed(0)
    ours = ConvLSTM(channels, channels, kernel)
    naive = NaiveConvLSTM(channels, channels, kernel).load_from(ours)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, steps, channels, size, size, generator=gen)
    grad_out = torch.randn(x.shape, generator=gen)
    return {"pyvidgen": ours, "naive": naive, "pyvidgen_reference": ours}, x, grad_out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layer_mode", ["forward", "fwd+bwd"])
@pytest.mark.parametrize("impl", list(CONV_LSTM_PROVIDERS))
def test_conv_lstm_layer(benchmark, impl, layer_mode, shape):
    models, x, grad_out = _setup(shape)
    model = models[impl]
    if layer_mode == "forward":

        def step() -> None:
            with torch.no_grad():
                model(x)

    else:
        inputs = [x.detach().requires_grad_(), *model.parameters()]

        def step() -> None:
            torch.autograd.grad(model(inputs[0])[0], inputs, grad_out)

    with CONV_LSTM_PROVIDERS[impl][1]():
        step()
        start = time.perf_counter()
        step()
        once = time.perf_counter() - start
        benchmark.group = f"conv_lstm_layer {'x'.join(map(str, shape))} {layer_mode}"
        benchmark.extra_info.update(impl=impl)
        benchmark.pedantic(step, rounds=min(200, max(3, math.ceil(SECONDS / max(once, 1e-6)))), iterations=1)
