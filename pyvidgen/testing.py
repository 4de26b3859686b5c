"""Running a declared op on one backend and comparing it with the reference.

Shared by the test suite's op tester, ``pyvidgen check`` and ``benchmarks/gpu_check.py``, so that all
three hold a backend to the same thing: the forward outputs and the gradient of every tensor argument,
within :func:`pyvidgen.tolerance.tolerance` of the reference computed on the same (upcast) inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

import pyvidgen
from pyvidgen.ops._define import DeclaredOp
from pyvidgen.tolerance import compare

_HALF = (torch.float16, torch.bfloat16)


def as_outputs(value: Any) -> tuple[Tensor, ...]:
    """An op's result as a tuple (ops with one output return a tensor)."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def random_grad_outputs(op: DeclaredOp, args: Sequence[Any], generator: torch.Generator) -> tuple[Tensor, ...]:
    """One random output gradient per output of ``op`` on ``args`` (shapes from the layouts), drawn on the CPU."""
    anchor = next(a for a in args if isinstance(a, Tensor))
    return tuple(
        torch.randn(tuple(shape), generator=generator, dtype=torch.float64).to(
            device=anchor.device, dtype=op.output_dtype(name, anchor.dtype)
        )
        for name, shape in zip(op.output_names, op.output_shapes(args), strict=True)
    )


def run_backend(
    op: DeclaredOp,
    backend: str,
    args: Sequence[Any],
    grad_outputs: Sequence[Tensor] | None,
    needs_grad: Sequence[bool] | None = None,
) -> dict[str, Tensor]:
    """The op's outputs and the gradients of its tensor arguments on ``backend``, by name.

    Args:
        op: the declared op (called through its public, checked entry point).
        backend: "reference", "cpp" or "triton".
        args: the op's arguments in schema order; tensors are detached copies' leaves here.
        grad_outputs: one gradient per output; None for the forward only.
        needs_grad: per tensor argument, whether it requires grad (default: all present ones).

    Returns:
        ``{output name: tensor, ..., "grad_<argument>": tensor, ...}`` (gradients only where requested).
    """
    leaves = []
    call_args = list(args)
    flags = list(needs_grad) if needs_grad is not None else [True] * len(op.tensor_names)
    for position, name, wanted in zip(op.tensor_positions, op.tensor_names, flags, strict=True):
        a = args[position]
        if a is None:
            continue
        t = a.detach().clone().requires_grad_(bool(wanted and grad_outputs is not None))
        call_args[position] = t
        if t.requires_grad:
            leaves.append((name, t))
    with pyvidgen.backend(backend):
        outputs = as_outputs(op(*call_args))
        result = {name: out.detach() for name, out in zip(op.output_names, outputs, strict=True)}
        if grad_outputs is not None and leaves:
            grads = torch.autograd.grad(outputs, [t for _, t in leaves], list(grad_outputs), allow_unused=True)
            for (name, t), g in zip(leaves, grads, strict=True):
                result[f"grad_{name}"] = g if g is not None else torch.zeros_like(t)
    return result


