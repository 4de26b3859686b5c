"""Reference ConvLSTM gate step (Shi et al. 2015; the memory of Patraucean et al. and of VPN).

Given the gate pre-activations ``gates`` (the sum of the input and hidden convolutions, channels
ordered i, f, g, o as in ``nn.LSTM``) and the previous cell ``c``::

    i = sigmoid(g_i + w_ci * c)        f = sigmoid(g_f + w_cf * c)        g = tanh(g_g)
    c_next = f * c + i * g
    o = sigmoid(g_o + w_co * c_next)   h = o * tanh(c_next)

The peephole weights ``(w_ci, w_cf, w_co)`` are optional (Shi et al. use them, Patraucean et al.
do not); they broadcast over the batch and, when given as (3, C, 1, 1), over the pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def conv_lstm_gates(gates: Tensor, c: Tensor, peephole: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One ConvLSTM cell update from gate pre-activations (reference, differentiable).

    Args:
        gates: (B, 4C, H, W) pre-activations, channel blocks i, f, g, o.
        c: (B, C, H, W) previous cell state.
        peephole: optional (3, C, H, W) or (3, C, 1, 1) weights (w_ci, w_cf, w_co).

    Returns:
        (h, c_next), each (B, C, H, W).
    """
    gi, gf, gg, go = gates.chunk(4, dim=1)
    if peephole is not None:
        gi = gi + peephole[0] * c
        gf = gf + peephole[1] * c
    c_next = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
    if peephole is not None:
        go = go + peephole[2] * c_next
    h = torch.sigmoid(go) * torch.tanh(c_next)
    return h, c_next


def conv_lstm_gates_backward(
    grad_h: Tensor,
    grad_c_next: Tensor,
    gates: Tensor,
    c: Tensor,
    peephole: Tensor | None = None,
    needs_grad: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Closed-form gradients of :func:`conv_lstm_gates`, recomputing the activations.

    Args:
        grad_h: (B, C, H, W) gradient w.r.t. h.
        grad_c_next: (B, C, H, W) gradient w.r.t. c_next.
        gates: (B, 4C, H, W) as in the forward.
        c: (B, C, H, W) as in the forward.
        peephole: as in the forward, or None.
        needs_grad: which of (grad_gates, grad_c, grad_peephole) the caller uses; all are computed.

    Returns:
        (grad_gates (B, 4C, H, W), grad_c (B, C, H, W), grad_peephole shaped like ``peephole`` or None).
    """
    gi, gf, gg, go = gates.chunk(4, dim=1)
    if peephole is not None:
        gi = gi + peephole[0] * c
        gf = gf + peephole[1] * c
    i, f, g = torch.sigmoid(gi), torch.sigmoid(gf), torch.tanh(gg)
    c_next = f * c + i * g
    if peephole is not None:
        go = go + peephole[2] * c_next
    o, tc = torch.sigmoid(go), torch.tanh(c_next)

    d_go = grad_h * tc * o * (1 - o)
    d_c_next = grad_c_next + grad_h * o * (1 - tc * tc)
    if peephole is not None:
        d_c_next = d_c_next + d_go * peephole[2]
    d_gi = d_c_next * g * i * (1 - i)
    d_gf = d_c_next * c * f * (1 - f)
    d_gg = d_c_next * i * (1 - g * g)
    grad_c = d_c_next * f
    grad_peephole = None
    if peephole is not None:
        grad_c = grad_c + d_gi * peephole[0] + d_gf * peephole[1]
        parts = torch.stack((d_gi * c, d_gf * c, d_go * c_next))  # (3, B, C, H, W)
        dims = (1, 3, 4) if peephole.shape[-2:] == (1, 1) else (1,)
        grad_peephole = parts.sum(dim=dims, keepdim=False).reshape(peephole.shape)
    return torch.cat((d_gi, d_gf, d_gg, d_go), dim=1), grad_c, grad_peephole
