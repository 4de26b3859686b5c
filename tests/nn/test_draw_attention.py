"""DRAW's read and write heads: the paper's parameterisation in the ops' 0-based pixels, shapes, backends."""

from __future__ import annotations

import pytest
import torch

import pyvidgen
from pyvidgen.nn.draw_attention import DrawAttention, DrawNoAttention, glimpse_params


def _fixed(head: DrawAttention, raw_read: list[float], raw_write: list[float] | None = None) -> DrawAttention:
    """Make the heads ignore h: zero weights, the raw parameters as biases."""
    with torch.no_grad():
        for layer, raw in ((head.read_layer, raw_read), (head.write_layer, raw_write or raw_read)):
            layer.weight.zero_()
            layer.bias.copy_(torch.tensor(raw))
    return head


def test_zero_offsets_centre_the_glimpse_in_zero_based_pixels():
    p = glimpse_params(torch.zeros(1, 5), n=3, height=5, width=8)
    # Paper: gx = (W + 1) / 2 in pixels 1..W; the ops count from 0, so the centre of 0..W-1.
    assert p.gx.item() == pytest.approx(3.5) and p.gy.item() == pytest.approx(2.0)
    ends = glimpse_params(torch.tensor([[-1.0, 1.0, 0, 0, 0]]), n=3, height=5, width=8)
    assert ends.gx.item() == pytest.approx(-1.0) and ends.gy.item() == pytest.approx(5.0)  # one pixel outside
    assert p.sigma2.item() == pytest.approx(1.0) and p.gamma.item() == pytest.approx(1.0)


@pytest.mark.parametrize(("n", "expected"), [(2, 7.0), (5, 7.0 / 4), (1, 7.0)])
def test_delta_scales_with_the_image_and_the_glimpse(n, expected):
    raw = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.6931471805599453, 0.0]])
    p = glimpse_params(raw, n=n, height=5, width=8)  # (max(H, W) - 1) / (N - 1) * delta~, N = 1 guarded
    torch.testing.assert_close(p.delta, torch.tensor([expected, 2 * expected]))
    assert torch.isfinite(p.stacked()).all() and p.stacked().shape == (2, 5)


def test_a_sharp_single_filter_at_zero_offset_reads_the_centre_pixel(rng):
    head = _fixed(DrawAttention(4, 7, 9, read_n=1, write_n=1), [0.0, 0.0, -6.0, 0.0, 0.0])
    x = torch.rand(3, 1, 7, 9, generator=rng)
    r = head.read(x, 1 - x, torch.randn(3, 4, generator=rng))
    torch.testing.assert_close(r, torch.stack((x[:, 0, 3, 4], 1 - x[:, 0, 3, 4]), dim=1), rtol=1e-4, atol=1e-4)


def test_read_of_a_constant_image_is_gamma_times_the_constant(rng):
    # A glimpse inside the image: filters far outside underflow to zero, which the 1e-8 floor leaves at zero.
    head = _fixed(DrawAttention(6, 10, 12, read_n=3, write_n=2, channels=2), [0.3, -0.2, 0.5, -0.3, 0.4])
    h = torch.randn(4, 6, generator=rng)
    x = torch.full((4, 2, 10, 12), 0.7)
    r = head.read(x, torch.full_like(x, -0.2), h)
    gamma = head.params(h, "read").gamma[:, None]
    torch.testing.assert_close(r[:, :18], 0.7 * gamma.expand(4, 18))  # filters are normalised
    torch.testing.assert_close(r[:, 18:], -0.2 * gamma.expand(4, 18))


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(channels, rng):
    head = DrawAttention(16, 11, 13, read_n=2, write_n=5, channels=channels)
    h = torch.randn(5, 16, generator=rng)
    x = torch.rand(5, channels, 11, 13, generator=rng)
    assert head.read_features == 2 * channels * 4
    assert head.read(x, x - 0.5, h).shape == (5, 2 * channels * 4)
    assert head.write(h).shape == (5, channels, 11, 13)
    plain = DrawNoAttention(16, 11, 13, channels=channels)
    read = plain.read(x, x - 0.5, h)
    torch.testing.assert_close(read, torch.cat((x.flatten(1), (x - 0.5).flatten(1)), dim=1))
    assert plain.read_features == read.shape[1] and plain.write(h).shape == (5, channels, 11, 13)


