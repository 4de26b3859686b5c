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
