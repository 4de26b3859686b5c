"""Slow, obviously-correct loop oracles for DRAW's read and write attention (Gregor et al. 2015, eqs. 19-29).

Written from the paper's equations and the op contract in DESIGN.md, one filter, pixel and channel at a
time in plain Python floats, independently of pyvidgen.kernels.reference. Also the two slips public DRAW
ports are known for, as variants of the filterbank oracle, so the tests can show they are absent.
"""

from __future__ import annotations

import math

import torch

EPS = 1e-8


def filterbank_oracle(
    g: float, delta: float, sigma2: float, n: int, size: int, bug: str | None = None
) -> list[list[float]]:
    """F[i][a] for filters i = 0..N-1 (the paper's i = 1..N) over pixels a = 0..size-1.

    ``mu_i = g + (i - N/2 - 0.5) delta`` (1-based i); ``F[i, a] = exp(-(a - mu_i)^2 / (2 sigma2)) / Z_i`` with
    ``Z_i = max(sum_a exp(...), 1e-8)``.

    Args:
        bug: None for the paper's filterbank; ``"sigma_squared"`` divides the exponent by ``2 sigma2^2`` (ports
            that square the already-squared variance); ``"normalised_over_filters"`` divides by the sum over
            the filters i at each pixel instead of over the pixels of each filter.
    """
    centres = [g + ((i + 1) - n / 2 - 0.5) * delta for i in range(n)]
    variance = sigma2 * sigma2 if bug == "sigma_squared" else sigma2
    weights = [[math.exp(-((a - mu) ** 2) / (2 * variance)) for a in range(size)] for mu in centres]
    if bug == "normalised_over_filters":
        columns = [max(sum(weights[i][a] for i in range(n)), EPS) for a in range(size)]
        return [[weights[i][a] / columns[a] for a in range(size)] for i in range(n)]
    rows = [max(sum(row), EPS) for row in weights]
    return [[weights[i][a] / rows[i] for a in range(size)] for i in range(n)]


def _parameters(params: tuple[torch.Tensor, ...], b: int) -> tuple[float, ...]:
    return tuple(float(p[b]) for p in params)


def draw_read_oracle(
    x: torch.Tensor,
    gx: torch.Tensor,
    gy: torch.Tensor,
    delta: torch.Tensor,
    sigma2: torch.Tensor,
    gamma: torch.Tensor,
    n: int,
    bug: str | None = None,
) -> torch.Tensor:
    """read[b, c, i, j] = gamma * sum_{y, a} Fy[i][y] x[b, c, y, a] Fx[j][a], in float64: (B, C, N, N)."""
    batch, channels, height, width = x.shape
    out = torch.zeros(batch, channels, n, n, dtype=torch.float64)
    for b in range(batch):
        cx, cy, stride, variance, intensity = _parameters((gx, gy, delta, sigma2, gamma), b)
        fx = filterbank_oracle(cx, stride, variance, n, width, bug)
        fy = filterbank_oracle(cy, stride, variance, n, height, bug)
        for c in range(channels):
            image = x[b, c].double().tolist()
            for i in range(n):
                for j in range(n):
                    total = 0.0
                    for y in range(height):
                        for a in range(width):
                            total += fy[i][y] * image[y][a] * fx[j][a]
                    out[b, c, i, j] = intensity * total
    return out


def draw_write_oracle(
    w: torch.Tensor,
    gx: torch.Tensor,
    gy: torch.Tensor,
    delta: torch.Tensor,
    sigma2: torch.Tensor,
    gamma: torch.Tensor,
    height: int,
    width: int,
    bug: str | None = None,
) -> torch.Tensor:
    """write[b, c, y, a] = sum_{i, j} Fy[i][y] w[b, c, i, j] Fx[j][a] / gamma, in float64: (B, C, H, W)."""
    batch, channels, n, _ = w.shape
    out = torch.zeros(batch, channels, height, width, dtype=torch.float64)
    for b in range(batch):
        cx, cy, stride, variance, intensity = _parameters((gx, gy, delta, sigma2, gamma), b)
        fx = filterbank_oracle(cx, stride, variance, n, width, bug)
        fy = filterbank_oracle(cy, stride, variance, n, height, bug)
        for c in range(channels):
            patch = w[b, c].double().tolist()
            for y in range(height):
                for a in range(width):
                    total = 0.0
                    for i in range(n):
                        for j in range(n):
                            total += fy[i][y] * patch[i][j] * fx[j][a]
                    out[b, c, y, a] = total / intensity
    return out


def parameter_gradient_oracle(
    fn, tensor: torch.Tensor, params: list[torch.Tensor], grad_out: torch.Tensor, step: float = 1e-6
) -> list[torch.Tensor]:
    """d(sum grad_out * fn(tensor, *params))/d each parameter, by central differences of the loop oracle.

    ``fn(tensor, gx, gy, delta, sigma2, gamma)``: the oracle with its size arguments bound. Each (B,) parameter
    is moved one sample at a time (samples are independent), in float64.
    """
    grads = []
    for k, p in enumerate(params):
        grad = torch.zeros_like(p, dtype=torch.float64)
        for b in range(p.shape[0]):
            values = []
            for sign in (1.0, -1.0):
                moved = [q.double().clone() for q in params]
                moved[k][b] += sign * step
                values.append(float((grad_out * fn(tensor, *moved)).sum()))
            grad[b] = (values[0] - values[1]) / (2 * step)
        grads.append(grad)
    return grads
