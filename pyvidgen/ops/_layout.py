"""Tensor layouts such as ``"(B, 4C, H, W)"``: the shape contract of an op's arguments and outputs.

A layout is a tuple of dimensions, each a literal (``2``) or a symbol with an integer factor (``C``,
``4C``). Checking the arguments of a call binds every symbol to a size, first from the op's anchor
argument, then from the others in order; a dimension that disagrees with what its symbol is bound to
(or a ``4C`` that is not a multiple of 4) is an error that names the argument, its layout, the
expected and the actual shape. Output shapes are the output layouts under the same bindings, which
is how the fake functions know them. Symbols may also be bound by int options of the same name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

# Dtypes every op accepts: the kernels' own and the half types (computed in float32 inside).
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_DIM = re.compile(r"^(\d*)([A-Za-z_]\w*)?$")


@dataclass(frozen=True)
class Dim:
    """One dimension: ``factor * symbol``, or the literal ``factor`` when ``symbol`` is None."""

    factor: int
    symbol: str | None


@dataclass(frozen=True)
class Layout:
    """A parsed layout; ``text`` is how it was written (and how errors show it)."""

    text: str
    dims: tuple[Dim, ...]

    @property
    def ndim(self) -> int:
        return len(self.dims)


def parse(text: str) -> Layout:
    """``"(B, 4C, H, W)"`` -> Layout; ``"()"`` is a 0-dim tensor, ``"(B,)"`` a vector."""
    inner = text.strip()
    if not (inner.startswith("(") and inner.endswith(")")):
        raise ValueError(f"layout {text!r} must be parenthesised, e.g. '(B, C, H, W)'")
    tokens = [t.strip() for t in inner[1:-1].split(",") if t.strip()]
    dims = []
    for token in tokens:
        match = _DIM.match(token)
        if not match or not (match.group(1) or match.group(2)):
            raise ValueError(f"layout {text!r}: cannot read dimension {token!r}")
        factor, symbol = match.group(1), match.group(2)
        dims.append(Dim(int(factor) if factor else 1, symbol))
    return Layout(text, tuple(dims))


def _shape_text(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


def expected_shape(layout: Layout, bindings: Mapping[str, Any]) -> tuple[Any, ...]:
    """The layout's shape under ``bindings``; an unbound symbol stays a string (for messages)."""
    out = []
    for dim in layout.dims:
        if dim.symbol is None:
            out.append(dim.factor)
        elif dim.symbol in bindings:
            out.append(dim.factor * bindings[dim.symbol])
        else:
            out.append(f"{dim.factor}{dim.symbol}" if dim.factor != 1 else dim.symbol)
    return tuple(out)


def bind(layout: Layout, shape: Sequence[Any], bindings: dict[str, Any], check: bool = True) -> bool:
    """Bind the layout's unbound symbols from ``shape``; with ``check``, whether ``shape`` fits the layout.

    Without ``check`` (fake tensors, symbolic sizes) nothing is compared: symbols are only bound.
    The bindings are updated only when the shape fits.
    """
    if len(shape) != layout.ndim:
        return False
    new: dict[str, Any] = {}
    for dim, size in zip(layout.dims, shape, strict=True):
        if dim.symbol is None:
            if check and size != dim.factor:
                return False
            continue
        known = bindings.get(dim.symbol, new.get(dim.symbol))
        if known is not None:
            if check and size != dim.factor * known:
                return False
        elif check and size % dim.factor != 0:
            return False
        else:
            new[dim.symbol] = size // dim.factor
    bindings.update(new)
    return True


def _complete(layout: Layout, shape: Sequence[Any], bindings: Mapping[str, Any]) -> dict[str, Any]:
    """``bindings`` plus, for the message of a shape that does not fit, each unbound symbol read from the
    first dimension it appears in (so the expected shape shows sizes, not names)."""
    completed = dict(bindings)
    for dim, size in zip(layout.dims, shape, strict=False):
        if dim.symbol is not None and dim.symbol not in completed and size % dim.factor == 0:
            completed[dim.symbol] = size // dim.factor
    return completed


def check_tensor(op: str, name: str, t: object, layouts: Sequence[Layout]) -> Tensor:
    """``t`` must be a tensor of a supported floating dtype with the rank of its layout(s)."""
    described = " or ".join(layout.text for layout in layouts)
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor {described}, got {type(t).__name__}")
    if all(t.dim() != layout.ndim for layout in layouts):
        ranks = " or ".join(sorted({f"{layout.ndim}-D" for layout in layouts}))
        raise ValueError(f"{op}: {name} must be a {ranks} tensor {described}, got shape {_shape_text(t.shape)}")
    if t.dtype not in SUPPORTED_DTYPES:
        kinds = "a floating-point dtype" if not t.is_floating_point() else "dtype float16, bfloat16, float32 or float64"
        raise TypeError(f"{op}: {name} must have {kinds}, got {t.dtype}")
    return t


def check_shapes(
    op: str,
    tensors: Mapping[str, Tensor | None],
    layouts: Mapping[str, Sequence[Layout]],
    anchor: str,
    bindings: dict[str, Any],
) -> dict[str, Any]:
    """Bind every symbol and check every tensor against its layouts (the anchor first).

    Raises:
        ValueError: a tensor's shape fits none of its layouts under the bindings made so far.
    """
    order = [anchor] + [name for name in tensors if name != anchor]
    for name in order:
        t = tensors[name]
        if t is None:
            continue
        if any(bind(layout, t.shape, bindings) for layout in layouts[name]):
            continue
        wanted = " or ".join(
            f"{layout.text} = {_shape_text(expected_shape(layout, _complete(layout, t.shape, bindings)))}"
            for layout in layouts[name]
        )
        context = f" to match {anchor} {_shape_text(tensors[anchor].shape)}" if name != anchor else ""
        raise ValueError(f"{op}: {name} must have shape {wanted}{context}, got {_shape_text(t.shape)}")
    return bindings


def check_same(op: str, name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    """``t`` must share ``ref``'s device and dtype."""
    if t.device != ref.device:
        raise RuntimeError(f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; put both on one device")
    if t.dtype != ref.dtype:
        raise TypeError(f"{op}: {name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; they must match")
