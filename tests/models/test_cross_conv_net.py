"""The cross convolutional network: the paper's sizes, the loss, the deterministic baseline, sampling, backends,
mixed precision, layouts, compile."""

from __future__ import annotations

import math

import pytest
import torch

import pyvidgen
from pyvidgen.models.cross_conv_net import PRESETS, CrossConvConfig, CrossConvNet, build_cross_conv_net
from pyvidgen.nn import CrossConv2d
from pyvidgen.ops import OPS
from tests.conftest import kernel_backends
from tests.models.compiled_training import assert_compiled_training_matches_eager

SIZE = 16  # frames of the tests: the small preset's network on 16 x 16 pairs runs in milliseconds


def _net(**overrides) -> CrossConvNet:
    torch.manual_seed(0)
    return build_cross_conv_net("small", **overrides)


def _pairs(rng: torch.Generator, batch: int = 4, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    frames = torch.rand(batch, 2, 3, size, size, generator=rng)
    return frames[:, 0], frames[:, 1]


def _noise(net: CrossConvNet, rng: torch.Generator, batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, *net.latent_shape, generator=rng)


def _fused_backends() -> list[str]:
    # Interpreted Triton on CPU runs a whole model too slowly to be worth it here (the op tests cover it).
    return [name for name in kernel_backends() if name != "triton"]


def test_paper_preset_matches_the_paper():
    config = PRESETS["paper"]
    assert config.scales == (0.25, 0.5, 1.0, 2.0) and config.features == 32 and config.kernel_size == 5
    assert config.z_channels * config.kernel_size**2 == 3200 and not config.deterministic
    net = CrossConvNet(config)
    assert net.latent_shape == (128, 5, 5) and len(net.image_encoders) == 4
    for encoder in net.image_encoders:
        convs = [m for m in encoder if isinstance(m, torch.nn.Conv2d)]
        assert all(c.kernel_size == (5, 5) for c in convs) and convs[-1].out_channels == 32
    last = net.kernel_decoder[-1]
    assert last.out_channels == 4 * 32 and last.kernel_size == (5, 5)  # 32 5x5 kernels per scale
    decoder = [m for m in net.motion_decoder if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in decoder] == [(9, 9), (1, 1), (1, 1)] and decoder[0].in_channels == 4 * 32
    assert isinstance(net.cross_conv, CrossConv2d)


def test_shapes_and_finite_loss(rng):
    net = _net()
    frame0, frame1 = _pairs(rng)
    out = net(frame0, frame1)
    assert out.difference.shape == frame0.shape and out.z.shape == out.mean.shape == out.logvar.shape == (4, 2, 9, 9)
    assert [f.shape[-1] for f in net.encode_image(frame0)] == [8, 16, 32]
    assert [k.shape for k in net.decode_kernels(out.z)] == [(4, 32, 9, 9)] * 3
    terms = net.loss(frame0, frame1, kl_weight=0.5)
    assert terms.loss.shape == () and torch.isfinite(terms.loss)
    assert all(t.shape == (4,) and torch.isfinite(t).all() for t in terms[1:]) and (terms.kl > 0).all()
    assert net.sample(frame0).shape == frame0.shape
    # Any frame size whose scaled sizes are whole: the latent grid stays k x k.
    assert net(*_pairs(rng, 2, 24)).difference.shape == (2, 3, 24, 24)


def test_loss_is_the_gaussian_negative_elbo(rng):
    net = _net().double()
    frame0, frame1 = (f.double() for f in _pairs(rng))
    noise = _noise(net, rng).double()
    terms = net.loss(frame0, frame1, kl_weight=0.25, noise=noise)
    mean, logvar = net.encode_motion(frame0, frame1)
    z = mean + (0.5 * logvar).exp() * noise
    sse = (net.predict_difference(frame0, z) - (frame1 - frame0)).square().sum((1, 2, 3))
    kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum((1, 2, 3))
    variance = net.config.variance
    torch.testing.assert_close(terms.reconstruction, sse / (2 * variance))
    torch.testing.assert_close(terms.kl, kl)
    torch.testing.assert_close(terms.loss, (sse / (2 * variance) + 0.25 * kl).mean())
    constant = 0.5 * 3 * SIZE * SIZE * math.log(2 * math.pi * variance)
    torch.testing.assert_close(terms.negative_elbo, sse / (2 * variance) + constant + kl)


def test_gradients_reach_every_parameter(rng):
    net = _net()
    net.loss(*_pairs(rng)).loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_deterministic_model_ignores_z_and_has_no_kl(rng):
    net = _net(deterministic=True)
    assert net.motion_encoder is None and not any(n.startswith("motion_encoder") for n, _ in net.named_parameters())
    frame0, frame1 = _pairs(rng)
    out = net(frame0)  # no frame 1 needed
    assert out.mean is None and out.logvar is None and (out.z == 0).all()
    terms = net.loss(frame0, frame1, kl_weight=1.0)
    assert (terms.kl == 0).all()
    torch.testing.assert_close(terms.loss, terms.reconstruction.mean())
    torch.testing.assert_close(net(frame0, frame1).difference, out.difference)
    net.eval()
    a = net.sample(frame0, generator=torch.Generator().manual_seed(1))
    b = net.sample(frame0, z=torch.randn(4, *net.latent_shape))
    torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(a, frame0 + net(frame0).difference)
    with pytest.raises(RuntimeError, match="deterministic model has no motion encoder"):
        net.encode_motion(frame0, frame1)


def test_sampling_is_diverse_and_reproducible(rng):
    net = _net().eval()
    frame0, _ = _pairs(rng)
    first = net.sample(frame0, generator=torch.Generator().manual_seed(0))
    again = net.sample(frame0, generator=torch.Generator().manual_seed(0))
    other = net.sample(frame0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, again)
    assert (first - other).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # every image gets a different future
    z = torch.randn(4, *net.latent_shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net.sample(frame0, z=z), first)  # z ~ N(0, I) drawn from the generator
    with torch.no_grad():
        torch.testing.assert_close(first, frame0 + net.predict_difference(frame0, z))


@pytest.mark.parametrize("backend", _fused_backends())
def test_backends_give_the_same_loss_and_gradients(backend, rng):
    try:
        with pyvidgen.backend(backend):
            OPS["cross_conv2d"].resolve_backend(torch.device("cpu"))
    except RuntimeError as exc:
        pytest.skip(f"cross_conv2d has no {backend} kernel here: {exc}")
    frame0, frame1 = _pairs(rng)
    noise = _noise(_net(), rng)
    results = {}
    for name in ("reference", backend):
        net = _net()
        with pyvidgen.backend(name):
            loss = net.loss(frame0, frame1, noise=noise).loss
            loss.backward()
        results[name] = (loss.detach(), [p.grad.clone() for p in net.parameters()])
    torch.testing.assert_close(results[backend][0], results["reference"][0], rtol=1e-5, atol=1e-3)
    for a, b in zip(results[backend][1], results["reference"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * max(1.0, b.abs().max().item()))


def test_autocast_bfloat16_trains(rng):
    frame0, frame1 = _pairs(rng)
    noise = _noise(_net(), rng)
    results = {}
    for enabled in (False, True):
        net = _net()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            terms = net.loss(frame0, frame1, noise=noise)
        assert terms.loss.dtype == torch.float32 and torch.isfinite(terms.loss)
        terms.loss.backward()
        grads = torch.cat([p.grad.flatten() for p in net.parameters()])
        assert torch.isfinite(grads).all()
        results[enabled] = (terms.loss.detach(), grads)
    torch.testing.assert_close(results[True][0], results[False][0], rtol=5e-2, atol=1e-2)
    assert torch.nn.functional.cosine_similarity(results[True][1], results[False][1], dim=0) > 0.9


def test_channels_last_and_sliced_frames_give_the_same_loss(rng):
    net = _net()
    frame0, frame1 = _pairs(rng)
    noise = _noise(net, rng)
    expected = net.loss(frame0, frame1, noise=noise).loss
    last = [f.contiguous(memory_format=torch.channels_last) for f in (frame0, frame1)]
    torch.testing.assert_close(net.loss(*last, noise=noise).loss, expected, rtol=1e-5, atol=1e-3)
    wide = torch.zeros(4, 2, 6, SIZE + 1, 2 * SIZE)
    wide[:, 0, ::2, 1:, ::2] = frame0
    wide[:, 1, ::2, 1:, ::2] = frame1
    sliced = (wide[:, 0, ::2, 1:, ::2], wide[:, 1, ::2, 1:, ::2])
    assert not sliced[0].is_contiguous()
    torch.testing.assert_close(net.loss(*sliced, noise=noise).loss, expected, rtol=1e-5, atol=1e-3)


def test_compiles_fullgraph(rng):
    net = _net()
    frame0, frame1 = _pairs(rng)
    noise = _noise(net, rng)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    expected = net(frame0, frame1, noise=noise).difference
    torch.testing.assert_close(compiled(frame0, frame1, noise=noise).difference, expected)


def test_bad_inputs(rng):
    net = _net()
    frame0, frame1 = _pairs(rng)
    with pytest.raises(ValueError, match=r"CrossConvNet.loss: frame0 must be \(B, 3, H, W\), got \(4, 1, 16, 16\)"):
        net.loss(frame0[:, :1], frame1)
    with pytest.raises(ValueError, match=r"frame0 \(4, 3, 16, 16\) and frame1 \(4, 3, 8, 8\) differ"):
        net.loss(frame0, frame1[..., :8, :8])
    with pytest.raises(ValueError, match=r"frame1 is needed"):
        net(frame0)
    with pytest.raises(ValueError, match=r"z must be \(4, 2, 9, 9\), got \(4, 2, 5, 5\)"):
        net.sample(frame0, z=torch.zeros(4, 2, 5, 5))
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        build_cross_conv_net("huge")
    with pytest.raises(ValueError, match=r"unknown CrossConvConfig fields \['depth'\]"):
        build_cross_conv_net("small", depth=3)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        CrossConvConfig(kernel_size=4)
    with pytest.raises(ValueError, match="variance must be > 0"):
        CrossConvConfig(variance=0.0)


def test_training_step_benchmark_compares_both_backends():
    from pyvidgen.bench.layers_report import format_step_table
    from pyvidgen.bench.model_step import time_model_step

    rows = time_model_step("cross-conv", batch=2, size=16, seconds=0.1, min_runs=1, rounds=1)
    assert [r["backend"] for r in rows] == ["reference", "auto"]
    assert all(r["ms"] > 0 and r["loss_diff_vs_reference"] < 1e-2 for r in rows)
    assert rows[0]["fused_op_share"] > 0
    assert "cross-conv small 2x" in format_step_table(rows)


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_inductor_training_step_matches_eager(dynamic, rng):
    """Inductor, as users compile training steps: the loss and every gradient as in eager; with dynamic shapes
    two frame sizes run through one graph (the README's layout workaround, in the helper).

    In float64: at a batch of two the network's BatchNorms amplify float32 rounding, so eager float32 gradients
    themselves sit up to ~0.5% (in norm) from float64 ones for some draws, which no elementwise tolerance that
    still catches a wrong gradient would accept."""
    net = _net().double()
    sizes = (16, 24) if dynamic else (16,)
    batches = [torch.rand(2, 2, 3, size, size, generator=rng, dtype=torch.float64) for size in sizes]
    noise = torch.randn(2, *net.latent_shape, generator=rng, dtype=torch.float64)

    def loss_of(frames):
        return net.loss(frames[:, 0], frames[:, 1], kl_weight=0.5, noise=noise).loss

    assert_compiled_training_matches_eager(net, loss_of, batches, dynamic=dynamic, rtol=1e-7, atol=1e-7)


@pytest.mark.slow
def test_paper_preset_takes_a_training_step(rng):
    torch.manual_seed(0)
    net = build_cross_conv_net("paper")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    frames = torch.rand(2, 2, 3, 128, 128, generator=rng)
    loss = net.loss(frames[:, 0], frames[:, 1], kl_weight=1e-5).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in net.parameters())
    assert net.eval().sample(frames[:, 0]).shape == (2, 3, 128, 128)
