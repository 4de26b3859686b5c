"""Training-step benchmark of a whole model: the fused ops (backend auto) against the reference.

:func:`time_training_step` trains two copies of a model, checks that one training step gives the same loss
and gradients on both backends, times full steps (forward, backward, optimiser) interleaved, and profiles
one step to report the share of time spent in the fused ops (``pyvidgen::*``) and in convolutions.
:func:`time_model_step` applies it to a model of :data:`PROBLEMS`: the two video models, DRAW (whose fused ops
are the attention's read and write) and Visual Dynamics' cross convolutional network (whose fused op is the cross
convolution). Each model's training problem (the model, its
loss on a fixed batch, its sizes) comes from a builder in :data:`PROBLEMS`, which :mod:`pyvidgen.bench.models`
uses as well.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pyvidgen._backend import backend
from pyvidgen.bench.layers import _interleaved
from pyvidgen.models.st_autoencoder import PRESETS, SpatioTemporalAutoencoder

BACKENDS = ("reference", "auto")
#: Profiler events counted as convolution time (self time; forward and backward, mkldnn or the slow path).
CONVOLUTION_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward")
# Name prefixes of the fused ops' backward autograd nodes: the eager fast path's, the registered op's.
_FUSED_BACKWARD_NODES = ("pyvidgen_", "GeneratedBackwardFor_pyvidgen_")


@dataclass(frozen=True)
class TrainingProblem:
    """One model's training step: ``loss_fn(model)`` is the loss of ``model`` (a copy of ``base``) on a fixed batch.

    Attributes:
        model: the rows' ``model`` name.
        base: the model; every provider trains its own copy of it.
        loss_fn: ``model -> 0-dim loss``.
        problem: sizes reported with the rows (preset, batch, seq_len, size).
        lr: the RMSprop learning rate.
    """

    model: str
    base: torch.nn.Module
    loss_fn: Callable[[torch.nn.Module], torch.Tensor]
    problem: dict[str, Any]
    lr: float


def _profile_shares(step) -> dict[str, float]:  # noqa: ANN001
    """Fractions of one step's CPU time inside pyvidgen ops and inside convolutions (forward and backward).

    An op's time is inclusive (on the reference backend the fused op runs as several aten ops under
    its ``pyvidgen::`` event); the total is the sum of every event's self time. In eager mode an op's backward
    runs inside its autograd node, not as a ``pyvidgen::`` event, so those nodes count as fused-op time too: the
    eager fast path's ``pyvidgen_<op>Backward`` (see :meth:`~pyvidgen.ops._define.DeclaredOp.takes_fast_path`) or
    the registered op's ``GeneratedBackwardFor_pyvidgen_<op>_defaultBackward``.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    total = fused = conv = 0.0
    for event in prof.key_averages():
        total += event.self_cpu_time_total
        backward = event.key.startswith(_FUSED_BACKWARD_NODES) and event.key.endswith("Backward")
        if event.key.startswith("pyvidgen::") or backward:
            fused += event.cpu_time_total
        elif event.key in CONVOLUTION_OPS:
            conv += event.self_cpu_time_total
    return {"fused_op_share": fused / max(total, 1e-9), "convolution_share": conv / max(total, 1e-9)}


def time_training_step(
    model_name: str,
    base: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module], torch.Tensor],
    problem: dict[str, Any],
    *,
    lr: float = 1e-4,
    seconds: float = 6.0,
    min_runs: int = 4,
    rounds: int = 3,
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """Median time of one training step (forward, backward, RMSProp) of ``base`` on each backend.

    Args:
        model_name: the rows' ``model``.
        base: the model; each backend trains its own copy from these weights.
        loss_fn: ``model -> loss`` on a fixed batch.
        problem: sizes reported with the rows (preset, batch, ...).

    Returns:
        One dict per backend: ``model, **problem, backend, ms, ms_q1, ms_q3, runs, speedup_vs_reference, loss,
        loss_diff_vs_reference, max_grad_diff_vs_reference, fused_op_share, convolution_share`` (the shares
        only on CPU, None elsewhere).
    """
    device = torch.device(device)
    models = {name: copy.deepcopy(base) for name in BACKENDS}
    optimizers = {name: torch.optim.RMSprop(models[name].parameters(), lr=lr) for name in BACKENDS}
    # Same loss and gradients on both backends, from the same weights.
    checks = {}
    for name in BACKENDS:
        with backend(name):
            loss = loss_fn(models[name])
            grads = torch.autograd.grad(loss, list(models[name].parameters()))
        checks[name] = (loss.item(), grads)

    def step_fn(name: str):  # noqa: ANN202
        def step() -> None:
            optimizers[name].zero_grad(set_to_none=True)
            loss_fn(models[name]).backward()
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
                "model": model_name,
                **problem,
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


def st_ae_problem(
    preset: str = "small",
    batch: int = 16,
    seq_len: int = 10,
    size: int = 64,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> TrainingProblem:
    """The spatio-temporal autoencoder (next-frame MSE) on uniform noise frames (batch, seq_len, 1, size, size)."""
    device = torch.device(device)
    torch.manual_seed(seed)
    base = SpatioTemporalAutoencoder(PRESETS[preset]).to(device)
    # A non-zero flow from the start, so the warp is exercised as in a trained model.
    torch.nn.init.normal_(base.flow_head[-1].weight, std=0.05)
    gen = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch, seq_len, 1, size, size, generator=gen).to(device)

    def loss_fn(model: torch.nn.Module) -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(frames[:, :-1]), frames[:, 1:])

    problem = {"preset": preset, "batch": batch, "seq_len": seq_len, "size": size}
    return TrainingProblem("st-ae", base, loss_fn, problem, 1e-4)


