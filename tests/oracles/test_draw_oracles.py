"""The DRAW attention references against the loop oracles, their closed-form backwards against autograd and
the oracle's finite differences, and the two filterbank bugs of public DRAW ports shown absent."""

from __future__ import annotations

import pytest
import torch

from pyvidgen.kernels.reference import draw_filterbank as ref_bank
from pyvidgen.kernels.reference import draw_read as ref_read
from pyvidgen.kernels.reference import draw_write as ref_write
from tests.oracles.draw_oracles import (
    draw_read_oracle,
    draw_write_oracle,
    filterbank_oracle,
    parameter_gradient_oracle,
)

# (B, C, H, W, N): C = 1 and 3, N = 1, a glimpse larger than the image, odd and prime sizes.
SHAPES = [(2, 3, 5, 7, 3), (1, 1, 6, 6, 1), (2, 1, 4, 9, 5), (1, 3, 1, 1, 2), (1, 2, 7, 3, 4)]
BUGS = ("sigma_squared", "normalised_over_filters")


def _params(batch: int, height: int, width: int, n: int, rng: torch.Generator) -> list[torch.Tensor]:
    """Centres around and beyond the image, strides up to two tilings, sigma2 away from 1 (where a squared
    sigma2 would not show), gamma around 1."""

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=rng, dtype=torch.float64)

    extent = max(height, width)
    return [
        uniform(-0.3 * width, 1.3 * width),
        uniform(-0.3 * height, 1.3 * height),
        uniform(0.1, 2.0) * extent / n,
        uniform(0.3, 4.0),
        uniform(0.5, 2.0),
    ]


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_read_and_write_match_oracles(rng, shape):
    batch, channels, height, width, n = shape
    params = _params(batch, height, width, n, rng)
    x = torch.randn(batch, channels, height, width, generator=rng, dtype=torch.float64)
    w = torch.randn(batch, channels, n, n, generator=rng, dtype=torch.float64)
    torch.testing.assert_close(ref_read.draw_read(x, *params, n), draw_read_oracle(x, *params, n))
    torch.testing.assert_close(
        ref_write.draw_write(w, *params, height, width), draw_write_oracle(w, *params, height, width)
    )


def test_reference_filterbank_special_glimpses(rng):
    """Filters centred exactly on pixels, a zero stride, a glimpse entirely outside, and sigma2 extremes."""
    cases = [  # (g, delta, sigma2)
        (
            3.5,
            1.0,
            1e-30,
        ),  # every filter on a pixel (N = 4: centres at g +- 0.5, g +- 1.5), narrower than a pixel: one-hot rows
        (2.0, 0.0, 0.7),  # every filter on the same centre
        (-1e4, 1.0, 1.0),  # far outside: every weight underflows; the 1e-8 floor gives 0, not 0/0
        (4.5, 2.0, 1e30),  # wider than the image: uniform rows
        (2.5, 0.5, 1e-30),  # narrow filters between pixels: every weight underflows
    ]
    n, size = 4, 8
    for g, delta, sigma2 in cases:
        f = ref_bank.filterbank(*(torch.tensor([v], dtype=torch.float64) for v in (g, delta, sigma2)), n, size)[0]
        expected = torch.tensor(filterbank_oracle(g, delta, sigma2, n, size), dtype=torch.float64)
        torch.testing.assert_close(f[0], expected, rtol=1e-12, atol=0)
        assert f.isfinite().all()
    one_hot = ref_bank.filterbank(*(torch.tensor([v], dtype=torch.float64) for v in (3.5, 1.0, 1e-30)), n, size)[0]
    assert torch.equal(one_hot[0], torch.eye(size, dtype=torch.float64)[[2, 3, 4, 5]])


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_reference_backwards_are_autograd_of_forwards(rng, shape):
    batch, channels, height, width, n = shape
    params = _params(batch, height, width, n, rng)
    x = torch.randn(batch, channels, height, width, generator=rng, dtype=torch.float64)
    w = torch.randn(batch, channels, n, n, generator=rng, dtype=torch.float64)
    for fn, backward, tensor, sizes in (
        (ref_read.draw_read, ref_read.draw_read_backward, x, (n,)),
        (ref_write.draw_write, ref_write.draw_write_backward, w, (height, width)),
    ):
        leaves = [t.clone().requires_grad_() for t in (tensor, *params)]
        out = fn(*leaves, *sizes)
        grad_out = torch.randn(out.shape, generator=rng, dtype=torch.float64)
        expected = torch.autograd.grad(out, leaves, grad_out)
        actual = backward(grad_out, tensor, *params, *sizes)
        for a, e in zip(actual, expected, strict=True):
            torch.testing.assert_close(a, e)
        assert torch.autograd.gradcheck(lambda *t, f=fn, s=sizes: f(*t, *s), tuple(leaves))


