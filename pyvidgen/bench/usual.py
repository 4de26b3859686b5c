"""The library's models written "the usual way": plain differentiable PyTorch where the fused ops would be.

The model benchmark (:mod:`pyvidgen.bench.models`) compares a training step on the fused ops with the same model as
popular PyTorch code writes it, so that autograd and Inductor see ordinary aten ops instead of ``pyvidgen::`` custom
ops. Two pieces make that model from a library model without changing it:

* :func:`usual_ops`: within the block every op call runs :data:`USUAL_OPS`' function (through
  :func:`pyvidgen.ops._define.substituted`): ``F.grid_sample`` for the warp, a dense convolution of the masked
  weight, the references (materialised filterbanks, grouped convolution, eager sigmoid/tanh) for the rest;
* :func:`usual_model`: a copy of the model whose :class:`~pyvidgen.nn.ConvLSTM` is the popular one-conv-of-
  ``cat[x_t, h]`` :class:`~pyvidgen.bench.conv_lstm_baseline.NaiveConvLSTM` (weights loaded) where that is a
  drop-in, and whose :class:`~pyvidgen.nn.HuberPenalty` injects the reference gradient (its fused version calls
  the op's backward directly, which :func:`usual_ops` cannot reach).

Each usual function and the naive ConvLSTM's cells run under a ``usual::<name>`` profiler event, so a profile can
attribute time to them; the event is opened only while a profiler is on (opening one costs ~6 us even when nobody
records, which the timed runs would pay and the fused ops do not).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pyvidgen.ops  # noqa: F401 - declares the ops, so that OPS is complete
from pyvidgen.bench.conv_lstm_baseline import NaiveConvLSTM
from pyvidgen.kernels.reference.flow_smoothness import flow_smoothness_grad as _reference_smoothness_grad
from pyvidgen.kernels.reference.flow_warp import flow_warp_grid_sample
from pyvidgen.kernels.reference.masked_conv2d import causal_mask
from pyvidgen.nn import ConvLSTM, HuberPenalty
from pyvidgen.ops._define import OPS, substituted

#: The prefix of the profiler events of the usual functions.
EVENT_PREFIX = "usual::"


def _recorded(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` under a ``usual::<name>`` profiler event while a profiler records (see the module docstring)."""
    event = EVENT_PREFIX + name

    def usual(*args: Any) -> Any:
        # is_compiling first: under torch.compile the test is a constant and the profiler query is never traced.
        if not torch.compiler.is_compiling() and torch.autograd._profiler_enabled():
            with torch.profiler.record_function(event):
                return fn(*args)
        return fn(*args)

    usual.__name__ = usual.__qualname__ = f"usual_{name}"
    usual.__doc__ = fn.__doc__
    return usual


# Masks by (shape, type, groups, device, dtype): popular PixelCNN layers keep the mask as a buffer built once, so
# the usual version does not rebuild it on every call either.
_MASKS: dict[tuple, Tensor] = {}