def vpn_problem(
    preset: str = "small",
    batch: int = 16,
    seq_len: int = 10,
    size: int = 32,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> TrainingProblem:
    """The Video Pixel Network (NLL per sub-pixel) on bouncing digits (batch, seq_len, C, size, size)."""
    from pyvidgen.data import MovingDigits
    from pyvidgen.models.video_pixel_network import build_vpn

    device = torch.device(device)
    torch.manual_seed(seed)
    base = build_vpn(preset).to(device)
    colors = base.config.channels == 3
    frames = MovingDigits(batch, seq_len, size=size, digit_size=round(28 * size / 64), colors=colors, seed=seed)
    frames = frames.batch(range(batch)).to(device)

    def loss_fn(model: torch.nn.Module) -> torch.Tensor:
        return model.nll(frames).mean() / frames[0, 0].numel()

    problem = {"preset": preset, "batch": batch, "seq_len": seq_len, "size": size}
    return TrainingProblem("vpn", base, loss_fn, problem, 3e-4)


def draw_problem(
    preset: str = "small", batch: int = 64, *, seed: int = 0, device: torch.device | str = "cpu", **overrides: Any
) -> TrainingProblem:
    """DRAW (mean negative ELBO per image) on binarised digits; ``overrides`` change :class:`DRAWConfig` fields.

    The reparameterisation noise is drawn from a generator reseeded at every call, so every copy (and every timed
    step) sees the same z_t. The rows' ``seq_len`` is the number of glimpses T and ``size`` the image side.
    """
    from pyvidgen.data import BinarizedDigits
    from pyvidgen.models.draw import build_draw

    device = torch.device(device)
    torch.manual_seed(seed)
    base = build_draw(preset, **overrides).to(device)
    images = BinarizedDigits(batch, seed=seed).batch(range(batch)).to(device)
    generator = torch.Generator(device=device)

    def loss_fn(model: torch.nn.Module) -> torch.Tensor:
        return model.negative_elbo(images, generator.manual_seed(seed)).mean()

    problem = {"preset": preset, "batch": batch, "seq_len": base.config.glimpses, "size": base.config.height}
    return TrainingProblem("draw", base, loss_fn, problem, 1e-3)


def cross_conv_problem(
    preset: str = "small",
    batch: int = 32,
    size: int | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    **overrides: Any,
) -> TrainingProblem:
    """The cross convolutional network (the CVAE's loss at KL weight 1) on pairs of shape frames.

    The latent noise is fixed, so every copy (and every timed step) decodes the same z. ``size`` defaults to the
    preset's frame side; ``overrides`` change :class:`CrossConvConfig` fields. The rows' ``seq_len`` is 2.
    """
    from pyvidgen.data.shapes import Shapes
    from pyvidgen.models.cross_conv_net import build_cross_conv_net

    device = torch.device(device)
    torch.manual_seed(seed)
    base = build_cross_conv_net(preset, **overrides).to(device)
    size = size or base.config.image_size
    frames = Shapes(batch, size=size, seed=seed).batch(range(batch)).to(device)
    noise = torch.randn(batch, *base.latent_shape, generator=torch.Generator().manual_seed(seed)).to(device)

    def loss_fn(model: torch.nn.Module) -> torch.Tensor:
        return model.loss(frames[:, 0], frames[:, 1], noise=noise).loss

    problem = {"preset": preset, "batch": batch, "seq_len": 2, "size": size}
    return TrainingProblem("cross-conv", base, loss_fn, problem, 1e-4)


#: model name -> builder of its :class:`TrainingProblem` (keyword arguments: sizes, ``seed``, ``device``).
PROBLEMS: dict[str, Callable[..., TrainingProblem]] = {
    "st-ae": st_ae_problem,
    "vpn": vpn_problem,
    "draw": draw_problem,
    "cross-conv": cross_conv_problem,
}


def time_model_step(
    name: str,
    *,
    seconds: float = 6.0,
    min_runs: int = 4,
    rounds: int = 3,
    device: torch.device | str = "cpu",
    **sizes: Any,
) -> list[dict[str, Any]]:
    """:func:`time_training_step` of the model ``name`` of :data:`PROBLEMS` (reference vs fused ops).

    Args:
        name: "st-ae", "vpn", "draw" or "cross-conv".
        sizes: the builder's arguments (``preset``, ``batch``, ``seq_len``, ``size``, ``seed``, config overrides).
    """
    if name not in PROBLEMS:
        raise ValueError(f"time_model_step: unknown model {name!r}; expected one of {sorted(PROBLEMS)}")
    p = PROBLEMS[name](device=device, **sizes)
    return time_training_step(
        p.model, p.base, p.loss_fn, p.problem, lr=p.lr, seconds=seconds, min_runs=min_runs, rounds=rounds, device=device
    )