def test_write_of_a_centred_sharp_patch_lands_on_the_centre():
    head = _fixed(DrawAttention(3, 7, 9, read_n=1, write_n=1), [0.0, 0.0, -6.0, 0.0, 0.0])
    with torch.no_grad():
        head.patch_layer.weight.zero_()
        head.patch_layer.bias.fill_(2.0)
    canvas = head.write(torch.zeros(2, 3))
    expected = torch.zeros(2, 1, 7, 9)
    expected[:, 0, 3, 4] = 2.0
    torch.testing.assert_close(canvas, expected, rtol=1e-4, atol=1e-4)


def test_backends_agree(rng):
    """The same math on every backend, checked in float64 so that float32 rounding (amplified by the
    parameter gradients' 1 / sigma2 factors) cannot hide or fake a difference; the ops' own tests hold the
    float32 tolerances."""
    x = torch.rand(3, 2, 9, 10, generator=rng, dtype=torch.float64)
    h = torch.randn(3, 8, generator=rng, dtype=torch.float64)
    results = {}
    for name in ("reference", "auto"):
        torch.manual_seed(0)
        head = DrawAttention(8, 9, 10, read_n=3, write_n=4, channels=2).double()
        with pyvidgen.backend(name):
            loss = head.read(x, x - 0.3, h).square().sum() + head.write(h).square().sum()
            loss.backward()
        results[name] = (loss.detach(), [p.grad.clone() for p in head.parameters()])
    torch.testing.assert_close(results["auto"][0], results["reference"][0], rtol=1e-12, atol=1e-12)
    for a, b in zip(results["auto"][1], results["reference"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradients_reach_every_linear_layer(rng):
    head = DrawAttention(8, 9, 10, read_n=2, write_n=3)
    h = torch.randn(4, 8, generator=rng)
    x = torch.rand(4, 1, 9, 10, generator=rng)
    (head.read(x, x - 0.5, h).sum() + (head.write(h) * torch.rand(4, 1, 9, 10, generator=rng)).sum()).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_inputs(rng):
    with pytest.raises(ValueError, match="read_n must be a positive int"):
        DrawAttention(8, 9, 10, read_n=0, write_n=3)
    with pytest.raises(ValueError, match="height must be a positive int"):
        DrawNoAttention(8, -1, 10)
    head = DrawAttention(8, 9, 10, read_n=2, write_n=3)
    x, h = torch.rand(2, 1, 9, 10), torch.randn(2, 8)
    with pytest.raises(ValueError, match=r"x must be \(B, 1, 9, 10\), got \(2, 1, 10, 9\)"):
        head.read(x.transpose(2, 3), x, h)
    with pytest.raises(ValueError, match=r"x_hat must be \(B, 1, 9, 10\)"):
        head.read(x, x[0], h)
    with pytest.raises(ValueError, match=r"h must be \(B, 8\), got \(2, 7\)"):
        head.write(h[:, :7])
    with pytest.raises(ValueError, match="h has batch 1, the images 2"):
        head.read(x, x, h[:1])
    with pytest.raises(ValueError, match="kind must be 'read' or 'write'"):
        head.params(h, "glimpse")
    with pytest.raises(ValueError, match=r"raw must be \(B, 5\)"):
        glimpse_params(torch.zeros(2, 4), 2, 9, 10)


def test_the_first_read_starts_on_the_image():
    """From the zero initial decoder state the read is centred, spans half the image and its filters are wide."""
    head = DrawAttention(8, 28, 28, read_n=2, write_n=5)
    p = head.params(torch.zeros(1, 8), "read")
    assert p.gx.item() == pytest.approx(13.5) and p.gy.item() == pytest.approx(13.5)
    assert p.delta.item() == pytest.approx(13.5) and p.sigma2.item() == pytest.approx(13.5**2 / 4 + 1)