def _masked_conv2d_dense(
    x: Tensor, weight: Tensor, bias: Tensor | None, mask_type: str, color_groups: int, dilation: int
) -> Tensor:
    """The usual masked convolution: a dense k x k ``F.conv2d`` of ``weight * mask`` ("same" zero padding).

    Shapes: x (B, Cin, H, W), weight (Cout, Cin, k, k), bias (Cout,) or None -> (B, Cout, H, W). The mask is
    :func:`~pyvidgen.kernels.reference.masked_conv2d.causal_mask` of ``mask_type`` and ``color_groups``.
    """
    key = (tuple(weight.shape), mask_type, color_groups, weight.device, weight.dtype)
    mask = _MASKS.get(key)
    if mask is None:
        mask = _MASKS[key] = causal_mask(*weight.shape[:3], mask_type, color_groups, weight.device).to(weight.dtype)
    return F.conv2d(x, weight * mask, bias, padding=dilation * (weight.shape[-1] // 2), dilation=dilation)


def _reference(name: str) -> Callable[..., Any]:
    """The op's reference forward: plain PyTorch, differentiated by autograd (no op boundary)."""
    return OPS[name].implementation("reference", "forward")


#: op name -> the usual function, taking the op's arguments in schema order.
USUAL_OPS: dict[str, Callable[..., Any]] = {
    name: _recorded(name, fn)
    for name, fn in {
        "flow_warp": flow_warp_grid_sample,
        "masked_conv2d": _masked_conv2d_dense,
        "draw_read": _reference("draw_read"),
        "draw_write": _reference("draw_write"),
        "cross_conv2d": _reference("cross_conv2d"),
        "conv_lstm_gates": _reference("conv_lstm_gates"),
        "multiplicative_unit": _reference("multiplicative_unit"),
        "flow_smoothness": _reference("flow_smoothness"),
    }.items()
}
_smoothness_grad = _recorded("flow_smoothness_grad", _reference_smoothness_grad)


@contextlib.contextmanager
def usual_ops() -> Iterator[None]:
    """Within the block, every pyvidgen op call runs its :data:`USUAL_OPS` function instead of the custom op."""
    with substituted(USUAL_OPS):
        yield


# ---------------------------------------------------------------------------------------- module swaps
class _RecordedCell(nn.Module):
    """A NaiveConvLSTMCell under a ``usual::conv_lstm_cell`` event (its conv of cat[x, h] and its gate math)."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell
        self.hidden_channels = cell.hidden_channels  # read by NaiveConvLSTM.forward

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        if not torch.compiler.is_compiling() and torch.autograd._profiler_enabled():
            with torch.profiler.record_function(EVENT_PREFIX + "conv_lstm_cell"):
                return self.cell(x, state)
        return self.cell(x, state)


class UsualConvLSTM(NaiveConvLSTM):
    """:class:`NaiveConvLSTM` called as :class:`pyvidgen.nn.ConvLSTM` is: ``(x, state=None) -> (outputs, finals)``.

    Only zero initial states (``state=None``, what a training step passes); a given state raises, as the naive
    module has none to start from.
    """

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        if state is not None:
            raise ValueError("UsualConvLSTM: starts from zero states only (state=None)")
        return super().forward(x)


def _naive_conv_lstm(lstm: ConvLSTM) -> UsualConvLSTM | str:
    """The naive equivalent of ``lstm`` with its weights, or why there is none."""
    if lstm.bidirectional:
        return "bidirectional"
    cells = list(lstm.cells)
    if any(cell.peephole is not None for cell in cells):
        return "peepholes"
    if any(cell.kernel_size != cell.hidden_kernel_size for cell in cells):
        return "different input and hidden kernel sizes"
    if any(cell.kernel_size[0] != cell.kernel_size[1] for cell in cells):
        return "non-square kernels"
    weight = cells[0].input_conv.weight
    naive = UsualConvLSTM(
        lstm.in_channels,
        [cell.hidden_channels for cell in cells],
        [cell.kernel_size[0] for cell in cells],
        bias=cells[0].input_conv.bias is not None,
        batch_first=lstm.batch_first,
    ).to(device=weight.device, dtype=weight.dtype)
    naive.load_from(lstm)
    naive.cells = nn.ModuleList(_RecordedCell(cell) for cell in naive.cells)
    return naive


def _usual_smoothness_gradient(flow: Tensor, delta: float, weight: float) -> Tensor:
    return weight * _smoothness_grad(flow, delta)


class UsualHuberPenalty(HuberPenalty):
    """:class:`HuberPenalty` whose injected gradient is the reference's plain PyTorch (no ``pyvidgen::`` op)."""

    smoothness_gradient = staticmethod(_usual_smoothness_gradient)


def usual_model(model: nn.Module) -> tuple[nn.Module, str]:
    """A deep copy of ``model`` with its fused modules swapped for the usual ones (``model`` is not changed).

    Each :class:`~pyvidgen.nn.ConvLSTM` that :class:`NaiveConvLSTM` can reproduce (unidirectional, no peepholes,
    equal square input and hidden kernels) becomes a :class:`UsualConvLSTM` with the same weights; the others stay
    (their gates then run through the usual ``conv_lstm_gates`` under :func:`usual_ops`). Each
    :class:`~pyvidgen.nn.HuberPenalty` becomes a :class:`UsualHuberPenalty`. Run the copy under :func:`usual_ops`.

    Returns:
        (the copy, a note naming what was swapped and what was kept, and why; "" when nothing was there).
    """
    usual = copy.deepcopy(model)
    notes = []
    swaps = [(name, m) for name, m in usual.named_modules() if isinstance(m, ConvLSTM | HuberPenalty) and name]
    for name, module in swaps:
        parent_name, _, attribute = name.rpartition(".")
        parent = usual.get_submodule(parent_name)
        if isinstance(module, HuberPenalty):
            setattr(parent, attribute, UsualHuberPenalty(module.weight, module.delta))
            notes.append(f"{name}: HuberPenalty -> reference gradient")
            continue
        naive = _naive_conv_lstm(module)
        if isinstance(naive, str):
            notes.append(f"{name}: pyvidgen ConvLSTM kept ({naive}), usual gates")
        else:
            setattr(parent, attribute, naive)
            notes.append(f"{name}: ConvLSTM -> NaiveConvLSTM")
    return usual, "; ".join(notes)


def fused_names(usual: nn.Module, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-parameter tensors (e.g. gradients) of a :func:`usual_model` copy keyed as the original model's.

    A :class:`UsualConvLSTM` cell's joint convolution ``cells.<i>.cell.conv`` (weight (4C, Cin + C, k, k)) splits
    back into ``cells.<i>.input_conv.weight`` (4C, Cin, k, k), ``cells.<i>.hidden_conv.weight`` (4C, C, k, k) and
    ``cells.<i>.input_conv.bias`` (4C,), as :meth:`NaiveConvLSTM.load_from` joined them.
    """
    renamed = dict(tensors)
    for prefix, module in usual.named_modules():
        if not isinstance(module, UsualConvLSTM):
            continue
        for i, wrapped in enumerate(module.cells):
            new = f"{prefix}.cells.{i}" if prefix else f"cells.{i}"
            old = f"{new}.cell.conv"
            weight = renamed.pop(f"{old}.weight")
            inputs = weight.shape[1] - wrapped.hidden_channels
            renamed[f"{new}.input_conv.weight"] = weight[:, :inputs]
            renamed[f"{new}.hidden_conv.weight"] = weight[:, inputs:]
            if f"{old}.bias" in renamed:
                renamed[f"{new}.input_conv.bias"] = renamed.pop(f"{old}.bias")
    return renamed
