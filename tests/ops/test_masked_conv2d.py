"""pyvidgen.ops.masked_conv2d: the shared op tester, the loop oracle, causality and the op's own errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyvidgen
from pyvidgen.kernels.reference import masked_conv2d as reference
from pyvidgen.ops import OPS, masked_conv2d
from pyvidgen.testing import check_backend, check_causal, run_backend
from tests.conftest import DEVICE, kernel_backends
from tests.ops.op_tester import OpTester, assert_ok, compiled_matches_eager, to_layout
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


# The C++ kernel runs float32 convolutions in channels-last from this many values of x and the output
# together (use_channels_last in csrc/ops/cpu/masked_conv2d_kernel.cpp); below it, in NCHW.
CHANNELS_LAST_VALUES = 1 << 18


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    channels=st.sampled_from([(3, 64), (13, 21), (64, 64), (64, 3), (16, 3)]),
    side=st.tuples(st.integers(1, 40), st.integers(1, 45)),
    kernel=st.sampled_from([1, 3, 5, 7]),
    variant=st.sampled_from(OPS["masked_conv2d"].spec.samples.variants),
    layout=st.sampled_from(["contiguous", "channels_last", "sliced"]),
    magnitude=st.sampled_from([1.0, 1e3, 1e30]),
    seed=st.integers(0, 2**31 - 1),
)
def test_channels_last_path_matches_the_reference(channels, side, kernel, variant, layout, magnitude, seed):
    """float32 above the channels-last threshold: odd channel counts and sides (the tiled transposes' edges),
    every mask variant, NCHW / channels_last / sliced inputs, large magnitudes; values and every gradient."""
    op = OPS["masked_conv2d"]
    (cin, cout), (height, width) = channels, side
    batch = -(-CHANNELS_LAST_VALUES // (height * width * (cin + cout)))  # just past the threshold
    rng = torch.Generator().manual_seed(seed)
    args = op.sample(
        (batch, cin, height, width, cout, kernel),
        dtype=torch.float32,
        device=DEVICE,
        generator=rng,
        variant=variant,
        magnitude=magnitude,
    )
    result = check_backend(op, "cpp", tuple(to_layout(a, layout) for a in args), rng)
    assert_ok(result, f"{(batch, cin, height, width, cout, kernel)} {variant.name} {layout} magnitude={magnitude}")


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
@pytest.mark.parametrize(
    "needs", [(True, False, False), (False, True, False), (False, False, True), (True, True, True)]
)
def test_channels_last_path_each_gradient(needs, rng):
    """The channels-last backward computes the gradient of x and those of the weight and bias apart."""
    op = OPS["masked_conv2d"]
    args = op.sample((8, 16, 32, 32, 16, 5), dtype=torch.float32, device=DEVICE, generator=rng)
    grads = (torch.randn(8, 16, 32, 32, generator=rng),)
    actual = run_backend(op, "cpp", args, grads, needs)
    expected = run_backend(op, "reference", args, grads, needs)
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], **op.tolerance(name, args, torch.float32))


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
def test_channels_last_path_at_512(rng):
    """An RGB first layer on one 512x512 image (3 -> 8 channels, 7x7 mask A in colour groups), past the threshold."""
    op = OPS["masked_conv2d"]
    variant = next(v for v in op.spec.samples.variants if v.name == "A/groups=3")
    args = op.sample((1, 3, 512, 512, 8, 7), dtype=torch.float32, device=DEVICE, generator=rng, variant=variant)
    assert_ok(check_backend(op, "cpp", args, rng), "1x3x512x512 -> 8, 7x7 A/groups=3")


@pytest.mark.slow
@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
def test_channels_last_path_under_inductor_dynamic(rng):
    """torch.compile (Inductor, dynamic shapes) forward and backward of sizes past the threshold equals eager."""
    op = OPS["masked_conv2d"]
    sizes = ((8, 16, 32, 32, 16, 3), (5, 13, 45, 39, 21, 5))
    compiled_matches_eager(op, op.spec.samples.variant("B"), sizes, rng, kernels="cpp", loss_atol=1e-3, dynamic=True)


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
