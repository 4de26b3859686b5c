"""Input validation shared by the ops: clear errors that name the argument, expected and actual values."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_floating(op: str, name: str, t: object, ndim: int, layout: str) -> Tensor:
    """``t`` must be a floating-point tensor of rank ``ndim`` (``layout`` names the dims, e.g. "(B, C, H, W)")."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must be a {ndim}-D tensor {layout}, got shape {_shape(t)}")
    if not t.is_floating_point():
        raise TypeError(f"{op}: {name} must have a floating-point dtype, got {t.dtype}")
    return t


def check_shape(op: str, name: str, t: Tensor, expected: Sequence[int], layout: str, why: str = "") -> None:
    """``t.shape`` must equal ``expected``."""
    if tuple(t.shape) != tuple(expected):
        wanted = "(" + ", ".join(str(s) for s in expected) + ")"
        suffix = f" {why}" if why else ""
        raise ValueError(f"{op}: {name} must have shape {layout} = {wanted}{suffix}, got {_shape(t)}")


def check_same(op: str, name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    """``t`` must share ``ref``'s dtype and device."""
    if t.device != ref.device:
        raise RuntimeError(f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; put both on one device")
    if t.dtype != ref.dtype:
        raise TypeError(f"{op}: {name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; they must match")


def check_choice(op: str, name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{op}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value  # type: ignore[return-value]


def deterministic() -> bool:
    """Whether the caller asked for deterministic algorithms."""
    return torch.are_deterministic_algorithms_enabled()
