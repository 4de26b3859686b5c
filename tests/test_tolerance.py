"""pyvidgen.tolerance: the one tolerance policy, and the elementwise comparison the checks report."""

from __future__ import annotations

import pytest
import torch

from pyvidgen.tolerance import compare, largest_finite, tolerance


def test_tolerance_grows_with_the_reduction_and_the_scale():
    base = tolerance(torch.float32)
    assert base == {"atol": 1e-5, "rtol": 1e-5}
    summed = tolerance(torch.float32, terms=64)
    assert summed["atol"] == pytest.approx(8e-5) and summed["rtol"] == pytest.approx(8e-5)
    scaled = tolerance(torch.float32, terms=4, scale=10.0)
    assert scaled["atol"] == pytest.approx(2e-4) and scaled["rtol"] == pytest.approx(2e-5)
    assert tolerance(torch.bfloat16)["atol"] > tolerance(torch.float16)["atol"] > tolerance(torch.float64)["atol"]
    with pytest.raises(ValueError, match="no tolerance for dtype torch.int64"):
        tolerance(torch.int64)


def test_compare_flags_errors_and_nonfinite_mismatch():
    expected = torch.tensor([1.0, 2.0, float("nan"), 4.0, float("inf")])
    assert compare(expected.clone(), expected, atol=1e-6, rtol=0)["ok"]
    off = compare(torch.tensor([1.0, 2.5, float("nan"), 4.0, float("inf")]), expected, atol=1e-3, rtol=1e-3)
    assert not off["ok"] and off["bad"] == 1 and off["max_abs_err"] == pytest.approx(0.5)
    nan = compare(torch.tensor([float("nan"), 2.0, 3.0, 4.0, float("inf")]), expected, atol=1.0, rtol=1.0)
    assert not nan["ok"] and nan["bad"] == 2
    sign = compare(torch.tensor([1.0, 2.0, float("nan"), 4.0, float("-inf")]), expected, atol=1.0, rtol=1.0)
    assert not sign["ok"] and sign["bad"] == 1
    assert not compare(torch.zeros(3), torch.zeros(4), atol=1, rtol=1)["ok"]


def test_largest_finite_ignores_nan_and_inf():
    assert largest_finite(torch.tensor([1.0, -3.0, float("nan"), float("-inf")])) == 3.0
    assert largest_finite(torch.tensor([float("inf")])) == 0.0 and largest_finite(torch.zeros(0)) == 0.0
