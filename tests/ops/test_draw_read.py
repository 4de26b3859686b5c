"""pyvidgen.ops.draw_read: the shared op tester, the loop oracle, DRAW's special glimpses and the op's own errors."""

from __future__ import annotations

import pytest
import torch

import pyvidgen
from pyvidgen.ops import OPS, draw_read
from pyvidgen.testing import check_backend, run_backend
from tests.conftest import DEVICE, kernel_backends
from tests.ops.op_tester import OpTester, assert_ok
from tests.oracles.draw_oracles import draw_read_oracle

BACKENDS = ["reference", *(b for b in kernel_backends() if b in OPS["draw_read"].spec.backends)]


class TestDrawRead(OpTester):
    op_name = "draw_read"


def _params(*rows: tuple[float, float, float, float, float]) -> list[torch.Tensor]:
    """(gx, gy, delta, sigma2, gamma) tensors from one row per sample, float64 on the test device."""
    return [torch.tensor(column, dtype=torch.float64, device=DEVICE) for column in zip(*rows, strict=True)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 3, 6, 7, 3), (1, 1, 5, 5, 1), (2, 1, 9, 4, 6)])
def test_matches_the_loop_oracle(backend, shape, rng):
    op = OPS["draw_read"]
    x, *params, n = op.sample(shape, dtype=torch.float64, device=DEVICE, generator=rng)
    with pyvidgen.backend(backend):
        out = draw_read(x, *params, n)
    torch.testing.assert_close(out.cpu(), draw_read_oracle(x.cpu(), *(p.cpu() for p in params), n))


SPECIAL = {
    # Every filter centred exactly on a pixel and narrower than one: the glimpse copies pixels 1..5 x 2..6.
    "on pixels, narrow": ((4.0, 3.0, 1.0, 1e-30, 1.0), 5),
    "N = 1": ((2.3, 1.7, 1.0, 0.8, 1.3), 1),
    "delta = 0": ((3.0, 2.5, 0.0, 0.6, 0.7), 4),
    "outside the image": ((-1e3, 40.0, 1.0, 1.0, 1.0), 3),
    "wide": ((3.5, 3.0, 2.0, 1e30, 2.0), 3),
    "narrow between pixels": ((3.5, 3.25, 1.0, 1e-30, 1.0), 3),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SPECIAL, ids=list(SPECIAL))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_special_glimpses(backend, case, dtype, rng):
    """Filters on pixels, one filter, a zero stride, a glimpse outside the image, sigma2 at 1e30 and 1e-30:
    the oracle's values, finite outputs and gradients (the 1e-8 floor: never 0/0)."""
    row, n = SPECIAL[case]
    x = torch.randn(2, 3, 8, 9, generator=rng, dtype=torch.float64).to(DEVICE)
    params = _params(row, row)
    expected = draw_read_oracle(x.cpu(), *(p.cpu() for p in params), n)
    args = (x.to(dtype), *(p.to(dtype) for p in params), n)
    grad = torch.randn(expected.shape, generator=rng, dtype=torch.float64).to(device=DEVICE, dtype=dtype)
    result = run_backend(OPS["draw_read"], backend, args, (grad,))
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {}
    torch.testing.assert_close(result["out"].double().cpu(), expected, **tol)
    assert all(t.isfinite().all() for t in result.values())
    if case == "on pixels, narrow":
        torch.testing.assert_close(result["out"], x[:, :, 1:6, 2:7].to(dtype), rtol=0, atol=0)
    if case == "outside the image":
        assert (result["out"] == 0).all() and (result["grad_gx"] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_parameters_stay_defined_in_float32(backend, rng):
    """What a diverging run feeds: centres and strides of 1e30, sigma2 of 1e-30 and 1e30; outputs and
    gradients stay finite."""
    x = torch.randn(4, 2, 12, 10, generator=rng).to(DEVICE)
    params = [
        torch.tensor(v, device=DEVICE)
        for v in ([1e30, -1e30, 5.0, 4.3], [4.0, 1e30, 6.0, 5.1], [1e30, 1.0, 1.0, 2.0], [1.0, 1.0, 1e-30, 1e30])
    ]
    params.append(torch.tensor([1.0, 0.5, 2.0, 1.5], device=DEVICE))
    grad = torch.randn(4, 2, 6, 6, generator=rng).to(DEVICE)
    result = run_backend(OPS["draw_read"], backend, (x, *params, 6), (grad,))
    for name, t in result.items():
        assert t.isfinite().all(), name


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
def test_cancelling_filter_centres_round_as_the_reference(backend, rng):
    """A centre of 1.5e31 with a stride of 3e30 puts the first of 11 filters at 1.5e31 - 5 * 3e30, which the
    reference's separate multiply and add round to exactly 0, inside the image; a fused multiply-add leaves a
    residue of about 1e23 and moves that filter far outside (found by the property test). Every backend must
    land where the reference does."""
    x = torch.randn(2, 3, 16, 16, generator=rng).to(DEVICE) * 1e30
    params = [
        torch.tensor(v, dtype=torch.float32, device=DEVICE)
        for v in ([1.2e31, 3.0], [1.5e31, 4.0], [3e30, 1.0], [0.95, 1.2], [1.1, 0.9])
    ]
    args = (x, *params, 11)
    assert float(params[1][0] + (-5.0) * params[2][0]) == 0.0  # the reference's rounding: an in-image centre
    assert_ok(check_backend(OPS["draw_read"], backend, args, rng), backend)
    write_args = (torch.randn(2, 3, 11, 11, generator=rng).to(DEVICE), *params, 16, 16)
    assert_ok(check_backend(OPS["draw_write"], backend, write_args, rng), backend)


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [
        ({"N": 0}, ValueError, r"draw_read: the glimpse size N must be >= 1, got 0"),
        ({"N": -3}, ValueError, r"draw_read: the glimpse size N must be >= 1, got -3"),
        ({"gx": torch.zeros(2, 1)}, ValueError, r"draw_read: gx must be a 1-D tensor \(B,\), got shape \(2, 1\)"),
        ({"sigma2": torch.ones(3)}, ValueError, r"draw_read: sigma2 must have shape \(B,\) = \(2,\) to match x"),
        ({"gamma": torch.ones(2, dtype=torch.float64)}, TypeError, r"draw_read: gamma has dtype torch.float64 but x"),
        ({"delta": torch.ones(2, dtype=torch.int64)}, TypeError, r"draw_read: delta must have a floating-point dtype"),
        ({"x": torch.zeros(2, 5, 5)}, ValueError, r"draw_read: x must be a 4-D tensor \(B, C, H, W\)"),
    ],
)
def test_bad_arguments(change, error, pattern):
    args = {"x": torch.zeros(2, 3, 5, 5), "N": 4}
    args.update({name: torch.ones(2) for name in ("gx", "gy", "delta", "sigma2", "gamma")})
    args.update(change)
    with pytest.raises(error, match=pattern):
        draw_read(args["x"], args["gx"], args["gy"], args["delta"], args["sigma2"], args["gamma"], args["N"])