def test_reference_parameter_gradients_match_oracle_differences(rng):
    """The closed-form gradients of the five parameters against central differences of the loop oracles."""
    batch, channels, height, width, n = 2, 2, 5, 6, 3
    params = _params(batch, height, width, n, rng)
    x = torch.randn(batch, channels, height, width, generator=rng, dtype=torch.float64)
    w = torch.randn(batch, channels, n, n, generator=rng, dtype=torch.float64)
    grad_read = torch.randn(batch, channels, n, n, generator=rng, dtype=torch.float64)
    grad_write = torch.randn(batch, channels, height, width, generator=rng, dtype=torch.float64)
    expected = parameter_gradient_oracle(lambda t, *p: draw_read_oracle(t, *p, n), x, params, grad_read)
    actual = ref_read.draw_read_backward(grad_read, x, *params, n)[1:]
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-7)
    expected = parameter_gradient_oracle(lambda t, *p: draw_write_oracle(t, *p, height, width), w, params, grad_write)
    actual = ref_write.draw_write_backward(grad_write, w, *params, height, width)[1:]
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-7)


def test_write_is_the_adjoint_of_read(rng):
    """read = gamma Fy x Fx^T and write = Fy^T w Fx / gamma, so <read(x), w> = gamma^2 <x, write(w)> per sample."""
    batch, channels, height, width, n = 3, 2, 9, 7, 4
    params = _params(batch, height, width, n, rng)
    x = torch.randn(batch, channels, height, width, generator=rng, dtype=torch.float64)
    w = torch.randn(batch, channels, n, n, generator=rng, dtype=torch.float64)
    left = (ref_read.draw_read(x, *params, n) * w).sum((1, 2, 3))
    right = params[4] ** 2 * (x * ref_write.draw_write(w, *params, height, width)).sum((1, 2, 3))
    torch.testing.assert_close(left, right)


@pytest.mark.parametrize("bug", BUGS)
def test_common_port_bugs_are_absent(rng, bug):
    """Each slip of public DRAW ports (sigma2 squared in the exponent; filters normalised over the filters at
    each pixel instead of over the pixels of each filter) changes the glimpse clearly where it matters, and the
    reference is the paper's, not the slip."""
    batch, channels, height, width, n = 2, 2, 10, 12, 5
    # Centred in the image with a stride that tiles it, sigma2 = 4 (so sigma2^2 = 16 differs from sigma2): the
    # filters overlap, and the outer ones are cut by the border.
    params = [
        torch.tensor([5.5, 6.0], dtype=torch.float64),
        torch.tensor([4.5, 5.0], dtype=torch.float64),
        torch.tensor([2.0, 2.5], dtype=torch.float64),
        torch.tensor([4.0, 2.5], dtype=torch.float64),
        torch.tensor([1.0, 1.5], dtype=torch.float64),
    ]
    # A bright pixel under the middle filter (of the image; of the patch) on a faint random background: a smooth
    # image alone is averaged alike by filters of either width, so it could hide the sigma2-squared slip.
    x = 0.1 * torch.rand(batch, channels, height, width, generator=rng, dtype=torch.float64)
    for b in range(batch):
        x[b, :, int(params[1][b]), int(params[0][b])] += 1.0
    w = 0.1 * torch.rand(batch, channels, n, n, generator=rng, dtype=torch.float64)
    w[:, :, n // 2, n // 2] += 1.0
    for fn, oracle, tensor, sizes in (
        (ref_read.draw_read, draw_read_oracle, x, (n,)),
        (ref_write.draw_write, draw_write_oracle, w, (height, width)),
    ):
        correct = oracle(tensor, *params, *sizes)
        buggy = oracle(tensor, *params, *sizes, bug=bug)
        reference = fn(tensor, *params, *sizes)
        torch.testing.assert_close(reference, correct)
        # Clearly different: by a tenth of the glimpse's own scale at least, far beyond any rounding.
        assert (buggy - correct).abs().max() > 0.1 * correct.abs().max()
        assert (reference - buggy).abs().max() > 0.1 * correct.abs().max()
    # What tells the slips apart in the filterbank itself: each of the reference's filters sums to 1 over the
    # pixels, and its width follows sigma2, not sigma2^2.
    f = ref_bank.filterbank(params[0], params[2], params[3], n, width)[0]
    torch.testing.assert_close(f.sum(-1), torch.ones(batch, n, dtype=torch.float64))
    centre = f[0, n // 2]
    mu = float(params[0][0])
    variance = float((centre * (torch.arange(width, dtype=torch.float64) - mu) ** 2).sum())
    assert abs(variance - 4.0) < 0.2
