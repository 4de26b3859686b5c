"""Training-step benchmark of a whole model: the fused ops (backend auto) against the reference.

:func:`time_st_ae_step` builds two identical SpatioTemporalAutoencoders, checks that one training
step gives the same loss and gradients on both backends, times full steps (forward, backward,
optimiser) interleaved, and profiles one step to report the share of time spent in the fused
ops (``pyvidgen::*``) and in convolutions.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from pyvidgen._backend import backend
from pyvidgen.bench.layers import _interleaved
from pyvidgen.models.st_autoencoder import PRESETS, SpatioTemporalAutoencoder

BACKENDS = ("reference", "auto")


def _profile_shares(step) -> dict[str, float]:  # noqa: ANN001
    """Fractions of one step's CPU time inside pyvidgen ops and inside convolutions (forward and backward).

    An op's time is inclusive (on the reference backend the fused op runs as several aten ops under
    its ``pyvidgen::`` event); the total is the sum of every event's self time.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    total = fused = conv = 0.0
    for event in prof.key_averages():
        total += event.self_cpu_time_total
        if event.key.startswith("pyvidgen::"):
            fused += event.cpu_time_total
        elif event.key in ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward"):
            conv += event.self_cpu_time_total
    return {"fused_op_share": fused / max(total, 1e-9), "convolution_share": conv / max(total, 1e-9)}


def time_st_ae_step(
    preset: str = "small",
    batch: int = 16,
    seq_len: int = 10,
    size: int = 64,
    *,
    seconds: float = 6.0,
    min_runs: int = 4,
    rounds: int = 3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """Median time of one training step of the ST-AE on each backend.

    Returns:
        One dict per backend: ``model, preset, batch, seq_len, size, backend, ms, ms_q1, ms_q3, runs,
        speedup_vs_reference, loss, loss_diff_vs_reference, max_grad_diff_vs_reference,
        fused_op_share, convolution_share`` (the shares only on CPU, None elsewhere).
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    base = SpatioTemporalAutoencoder(PRESETS[preset]).to(device)
    # A non-zero flow from the start, so the warp is exercised as in a trained model.
    torch.nn.init.normal_(base.flow_head[-1].weight, std=0.05)
    gen = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch, seq_len, 1, size, size, generator=gen).to(device)
    models = {name: copy.deepcopy(base) for name in BACKENDS}
    optimizers = {name: torch.optim.RMSprop(models[name].parameters(), lr=1e-4) for name in BACKENDS}

    def loss_of(name: str) -> torch.Tensor:
        model = models[name]
        return torch.nn.functional.mse_loss(model(frames[:, :-1]), frames[:, 1:])

    # Same loss and gradients on both backends, from the same weights.
    checks = {}
    for name in BACKENDS:
        with backend(name):
            loss = loss_of(name)
            grads = torch.autograd.grad(loss, list(models[name].parameters()))
        checks[name] = (loss.item(), grads)

    def step_fn(name: str):  # noqa: ANN202
        def step() -> None:
            optimizers[name].zero_grad(set_to_none=True)
            loss_of(name).backward()
            optimizers[name].step()

        return step

    steps = {name: step_fn(name) for name in BACKENDS}
    contexts = {name: (lambda name=name: backend(name)) for name in BACKENDS}
    for name in BACKENDS:
        with contexts[name]():
            steps[name]()  # warm-up
    samples = _interleaved(steps, contexts, device, seconds, min_runs, rounds)
    rows = []
    reference_ms = sorted(samples["reference"])[len(samples["reference"]) // 2]
    for name in BACKENDS:
        ordered = sorted(samples[name])
        median = ordered[len(ordered) // 2]
        shares = {"fused_op_share": None, "convolution_share": None}
        if device.type == "cpu":
            with contexts[name]():
                shares = _profile_shares(steps[name])
        grad_diff = max(
            float((a - b).abs().max()) for a, b in zip(checks[name][1], checks["reference"][1], strict=True)
        )
        rows.append(
            {
                "model": "st-ae",
                "preset": preset,
                "batch": batch,
                "seq_len": seq_len,
                "size": size,
                "backend": name,
                "ms": median,
                "ms_q1": ordered[len(ordered) // 4],
                "ms_q3": ordered[(3 * len(ordered)) // 4],
                "runs": len(ordered),
                "speedup_vs_reference": reference_ms / median,
                "loss": checks[name][0],
                "loss_diff_vs_reference": abs(checks[name][0] - checks["reference"][0]),
                "max_grad_diff_vs_reference": grad_diff,
                **shares,
            }
        )
    return rows
