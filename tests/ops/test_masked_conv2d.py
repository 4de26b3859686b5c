"""pyvidgen.ops.masked_conv2d: the shared op tester, the loop oracle, causality and the op's own errors."""

from __future__ import annotations

import pytest
import torch

import pyvidgen
from pyvidgen.kernels.reference import masked_conv2d as reference
from pyvidgen.ops import OPS, masked_conv2d
from pyvidgen.testing import check_causal, run_backend
from tests.conftest import DEVICE, kernel_backends
from tests.ops.op_tester import OpTester
from tests.oracles.conv_oracles import masked_conv2d_oracle, tap_visible

BACKENDS = [b for b in kernel_backends() if b in OPS["masked_conv2d"].spec.backends]
CONFIGS = [("A", 1, 1), ("B", 1, 1), ("A", 3, 1), ("B", 3, 2), ("A", 2, 3)]


class TestMaskedConv2d(OpTester):
    op_name = "masked_conv2d"


@pytest.mark.parametrize(("mask_type", "groups", "dilation"), CONFIGS)
def test_reference_matches_the_loop_oracle(mask_type, groups, dilation, rng):
    for kernel in (1, 3, 5):
        x = torch.randn(2, 6, 5, 7, generator=rng, dtype=torch.float64)
        weight = torch.randn(6, 6, kernel, kernel, generator=rng, dtype=torch.float64)
        bias = torch.randn(6, generator=rng, dtype=torch.float64)
        expected = masked_conv2d_oracle(x, weight, bias, mask_type, groups, dilation)
        torch.testing.assert_close(reference.masked_conv2d(x, weight, bias, mask_type, groups, dilation), expected)
        dense = reference.masked_conv2d_dense(x, weight, bias, mask_type, groups, dilation)
        torch.testing.assert_close(dense, expected)


@pytest.mark.parametrize(("mask_type", "groups"), [("A", 1), ("B", 1), ("A", 3), ("B", 3), ("A", 2)])
def test_mask_follows_the_rule(mask_type, groups):
    cout, cin, k = 7, 5, 5
    mask = reference.causal_mask(cout, cin, k, mask_type, groups)
    for co in range(cout):
        for ci in range(cin):
            for r in range(k):
                for s in range(k):
                    assert bool(mask[co, ci, r, s]) == tap_visible(co, ci, r, s, k, cout, cin, mask_type, groups)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@pytest.mark.parametrize(("mask_type", "groups", "dilation"), CONFIGS)
