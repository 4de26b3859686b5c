"""Layer-level benchmarks: whole modules built on the fused ops against the way users write them today.

:func:`time_conv_lstm_layer` times :class:`pyvidgen.nn.ConvLSTM` against
:class:`~pyvidgen.bench.conv_lstm_baseline.NaiveConvLSTM` with copied weights (the same function,
checked), interleaving the providers like :mod:`pyvidgen.bench.runner` so a shared machine's slow
phases hit all of them alike. Nothing is printed.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from pyvidgen._backend import backend
from pyvidgen.bench.cases import canonical_mode
from pyvidgen.bench.conv_lstm_baseline import NaiveConvLSTM
from pyvidgen.nn import ConvLSTM
from pyvidgen.ops import OPS

#: provider -> (description, context factory); "naive" is the baseline the ratios are taken against.
CONV_LSTM_PROVIDERS: dict[str, tuple[str, Callable[[], contextlib.AbstractContextManager]]] = {
    "pyvidgen": ("pyvidgen.nn.ConvLSTM, backend auto", lambda: backend("auto")),
    "naive": ("per-step conv(cat[x_t, h]) + eager sigmoid/tanh/split", contextlib.nullcontext),
    "pyvidgen_reference": ("pyvidgen.nn.ConvLSTM, backend reference", lambda: backend("reference")),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(
    steps: dict[str, Callable[[], None]],
    contexts: dict[str, Callable[[], contextlib.AbstractContextManager]],
    device: torch.device,
    seconds: float,
    min_runs: int,
    rounds: int,
) -> dict[str, list[float]]:
    """Per-call ms of each step: ``rounds`` turns, each giving every provider ``seconds / rounds`` (>= 1 call)."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for turn in range(rounds):
            for name, step in steps.items():
                with contexts[name]():
                    spent, calls = 0.0, 0
                    need = -(-min_runs // rounds) if turn < rounds - 1 else max(1, min_runs - len(samples[name]))
                    while spent < seconds / rounds or calls < need:
                        start = time.perf_counter()
                        step()
                        _sync(device)
                        elapsed = time.perf_counter() - start
                        samples[name].append(elapsed * 1e3)
                        spent, calls = spent + elapsed, calls + 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def time_conv_lstm_layer(
    batch: int = 16,
    steps: int = 10,
    channels: int = 64,
    size: int = 32,
    kernel: int = 3,
    modes: Sequence[str] = ("forward", "fwd+bwd"),
    *,
    providers: Sequence[str] = ("pyvidgen", "naive", "pyvidgen_reference"),
    seconds: float = 2.0,
    min_runs: int = 5,
    rounds: int = 5,
    warmup: int = 2,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Median time of a one-layer ConvLSTM ``channels -> channels`` on (batch, steps, channels, size, size).

    "forward" runs under ``torch.no_grad()`` (inference); "fwd+bwd" builds the graph and calls
    ``torch.autograd.grad(outputs, [x, *parameters], grad_out)`` with a fixed ``grad_out``.

    Args:
        batch, steps, channels, size, kernel: the problem (B, T, C = hidden, H = W, odd kernel).
        modes: "forward" and/or "fwd+bwd".
        providers: names from :data:`CONV_LSTM_PROVIDERS`.
        seconds: time budget per provider and mode, split over ``rounds`` interleaved turns.
        min_runs: at least this many timed calls per provider and mode.
        rounds: interleaved turns.
        warmup: untimed calls per provider before timing.
        device, dtype: where and in what the layer runs.
        seed: seed of the weights and data.

    Returns:
        One dict per (mode, provider): ``layer, batch, steps, channels, size, kernel, mode, provider,
        description, gates_backend`` (the backend ``conv_lstm_gates`` resolves to under the provider),
        ``ms`` (median), ``ms_q1, ms_q3, runs``, ``speedup_vs_naive`` (naive ms / this ms, None without
        "naive") and ``max_abs_diff`` (of the forward outputs against the naive baseline).
    """
    device = torch.device(device)
    unknown = [p for p in providers if p not in CONV_LSTM_PROVIDERS]
    if unknown:
        raise ValueError(
            f"time_conv_lstm_layer: unknown providers {unknown}; expected some of {list(CONV_LSTM_PROVIDERS)}"
        )
    torch.manual_seed(seed)
    ours = ConvLSTM(channels, channels, kernel).to(device=device, dtype=dtype)
    naive = NaiveConvLSTM(channels, channels, kernel).to(device=device, dtype=dtype).load_from(ours)
    models = {"pyvidgen": ours, "naive": naive, "pyvidgen_reference": ours}
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, channels, size, size, generator=gen).to(device=device, dtype=dtype)
    grad_out = torch.randn(batch, steps, channels, size, size, generator=gen).to(device=device, dtype=dtype)
    contexts = {name: CONV_LSTM_PROVIDERS[name][1] for name in providers}

    with torch.no_grad():
        expected = naive(x)[0]
    diffs, gate_backends = {}, {}
    for name in providers:
        with contexts[name](), torch.no_grad():
            diffs[name] = float((models[name](x)[0] - expected).abs().max())
            gate_backends[name] = "eager" if name == "naive" else OPS["conv_lstm_gates"].resolve_backend(device)

    rows: list[dict[str, Any]] = []
    for mode in (canonical_mode(m) for m in modes):
        steps_fn: dict[str, Callable[[], None]] = {}
        for name in providers:
            model = models[name]
            if mode == "forward":

                def step(model: torch.nn.Module = model) -> None:
                    with torch.no_grad():
                        model(x)

            else:
                inputs = [x.detach().requires_grad_(), *model.parameters()]

                def step(model: torch.nn.Module = model, inputs: list[Tensor] = inputs) -> None:
                    torch.autograd.grad(model(inputs[0])[0], inputs, grad_out)

            with contexts[name]():
                for _ in range(warmup):
                    step()
            steps_fn[name] = step
        samples = _interleaved(steps_fn, contexts, device, seconds, min_runs, rounds)
        medians = {name: statistics.median(s) for name, s in samples.items()}
        for name in providers:
            s = samples[name]
            q1, _, q3 = statistics.quantiles(s, n=4) if len(s) > 1 else (s[0], s[0], s[0])
            rows.append(
                {
                    "layer": "conv_lstm",
                    "batch": batch,
                    "steps": steps,
                    "channels": channels,
                    "size": size,
                    "kernel": kernel,
                    "device": str(device),
                    "dtype": str(dtype).removeprefix("torch."),
                    "mode": mode,
                    "provider": name,
                    "description": CONV_LSTM_PROVIDERS[name][0],
                    "gates_backend": gate_backends[name],
                    "ms": medians[name],
                    "ms_q1": q1,
                    "ms_q3": q3,
                    "runs": len(s),
                    "speedup_vs_naive": medians["naive"] / medians[name] if "naive" in medians else None,
                    "max_abs_diff": diffs[name],
                }
            )
    return rows
