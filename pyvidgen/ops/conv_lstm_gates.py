"""``pyvidgen.ops.conv_lstm_gates``: the fused ConvLSTM cell update (gates -> h, c_next).

Registered as ``pyvidgen::conv_lstm_gates`` and ``pyvidgen::conv_lstm_gates_backward``. The
backward recomputes the activations from the pre-activations instead of saving four activated
gates. Semantics: :mod:`pyvidgen.kernels.reference.conv_lstm_gates`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyvidgen._backend import cpp_module, resolve
from pyvidgen.kernels.reference import conv_lstm_gates as reference
from pyvidgen.ops._checks import check_floating, check_same, check_shape

OP = "conv_lstm_gates"


@torch.library.custom_op("pyvidgen::conv_lstm_gates", mutates_args=())
def _conv_lstm_gates(gates: Tensor, c: Tensor, peephole: Tensor | None) -> tuple[Tensor, Tensor]:
    gates, c = gates.contiguous(), c.contiguous()
    peephole = peephole.contiguous() if peephole is not None else None
    backend = resolve(OP, c.device, c.dtype, cpp_entry="conv_lstm_gates_forward")
    if backend == "cpp":
        return cpp_module().conv_lstm_gates_forward(gates, c, peephole)
    if backend == "triton":
        from pyvidgen.kernels.triton import conv_lstm_gates as triton_kernels

        return triton_kernels.conv_lstm_gates_fwd(gates, c, peephole)
    return reference.conv_lstm_gates(gates, c, peephole)


@_conv_lstm_gates.register_fake
def _(gates: Tensor, c: Tensor, peephole: Tensor | None) -> tuple[Tensor, Tensor]:
    return torch.empty_like(c, memory_format=torch.contiguous_format), torch.empty_like(
        c, memory_format=torch.contiguous_format
    )


@torch.library.custom_op("pyvidgen::conv_lstm_gates_backward", mutates_args=())
def _conv_lstm_gates_backward(
    grad_h: Tensor, grad_c_next: Tensor, gates: Tensor, c: Tensor, peephole: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    grad_h, grad_c_next, gates, c = (t.contiguous() for t in (grad_h, grad_c_next, gates, c))
    peephole = peephole.contiguous() if peephole is not None else None
    backend = resolve(OP, c.device, c.dtype, cpp_entry="conv_lstm_gates_backward")
    if backend == "cpp":
        grads = cpp_module().conv_lstm_gates_backward(grad_h, grad_c_next, gates, c, peephole)
    elif backend == "triton":
        from pyvidgen.kernels.triton import conv_lstm_gates as triton_kernels

        grads = triton_kernels.conv_lstm_gates_bwd(grad_h, grad_c_next, gates, c, peephole)
    else:
        grads = reference.conv_lstm_gates_backward(grad_h, grad_c_next, gates, c, peephole)
    grad_gates, grad_c, grad_peephole = grads
    # Custom ops return tensors, never None: without peepholes that gradient comes back empty.
    return grad_gates, grad_c, grad_peephole if grad_peephole is not None else c.new_empty(0)


@_conv_lstm_gates_backward.register_fake
def _(grad_h, grad_c_next, gates, c, peephole):  # noqa: ANN001, ANN202
    grad_peephole = torch.empty_like(peephole) if peephole is not None else c.new_empty(0)
    return torch.empty_like(gates), torch.empty_like(c), grad_peephole


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    gates, c, peephole = inputs
    ctx.save_for_backward(gates, c, peephole)


def _backward(ctx, grad_h: Tensor, grad_c_next: Tensor):  # noqa: ANN001, ANN202
    gates, c, peephole = ctx.saved_tensors
    # An output that does not reach the loss arrives as None (e.g. the last step's cell state).
    grad_h = grad_h if grad_h is not None else torch.zeros_like(c)
    grad_c_next = grad_c_next if grad_c_next is not None else torch.zeros_like(c)
    grad_gates, grad_c, grad_peephole = _conv_lstm_gates_backward(grad_h, grad_c_next, gates, c, peephole)
    return grad_gates, grad_c, (grad_peephole if peephole is not None else None)


_conv_lstm_gates.register_autograd(_backward, setup_context=_setup_context)


def conv_lstm_gates(gates: Tensor, c: Tensor, peephole: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Fused ConvLSTM cell update: activations, cell and hidden state in one pass.

    ``i = σ(g_i + w_ci·c)``, ``f = σ(g_f + w_cf·c)``, ``g = tanh(g_g)``, ``c_next = f·c + i·g``,
    ``o = σ(g_o + w_co·c_next)``, ``h = o·tanh(c_next)`` (peephole terms only when given).

    Args:
        gates: (B, 4C, H, W) gate pre-activations (input conv + hidden conv), blocks i, f, g, o.
        c: (B, C, H, W) previous cell state; same dtype and device as ``gates``.
        peephole: optional (3, C, H, W) or (3, C, 1, 1) peephole weights (w_ci, w_cf, w_co).

    Returns:
        (h, c_next), each (B, C, H, W); differentiable w.r.t. gates, c and peephole.

    Raises:
        ValueError: wrong rank or shapes. TypeError: non-floating or mismatched dtypes.
        RuntimeError: tensors on different devices, or an explicit backend that cannot run.
    """
    check_floating(OP, "gates", gates, 4, "(B, 4C, H, W)")
    check_floating(OP, "c", c, 4, "(B, C, H, W)")
    batch, channels, height, width = c.shape
    check_shape(
        OP, "gates", gates, (batch, 4 * channels, height, width), "(B, 4C, H, W)", f"to match c {tuple(c.shape)}"
    )
    check_same(OP, "gates", gates, "c", c)
    if peephole is not None:
        check_floating(OP, "peephole", peephole, 4, "(3, C, H, W) or (3, C, 1, 1)")
        if tuple(peephole.shape) not in ((3, channels, height, width), (3, channels, 1, 1)):
            raise ValueError(
                f"{OP}: peephole must have shape (3, C, H, W) = {(3, channels, height, width)} or "
                f"(3, C, 1, 1) = {(3, channels, 1, 1)}, got {tuple(peephole.shape)}"
            )
        check_same(OP, "peephole", peephole, "c", c)
    return torch.ops.pyvidgen.conv_lstm_gates(gates, c, peephole)