def test_hidden_taps_never_matter(backend, mask_type, groups, dilation, rng):
    """Hidden weights may hold anything (NaN, 1e30): same output, exactly zero gradient, weight untouched."""
    op = OPS["masked_conv2d"]
    x, weight, bias = op.sample((2, 6, 7, 6, 6, 5), dtype=torch.float64, device=DEVICE, generator=rng)[:3]
    hidden = ~reference.causal_mask(6, 6, 5, mask_type, groups, DEVICE)
    args = (x, weight, bias, mask_type, groups, dilation)
    grads = (torch.randn(2, 6, 7, 6, generator=rng, dtype=torch.float64).to(DEVICE),)
    clean = run_backend(op, backend, args, grads)
    for poison in (float("nan"), 1e30, float("-inf")):
        dirty = weight.masked_fill(hidden, poison)
        kept = dirty.clone()
        result = run_backend(op, backend, (x, dirty, bias, mask_type, groups, dilation), grads)
        torch.testing.assert_close(result["out"], clean["out"], rtol=0, atol=0)
        assert (result["grad_weight"][hidden] == 0).all() and torch.equal(result["grad_x"], clean["grad_x"])
        assert torch.equal(dirty.nan_to_num(), kept.nan_to_num())  # never mutated


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_rows_below_are_never_read(backend, rng):
    """A non-finite value in a later row never reaches an output (the kernels do not read those rows)."""
    x = torch.randn(1, 3, 6, 5, generator=rng, dtype=torch.float64).to(DEVICE)
    weight = torch.randn(4, 3, 5, 5, generator=rng, dtype=torch.float64).to(DEVICE)
    x[:, :, 3:] = float("nan")
    with pyvidgen.backend(backend):
        out = masked_conv2d(x, weight, mask_type="B")
    assert out[:, :, :3].isfinite().all()


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@pytest.mark.parametrize(("mask_type", "groups", "dilation"), CONFIGS)
def test_causal_receptive_field(backend, mask_type, groups, dilation):
    """One layer sees only earlier sub-pixels (its own for mask B); a stack (A then B) is strictly causal."""
    generator = torch.Generator().manual_seed(1)
    first = torch.randn(6, 3 * groups, 3, 3, generator=generator, dtype=torch.float64).to(DEVICE)
    later = torch.randn(6, 6, 3, 3, generator=generator, dtype=torch.float64).to(DEVICE)
    shape = (2, 3 * groups, 7, 6)
    with pyvidgen.backend(backend):
        single = check_causal(
            lambda x: masked_conv2d(x.to(DEVICE), first, mask_type=mask_type, color_groups=groups, dilation=dilation),
            shape,
            groups,
            strict=mask_type == "A",
        )
        assert not single["violations"] and single["seen"] > 0

        def stack(x):
            h = masked_conv2d(x.to(DEVICE), first, mask_type="A", color_groups=groups, dilation=dilation)
            for _ in range(2):
                h = masked_conv2d(torch.tanh(h), later, mask_type="B", color_groups=groups, dilation=dilation)
            return h

        report = check_causal(stack, shape, groups, probes=[(6, 3), (4, 2), (0, 0)])
    assert not report["violations"]
    # Stacked masked convolutions never see some earlier pixels up and to the right: the known blind spot.
    assert report["blind_spot"] > 0


@pytest.mark.parametrize(
    ("kwargs", "weight_shape", "error", "pattern"),
    [
        ({}, (4, 3, 2, 2), ValueError, r"the kernel size K must be odd .*, got 2"),
        ({}, (4, 3, 3, 5), ValueError, r"weight must have shape \(Cout, Cin, K, K\) = \(4, 3, 3, 3\)"),
        ({}, (4, 2, 3, 3), ValueError, r"weight must have shape \(Cout, Cin, K, K\) = \(4, 3, 3, 3\) to match x"),
        ({"mask_type": "C"}, (4, 3, 3, 3), ValueError, r"mask_type must be one of 'A', 'B', got 'C'"),
        ({"color_groups": 4}, (4, 3, 3, 3), ValueError, r"color_groups must be in \[1, min\(Cin, Cout\)\] = \[1, 3\]"),
        ({"color_groups": 0}, (4, 3, 3, 3), ValueError, r"color_groups must be in .*got 0"),
        ({"dilation": 0}, (4, 3, 3, 3), ValueError, r"dilation must be >= 1, got 0"),
    ],
)
def test_bad_arguments(kwargs, weight_shape, error, pattern):
    with pytest.raises(error, match=pattern):
        masked_conv2d(torch.zeros(1, 3, 5, 5), torch.zeros(weight_shape), **kwargs)


def test_bad_bias():
    with pytest.raises(ValueError, match=r"bias must have shape \(Cout,\) = \(4,\) to match x .*, got \(3,\)"):
        masked_conv2d(torch.zeros(1, 3, 5, 5), torch.zeros(4, 3, 3, 3), torch.zeros(3))


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
def test_cpp_entry_point_messages():
    forward = torch.ops.pyvidgen_cpp.masked_conv2d_forward
    x, w = torch.zeros(1, 3, 5, 5), torch.zeros(4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"mask_type must be one of 'A', 'B', got 'C'"):
        forward(x, w, None, "C", 1, 1)
    with pytest.raises(ValueError, match=r"kernel size K must be odd, got 4"):
        forward(x, torch.zeros(4, 3, 4, 4), None, "A", 1, 1)
    with pytest.raises(ValueError, match=r"color_groups must be in \[1, min\(Cin, Cout\)\] = \[1, 3\], got 5"):
        forward(x, w, None, "A", 5, 1)
