"""pyvidgen.ops.draw_write: the shared op tester, the loop oracle, write as read's adjoint, DRAW's special
patches and the op's own errors."""

from __future__ import annotations

import pytest
import torch

import pyvidgen
from pyvidgen.ops import OPS, draw_read, draw_write
from pyvidgen.testing import run_backend
from tests.conftest import DEVICE, kernel_backends
from tests.ops.op_tester import OpTester
from tests.oracles.draw_oracles import draw_write_oracle

BACKENDS = ["reference", *(b for b in kernel_backends() if b in OPS["draw_write"].spec.backends)]


class TestDrawWrite(OpTester):
    op_name = "draw_write"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 3, 6, 7, 3), (1, 1, 5, 5, 1), (2, 1, 4, 9, 6)])
def test_matches_the_loop_oracle(backend, shape, rng):
    op = OPS["draw_write"]
    w, *params, height, width = op.sample(shape, dtype=torch.float64, device=DEVICE, generator=rng)
    with pyvidgen.backend(backend):
        out = draw_write(w, *params, height, width)
    torch.testing.assert_close(out.cpu(), draw_write_oracle(w.cpu(), *(p.cpu() for p in params), height, width))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["glimpse", "on pixels"])
def test_write_is_the_adjoint_of_read(backend, variant, rng):
    """read = gamma Fy x Fx^T and write = Fy^T w Fx / gamma: <read(x), w> = gamma^2 <x, write(w)> per sample,
    and the gradient of read with respect to x is gamma^2 write of the output gradient."""
    x, *params, n = OPS["draw_read"].sample(
        (3, 2, 9, 7, 4), dtype=torch.float64, device=DEVICE, generator=rng, variant=variant
    )
    w = torch.randn(3, 2, n, n, generator=rng, dtype=torch.float64).to(DEVICE)
    gamma = params[4]
    with pyvidgen.backend(backend):
        left = (draw_read(x, *params, n) * w).sum((1, 2, 3))
        written = draw_write(w, *params, 9, 7)
        right = gamma**2 * (x * written).sum((1, 2, 3))
        torch.testing.assert_close(left, right)
        leaf = x.clone().requires_grad_()
        (grad_x,) = torch.autograd.grad(draw_read(leaf, *params, n), leaf, w)
    torch.testing.assert_close(grad_x, gamma[:, None, None, None] ** 2 * written)


SPECIAL = {
    # Every filter centred on a pixel and narrower than one: the patch lands on rows 1..5, columns 2..6.
    "on pixels, narrow": ((4.0, 3.0, 1.0, 1e-30, 2.0), 5),
    "N = 1": ((2.3, 1.7, 1.0, 0.8, 1.3), 1),
    "delta = 0": ((3.0, 2.5, 0.0, 0.6, 0.7), 4),
    "outside the canvas": ((-1e3, 40.0, 1.0, 1.0, 1.0), 3),
    "wide": ((3.5, 3.0, 2.0, 1e30, 2.0), 3),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SPECIAL, ids=list(SPECIAL))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_special_patches(backend, case, dtype, rng):
    row, n = SPECIAL[case]
    w = torch.randn(2, 3, n, n, generator=rng, dtype=torch.float64).to(DEVICE)
    params = [torch.tensor(column, dtype=torch.float64, device=DEVICE) for column in zip(row, row, strict=True)]
    expected = draw_write_oracle(w.cpu(), *(p.cpu() for p in params), 8, 9)
    grad = torch.randn(expected.shape, generator=rng, dtype=torch.float64).to(device=DEVICE, dtype=dtype)
    result = run_backend(OPS["draw_write"], backend, (w.to(dtype), *(p.to(dtype) for p in params), 8, 9), (grad,))
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {}
    torch.testing.assert_close(result["out"].double().cpu(), expected, **tol)
    assert all(t.isfinite().all() for t in result.values())
    if case == "on pixels, narrow":
        canvas = torch.zeros(2, 3, 8, 9, dtype=dtype, device=DEVICE)
        canvas[:, :, 1:6, 2:7] = w.to(dtype) / 2
        torch.testing.assert_close(result["out"], canvas, rtol=0, atol=0)
    if case == "outside the canvas":
        assert (result["out"] == 0).all() and (result["grad_w"] == 0).all()


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [
        ({"H": 0}, ValueError, r"draw_write: the canvas size H must be >= 1, got 0"),
        ({"W": -1}, ValueError, r"draw_write: the canvas size W must be >= 1, got -1"),
        ({"w": torch.zeros(2, 3, 4, 5)}, ValueError, r"draw_write: w must have shape \(B, C, N, N\) = \(2, 3, 4, 4\)"),
        ({"gy": torch.zeros(2, 1)}, ValueError, r"draw_write: gy must be a 1-D tensor \(B,\), got shape \(2, 1\)"),
        ({"delta": torch.ones(1)}, ValueError, r"draw_write: delta must have shape \(B,\) = \(2,\) to match w"),
        ({"sigma2": torch.ones(2, device="meta")}, RuntimeError, r"draw_write: sigma2 is on meta but w is on cpu"),
    ],
)
def test_bad_arguments(change, error, pattern):
    args = {"w": torch.zeros(2, 3, 4, 4), "H": 6, "W": 7}
    args.update({name: torch.ones(2) for name in ("gx", "gy", "delta", "sigma2", "gamma")})
    args.update(change)
    with pytest.raises(error, match=pattern):
        draw_write(
            args["w"], args["gx"], args["gy"], args["delta"], args["sigma2"], args["gamma"], args["H"], args["W"]
        )
