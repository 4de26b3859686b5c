"""How close a kernel must come to the reference: one policy for the tests, ``pyvidgen check`` and gpu_check.

A kernel and the reference round the same mathematical result differently: another summation order,
another evaluation of exp or tanh. Per element, the difference is a few units in the last place of the
compute dtype; a sum of ``n`` rounded terms drifts like ``sqrt(n)`` of them (the errors are unbiased),
and an exact factor applied after the sum (a normalised flow's ``(W - 1) / 2``) scales the absolute
error with it. Half-precision inputs are computed in float32, so their tolerance covers the rounding of
the result to the half type.
"""

from __future__ import annotations

import math

import torch

# (atol, rtol) per dtype for one rounded result of O(1) values.
BASE = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (2e-2, 2e-2),
}


def tolerance(dtype: torch.dtype, terms: float = 1, scale: float = 1.0) -> dict[str, float]:
    """``{"atol": ..., "rtol": ...}`` for ``torch.testing.assert_close`` and friends.

    Args:
        dtype: the dtype the compared values were computed in (or stored as, for half types).
        terms: the number of rounded terms summed into each value (the reduction length).
        scale: an exact factor the sum is multiplied by afterwards.
    """
    if dtype not in BASE:
        raise ValueError(f"no tolerance for dtype {dtype}; known: {', '.join(str(d) for d in BASE)}")
    atol, rtol = BASE[dtype]
    growth = math.sqrt(max(1.0, float(terms)))
    return {"atol": atol * growth * max(1.0, float(scale)), "rtol": rtol * growth}


def largest_finite(t: torch.Tensor) -> float:
    """The largest finite ``|t|`` (0 when there is none): the magnitude an error scales with."""
    finite = t[torch.isfinite(t)]
    return float(finite.abs().max()) if finite.numel() else 0.0


def compare(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> dict[str, object]:
    """Elementwise ``|actual - expected| <= atol + rtol * |expected|``; NaN only where expected is NaN,
    infinities equal.

    Returns:
        ``ok``, ``max_abs_err`` (over finite pairs), ``bad`` (elements out of tolerance or mismatched
        non-finite values), ``numel``, ``dtype`` and, when shapes differ, ``shape``/``expected_shape``.
    """
    if actual.shape != expected.shape:
        return {"ok": False, "shape": list(actual.shape), "expected_shape": list(expected.shape)}
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    nan_mismatch = torch.isnan(a) != torch.isnan(e)
    finite = torch.isfinite(a) & torch.isfinite(e)
    err = torch.where(finite, (a - e).abs(), torch.zeros_like(a))
    bad = nan_mismatch | (err > atol + rtol * e.abs()) | (~finite & ~torch.isnan(e) & (a != e))
    n_bad = int(bad.sum())
    return {
        "ok": n_bad == 0,
        "max_abs_err": float(err.max()) if err.numel() else 0.0,
        "bad": n_bad,
        "numel": a.numel(),
        "dtype": str(actual.dtype).removeprefix("torch."),
    }