def check_backend(
    op: DeclaredOp,
    backend: str,
    args: Sequence[Any],
    generator: torch.Generator,
    reference_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Compare ``backend`` with the reference on ``args``: forward and every gradient.

    Args:
        op: the declared op.
        backend: the backend under test.
        args: arguments in schema order.
        generator: draws the output gradients.
        reference_dtype: run the reference on copies in this dtype (float32 for half inputs: the
            reference of the same rounded values); default the inputs' own.

    Returns:
        ``{"ok": bool, "dtype_ok": bool, "parts": {name: pyvidgen.tolerance.compare(...)}}``; the
        tolerance of each part is :meth:`DeclaredOp.tolerance` in the inputs' dtype.
    """
    anchor = next(a for a in args if isinstance(a, Tensor))
    grad_outputs = random_grad_outputs(op, args, generator)
    actual = run_backend(op, backend, args, grad_outputs)
    ref_args, ref_grads = args, grad_outputs
    if reference_dtype is not None:
        ref_args = [a.to(reference_dtype) if isinstance(a, Tensor) else a for a in args]
        ref_grads = [g.to(reference_dtype) for g in grad_outputs]
    expected = run_backend(op, "reference", ref_args, ref_grads)
    parts = {name: compare(actual[name], expected[name], **op.tolerance(name, args, anchor.dtype)) for name in expected}
    expected_dtypes = dict(zip(op.output_names, (g.dtype for g in grad_outputs), strict=True))
    for position, name in zip(op.tensor_positions, op.tensor_names, strict=True):
        if args[position] is not None:
            expected_dtypes[f"grad_{name}"] = args[position].dtype
    dtype_ok = all(actual[name].dtype == expected_dtypes[name] for name in actual)
    return {"ok": dtype_ok and all(p["ok"] for p in parts.values()), "dtype_ok": dtype_ok, "parts": parts}


def check_autocast(
    op: DeclaredOp,
    backend: str,
    args: Sequence[Any],
    device_type: str,
    dtype: torch.dtype,
    generator: torch.Generator,
) -> dict[str, Any]:
    """The op under ``torch.autocast(device_type, dtype)`` with mixed-precision inputs, as a model feeds it.

    The anchor argument stays in its dtype (float32: a state or a user input) while the other tensors
    come in ``dtype`` (convolution outputs under autocast). The op must cast them by its policy
    (:meth:`DeclaredOp.autocast_arguments`), return outputs in the policy's dtype, give each input a
    gradient in that input's own dtype, and agree with the reference computed in float32 on the cast
    values within the tolerance of the dtype it computed in.

    Returns:
        ``{"ok", "dtype_ok", "parts"}`` as :func:`check_backend`.
    """
    mixed = tuple(a.to(dtype) if isinstance(a, Tensor) and i != op.anchor_position else a for i, a in enumerate(args))
    with torch.autocast(device_type, dtype=dtype):
        cast = op.autocast_arguments(mixed, device_type)
        grad_outputs = random_grad_outputs(op, cast, generator)
        actual = run_backend(op, backend, mixed, grad_outputs)
    compute_dtype = cast[op.anchor_position].dtype
    upcast = [a.double() if isinstance(a, Tensor) else a for a in cast]
    expected = run_backend(op, "reference", upcast, [g.double() for g in grad_outputs])
    expected_dtypes = {name: op.output_dtype(name, compute_dtype) for name in op.output_names}
    for position, name in zip(op.tensor_positions, op.tensor_names, strict=True):
        if mixed[position] is not None:
            expected_dtypes[f"grad_{name}"] = mixed[position].dtype
    # A value stored in a half type (a gradient flowing back to a half input) carries that type's rounding.
    parts = {
        name: compare(
            actual[name],
            expected[name],
            **op.tolerance(name, cast, expected_dtypes[name] if expected_dtypes[name] in _HALF else compute_dtype),
        )
        for name in expected
    }
    dtype_ok = all(actual[name].dtype == expected_dtypes[name] for name in actual)
    return {"ok": dtype_ok and all(p["ok"] for p in parts.values()), "dtype_ok": dtype_ok, "parts": parts}


def _raster(shape: Sequence[int]) -> Tensor:
    """Raster index of every position of a (T, H, W) or (H, W) grid: frame, then row, then column."""
    return torch.arange(int(torch.tensor(shape).prod())).reshape(tuple(shape))


def check_causal(
    fn: Any,
    input_shape: Sequence[int],
    color_groups: int = 1,
    *,
    strict: bool = True,
    frame_offset: int = 0,
    probes: Sequence[Sequence[int]] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """The receptive-field test of an autoregressive image or video model.

    Backpropagates from single output sub-pixels to the input and checks that the gradient vanishes at
    every input sub-pixel the output may not see: in raster order (frame, row, column, then colour
    group), an output sub-pixel sees only earlier input sub-pixels, and, unless ``strict``, the input
    sub-pixel of its own colour group at its own position (a single mask-B layer). Other batch items must
    not be seen at all.

    Args:
        fn: maps the input, (B, C, H, W) or (B, T, C, H, W), to an output (B, C_out, H, W) or
            (B, T_out, C_out, H, W); channel c of n is in colour group ``floor(c * G / n)``, in input and
            output alike.
        input_shape: the input's shape (B >= 2 is checked for batch independence).
        color_groups: G.
        strict: False for a single mask-B layer (a sub-pixel sees its own input sub-pixel).
        frame_offset: output frame u models input frame ``u + frame_offset`` (1 for next-frame models).
        probes: output positions to check, each (row, col) or (frame, row, col); default the first, the
            last and three random positions, in every colour group.
        generator: draws the input and the random probes.

    Returns:
        ``{"checked", "violations" (a list of (probe, group, input position, input group) that should not
        be seen), and for the probe that sees the most earlier positions: "receptive_field" (bool (H, W) or
        (T, H, W): the input positions it sees), "seen" (how many earlier positions), "blind_spot" (earlier
        positions inside the bounding box of what it sees that it does not see; stacked masked
        convolutions leave the pixels up and to the right unseen)}``. Fine when ``violations`` is empty;
        the blind spot is a measurement, not a failure.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    x = torch.randn(tuple(input_shape), generator=generator, dtype=torch.float64).requires_grad_()
    y = fn(x)
    video = x.dim() == 5
    grid = tuple(x.shape[1:2]) + tuple(x.shape[-2:]) if video else tuple(x.shape[-2:])
    out_grid = tuple(y.shape[1:2]) + tuple(y.shape[-2:]) if video else tuple(y.shape[-2:])
    in_channels, out_channels = x.shape[-3], y.shape[-3]
    in_groups = torch.div(torch.arange(in_channels) * color_groups, in_channels, rounding_mode="floor")
    order = _raster(grid)
    if probes is None:
        last = [s - 1 for s in out_grid]
        probes = [[0] * len(out_grid), last] + [
            [int(torch.randint(0, s, (), generator=generator)) for s in out_grid] for _ in range(3)
        ]
    violations: list[tuple] = []
    best: dict[str, Any] = {"receptive_field": torch.zeros(grid, dtype=torch.bool), "blind_spot": 0, "seen": 0}
    checked = 0
    for probe in probes:
        probe = tuple(int(p) for p in probe)
        position = (probe[0] + frame_offset, *probe[1:]) if video else probe
        own = int(order[position])
        for group in range(color_groups):
            channel = (group * out_channels + out_channels // (2 * color_groups)) // color_groups
            index = (0, probe[0], channel, *probe[1:]) if video else (0, channel, *probe)
            (grad,) = torch.autograd.grad(y[index], x, retain_graph=True)
            if grad[1:].abs().sum() > 0:
                violations.append((probe, group, "another batch item", None))
            influence = grad[0] != 0  # (T, C, H, W) or (C, H, W)
            per_channel = influence.movedim(-3, 0).reshape(in_channels, -1)  # (C, positions)
            flat_order = order.reshape(-1)
            for c in range(in_channels):
                g_in = int(in_groups[c])
                later = flat_order > own
                same = flat_order == own
                forbidden = later | (same & ((g_in >= group) if strict else (g_in > group)))
                bad = per_channel[c] & forbidden
                for where in bad.nonzero().flatten().tolist():
                    violations.append(
                        (probe, group, tuple(int(i) for i in torch.unravel_index(torch.tensor(where), grid)), g_in)
                    )
            any_channel = per_channel.any(0).reshape(grid)
            receptive = any_channel
            checked += 1
        earlier = order < own
        seen = int((receptive & earlier).sum())
        # The blind spot: earlier positions inside the bounding box of what the probe sees that it does not
        # see (for stacked masked convolutions, the pixels up and to the right).
        box = earlier.clone()
        if receptive.any():
            where = receptive.nonzero()
            for dim, (low, high) in enumerate(
                zip(where.min(0).values.tolist(), where.max(0).values.tolist(), strict=True)
            ):
                index = torch.arange(grid[dim]).view([-1 if d == dim else 1 for d in range(len(grid))])
                box &= (index >= low) & (index <= high)
        blind = int((box & ~receptive).sum())
        if seen >= best["seen"]:
            best = {"receptive_field": receptive, "blind_spot": blind, "seen": seen}
    return {"checked": checked, "violations": violations, **best}
