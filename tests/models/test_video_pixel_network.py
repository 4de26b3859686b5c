"""Video Pixel Networks: the paper's architecture, causality end to end, likelihoods, samplers, backends."""

from __future__ import annotations

import math

import pytest
import torch

import pyvidgen
from pyvidgen.models.video_pixel_network import PRESETS, VideoPixelNetwork, bits_per_dim, build_vpn, quantize
from pyvidgen.models.vpn_sampling import sample_future
from pyvidgen.nn import MaskedConv2d, ResidualMultiplicativeBlock
from pyvidgen.testing import check_causal
from tests.models.compiled_training import assert_compiled_training_matches_eager

# Small enough for float64 gradients and the naive sampler.
TINY = {
    "small": {},
    "small-rgb": {"levels": 8, "hidden": 12, "lstm_channels": 8},
    "baseline": {"spatial_dependencies": False},
}


def _tiny(name: str) -> VideoPixelNetwork:
    preset = "small" if name == "baseline" else name
    torch.manual_seed(0)
    model = build_vpn(preset, **TINY[name]).double()
    for p in model.parameters():  # away from the initial near-zero outputs, so every path matters
        torch.nn.init.normal_(p, std=0.3)
    return model


def test_paper_preset_matches_the_paper():
    model = VideoPixelNetwork(PRESETS["paper"])
    blocks = [m for m in model.encoder if isinstance(m, ResidualMultiplicativeBlock)]
    assert [b.mu1.conv.dilation for b in blocks] == [(1, 1), (2, 2), (4, 4), (8, 8), (1, 1), (2, 2), (4, 4), (8, 8)]
    assert all(b.channels == 256 and b.mu1.channels == 128 for b in blocks)
    assert model.lstm.hidden_channels == [256] and model.lstm.cells[0].kernel_size == (3, 3)
    assert len(model.decoder) == 12 and all(b.masked for b in model.decoder)
    assert isinstance(model.first, MaskedConv2d) and model.first.mask_type == "A"
    assert all(b.mu1.conv.mask_type == "B" and b.down.mask_type == "B" for b in model.decoder)
    assert model.head.out_channels == 256  # a 256-way softmax per (grey) sub-pixel


@pytest.mark.parametrize("name", TINY)
def test_shapes_and_likelihood(name, rng):
    model = _tiny(name)
    c = model.config.channels
    frames = torch.rand(2, 4, c, 5, 6, generator=rng, dtype=torch.float64)
    logits = model(frames)
    if model.config.output == "categorical":
        assert logits.shape == (2, 3, c, model.config.levels, 5, 6)
        levels = quantize(frames[:, 1:], model.config.levels)
        manual = -torch.log_softmax(logits, dim=3).gather(3, levels.unsqueeze(3)).squeeze(3).sum((2, 3, 4))
    else:
        assert logits.shape == (2, 3, 1, 5, 6)
        target = (frames[:, 1:] > 0.5).double()
        manual = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").sum((2, 3, 4))
    nll = model.nll(frames)
    torch.testing.assert_close(nll, manual)
    torch.testing.assert_close(model.nll(frames, from_frame=2), nll[:, 1:])
    assert bits_per_dim(nll[0, 0], c * 30) == pytest.approx(float(nll[0, 0]) / (c * 30 * math.log(2)))


@pytest.mark.parametrize("name", TINY)
def test_no_output_sees_the_future(name):
    """Frame t's distribution depends on earlier frames and frame t's earlier sub-pixels only."""
    model = _tiny(name)
    c = model.config.channels

    def logits(x):
        out = model.forward_inputs(x)
        return out.flatten(2, 3) if model.config.output == "categorical" else out

    report = check_causal(logits, (2, 3, c, 5, 4), c, frame_offset=1, probes=[(0, 4, 3), (1, 2, 1), (1, 0, 0)])
    assert not report["violations"]
    earlier_frames = report["receptive_field"][:2]
    if name == "baseline":
        assert not report["receptive_field"][2].any()  # the baseline never sees the frame it predicts
    else:
        assert report["receptive_field"][2].any()
    assert earlier_frames.any()


def test_the_decoder_alone_is_causal():
    model = _tiny("small-rgb")
    condition = [torch.randn(2, 12, 5, 4, dtype=torch.float64) for _ in model.condition]
    report = check_causal(lambda x: model.decode(x, condition), (2, 3, 5, 4), 3)
    assert not report["violations"] and report["seen"] > 0


