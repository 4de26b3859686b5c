"""Slow, obviously-correct loop oracles for the gate ops: one element at a time in plain Python floats.

Written from the formulas in the docstrings of pyvidgen.kernels.reference.conv_lstm_gates and
.multiplicative_unit (and DESIGN.md), independently of the vectorised reference code.
"""

from __future__ import annotations

import math

import torch


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x) without overflow: NaN stays NaN, sigmoid(-inf) = 0, sigmoid(inf) = 1."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)  # also taken by NaN, which then stays NaN
    return e / (1.0 + e)


def _peephole_weight(peephole: torch.Tensor | None, q: int, ch: int, i: int, j: int) -> float:
    """w_ci (q = 0), w_cf (1) or w_co (2) at channel ch, pixel (i, j); per-channel weights broadcast."""
    if peephole is None:
        return 0.0
    if peephole.shape[-2:] == (1, 1):
        return float(peephole[q, ch, 0, 0])
    return float(peephole[q, ch, i, j])


def conv_lstm_gates_oracle(
    gates: torch.Tensor, c: torch.Tensor, peephole: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, c_next) in float64: i = σ(g_i + w_ci c), f = σ(g_f + w_cf c), g = tanh(g_g), c' = f c + i g,
    o = σ(g_o + w_co c'), h = o tanh(c'); gates (B, 4C, H, W) in blocks i, f, g, o."""
    batch, channels, height, width = c.shape
    h = torch.empty(batch, channels, height, width, dtype=torch.float64)
    c_next = torch.empty(batch, channels, height, width, dtype=torch.float64)
    for b in range(batch):
        for ch in range(channels):
            for i in range(height):
                for j in range(width):
                    cell = float(c[b, ch, i, j])
                    pre_i, pre_f, pre_g, pre_o = (float(gates[b, k * channels + ch, i, j]) for k in range(4))
                    gate_i = sigmoid(pre_i + _peephole_weight(peephole, 0, ch, i, j) * cell)
                    gate_f = sigmoid(pre_f + _peephole_weight(peephole, 1, ch, i, j) * cell)
                    new_cell = gate_f * cell + gate_i * math.tanh(pre_g)
                    gate_o = sigmoid(pre_o + _peephole_weight(peephole, 2, ch, i, j) * new_cell)
                    c_next[b, ch, i, j] = new_cell
                    h[b, ch, i, j] = gate_o * math.tanh(new_cell)
    return h, c_next


def multiplicative_unit_oracle(pre: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """σ(g1) tanh(σ(g2) h + σ(g3) tanh(u)) in float64; pre (B, 4C, H, W) in blocks g1, g2, g3, u."""
    batch, channels, height, width = h.shape
    out = torch.empty(batch, channels, height, width, dtype=torch.float64)
    for b in range(batch):
        for ch in range(channels):
            for i in range(height):
                for j in range(width):
                    g1, g2, g3, u = (float(pre[b, k * channels + ch, i, j]) for k in range(4))
                    inner = sigmoid(g2) * float(h[b, ch, i, j]) + sigmoid(g3) * math.tanh(u)
                    out[b, ch, i, j] = sigmoid(g1) * math.tanh(inner)
    return out