@pytest.mark.parametrize("name", TINY)
def test_cached_sampler_equals_the_naive_one(name, rng):
    """Same noise, same samples: the cached sampler only avoids recomputing what earlier steps computed."""
    model = _tiny(name).eval()
    c = model.config.channels
    context = torch.rand(2, 3, c, 5, 4, generator=rng, dtype=torch.float64)
    seed = int(torch.randint(0, 2**31, (), generator=rng))
    cached = sample_future(model, context, 2, generator=torch.Generator().manual_seed(seed))
    naive = sample_future(model, context, 2, cached=False, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(cached, naive)
    assert cached.shape == (2, 2, c, 5, 4) and cached.min() >= 0 and cached.max() <= 1
    if model.config.output == "bernoulli":
        assert set(cached.unique().tolist()) <= {0.0, 1.0}
    else:
        levels = model.config.levels - 1
        assert torch.equal(cached * levels, (cached * levels).round())


def test_backends_give_the_same_loss_and_gradients(rng):
    frames = torch.rand(2, 3, 3, 6, 5, generator=rng)
    results = {}
    for backend in ("reference", "auto"):
        torch.manual_seed(0)
        model = build_vpn("small-rgb", hidden=12, lstm_channels=12)
        with pyvidgen.backend(backend):
            loss = model.nll(frames).mean()
            loss.backward()
        results[backend] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(results["auto"][0], results["reference"][0], rtol=1e-5, atol=1e-4)
    for a, b in zip(results["auto"][1], results["reference"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_compiles_fullgraph(rng):
    model = build_vpn("small")
    frames = torch.rand(2, 3, 1, 8, 8, generator=rng)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(frames), model(frames), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_inductor_training_step_matches_eager(dynamic, rng):
    """Inductor, as users compile training steps: the loss and every gradient as in eager; with dynamic shapes
    two frame sizes run through one graph."""
    torch.manual_seed(0)
    model = build_vpn("small-rgb", hidden=12, lstm_channels=12)
    sizes = ((6, 7), (9, 5)) if dynamic else ((6, 7),)
    batches = [torch.rand(2, 3, 3, *size, generator=rng) for size in sizes]
    assert_compiled_training_matches_eager(model, lambda frames: model.nll(frames).mean(), batches, dynamic=dynamic)


def test_sliced_and_channels_last_frames_give_the_same_loss(rng):
    model = build_vpn("small-rgb", hidden=12, lstm_channels=12)
    frames = torch.rand(2, 3, 3, 8, 8, generator=rng)
    expected = model.nll(frames)
    wide = torch.rand(2, 6, 3, 8, 16, generator=rng)
    wide[:, ::2, :, :, ::2] = frames  # every other frame and column: a non-contiguous view
    torch.testing.assert_close(model.nll(wide[:, ::2, :, :, ::2]), expected)
    per_frame_channels_last = frames.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (2, 3))
    torch.testing.assert_close(model.nll(per_frame_channels_last), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_trains_under_autocast(dtype, rng):
    """Mixed precision: forward and backward run, and the loss and gradients stay close to float32's."""
    frames = torch.rand(2, 3, 3, 8, 8, generator=rng)
    results = {}
    for precision in ("float32", "autocast"):
        torch.manual_seed(0)
        model = build_vpn("small-rgb", hidden=12, lstm_channels=12)
        with torch.autocast("cpu", dtype=dtype, enabled=precision == "autocast"):
            loss = model.nll(frames).mean()
        loss.backward()
        results[precision] = (loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    loss, grads = results["autocast"]
    assert loss.isfinite() and grads.isfinite().all()
    torch.testing.assert_close(loss, results["float32"][0], rtol=2e-2, atol=0)
    reference = results["float32"][1]
    assert (grads - reference).norm() <= 0.1 * reference.norm()


def test_bad_inputs():
    model = build_vpn("small")
    with pytest.raises(
        ValueError, match=r"frames must be \(B, T, C, H, W\) with C = 1 and T >= 2, got \(2, 1, 1, 8, 8\)"
    ):
        model(torch.zeros(2, 1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"unknown preset 'huge'"):
        build_vpn("huge")
    with pytest.raises(ValueError, match=r"hidden / 2 a multiple of channels \(3\)"):
        build_vpn("small-rgb", hidden=20)


@pytest.mark.slow
def test_paper_preset_runs_one_training_step():
    torch.manual_seed(0)
    model = VideoPixelNetwork(PRESETS["paper"])
    optimizer = torch.optim.RMSprop(model.parameters(), lr=3e-4)
    frames = torch.rand(1, 3, 1, 16, 16)
    loss = model.nll(frames).mean()
    loss.backward()
    optimizer.step()
    assert loss.isfinite()
