"""The spatio-temporal video autoencoder: architecture, zero-flow start, rollout, backends, compile, autocast."""

from __future__ import annotations

import pytest
import torch

import pyvidgen
from pyvidgen.models.st_autoencoder import (
    PRESETS,
    NearestUpsample2x,
    SpatioTemporalAutoencoder,
    build_st_autoencoder,
)
from tests.models.compiled_training import assert_compiled_training_matches_eager


def _frames(rng, batch=2, steps=4, size=16):
    return torch.rand(batch, steps, 1, size, size, generator=rng)


def test_paper_preset_matches_the_paper():
    model = build_st_autoencoder("paper")
    conv = model.encoder[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (1, 32, (7, 7))
    assert isinstance(model.encoder[1], torch.nn.MaxPool2d) and isinstance(model.encoder[2], torch.nn.Tanh)
    flow = model.flow_head
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in flow] == [
        (45, 2, (15, 15)),
        (2, 2, (15, 15)),
        (2, 2, (1, 1)),
    ]
    assert model.config.memory_channels == 45 and model.config.flow_clamp == 0.5
    assert model.smoothness.weight == 1e-3
    decoder_conv = model.decoder[1]
    assert (decoder_conv.in_channels, decoder_conv.out_channels, decoder_conv.kernel_size) == (32, 1, (7, 7))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_decoder_upsampling_is_nearest_upsampling(layout, dtype, rng):
    x = torch.randn(3, 5, 7, 6, generator=rng).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        x = torch.randn(3, 5, 9, 12, generator=rng).to(dtype)[:, :, 1:8, ::2]
    grad = torch.randn(3, 5, 14, 12, generator=rng).to(dtype)
    results = []
    for module in (NearestUpsample2x(), torch.nn.Upsample(scale_factor=2, mode="nearest")):
        leaf = x.detach().clone().requires_grad_()
        out = module(leaf)
        out.backward(grad)
        results.append((out, leaf.grad))
    assert torch.equal(results[0][0], results[1][0])
    # Each input pixel's gradient is a sum of four, rounded once by torch's upsampling and twice (rows, then
    # columns) by the repeats: in bfloat16 a sum that cancels can differ by an ulp of the largest term.
    scale = float(grad.abs().max())
    atol = 2 * scale * torch.finfo(dtype).eps if dtype == torch.bfloat16 else None
    torch.testing.assert_close(results[0][1], results[1][1], atol=atol, rtol=None if atol is None else 1.6e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encoder_pools_before_its_tanh_as_the_paper_pools_after(dtype, rng):
    model = build_st_autoencoder("small").to(dtype)
    frames = torch.rand(3, 1, 16, 12, generator=rng).to(dtype)
    paper = torch.nn.Sequential(model.encoder[0], torch.nn.Tanh(), torch.nn.MaxPool2d(2))
    grad = torch.randn(3, model.config.encoder_channels, 8, 6, generator=rng).to(dtype)
    results = []
    for encoder in (model.encoder, paper):
        leaf = frames.clone().requires_grad_()
        out = encoder(leaf)
        out.backward(grad)
        results.append((out, leaf.grad))
    assert torch.equal(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_training_starts_from_zero_flow(rng):
    model = SpatioTemporalAutoencoder(PRESETS["small"])
    _, flow, _ = model.step_all(_frames(rng))
    assert torch.count_nonzero(flow) == 0


def test_shapes_and_teacher_forcing(rng):
    model = SpatioTemporalAutoencoder(PRESETS["small"])
    frames = _frames(rng, steps=5)
    predictions, flow, state = model.step_all(frames)
    assert predictions.shape == frames.shape
    assert flow.shape == (2, 5, 2, 8, 8)
    assert flow.abs().max() <= model.config.flow_clamp
    # Step by step with the carried memory state gives the same predictions.
    state, outputs = None, []
    for t in range(5):
        out, _, state = model.step_all(frames[:, t : t + 1], state)
        outputs.append(out)
    torch.testing.assert_close(torch.cat(outputs, dim=1), predictions, atol=1e-5, rtol=1e-5)


def test_rollout_feeds_predictions_back(rng):
    model = SpatioTemporalAutoencoder(PRESETS["small"]).eval()
    frames = _frames(rng, steps=3)
    future = model.rollout(frames, 4)
    assert future.shape == (2, 4, 1, 16, 16)
    assert future.min() >= 0 and future.max() <= 1
    first, _, state = model.step_all(frames)
    second, _, _ = model.step_all(first[:, -1:].clamp(0, 1), state)
    torch.testing.assert_close(future[:, 1:2], second.clamp(0, 1), atol=1e-5, rtol=1e-5)


def test_backends_give_the_same_loss_and_gradients(rng):
    frames = _frames(rng)
    results = {}
    for backend in ("reference", "auto"):
        torch.manual_seed(0)
        model = SpatioTemporalAutoencoder(PRESETS["small"])
        torch.nn.init.normal_(model.flow_head[-1].weight, std=0.05)  # a non-zero flow exercises the warp
        with pyvidgen.backend(backend):
            loss = torch.nn.functional.mse_loss(model(frames[:, :-1]), frames[:, 1:])
            loss.backward()
        results[backend] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(results["auto"][0], results["reference"][0], atol=1e-6, rtol=1e-5)
    for a, b in zip(results["auto"][1], results["reference"][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_compiles_fullgraph(rng):
    model = SpatioTemporalAutoencoder(PRESETS["small"])
    frames = _frames(rng, steps=3)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(frames), model(frames), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_inductor_training_step_matches_eager(dynamic, rng):
    """Inductor, as users compile training steps: the loss and every gradient as in eager; with dynamic shapes
    two frame sizes run through one graph."""
    torch.manual_seed(0)
    model = SpatioTemporalAutoencoder(PRESETS["small"])
    torch.nn.init.normal_(model.flow_head[-1].weight, std=0.05)  # a non-zero flow exercises the warp
    sizes = (16, 24) if dynamic else (16,)
    batches = [_frames(rng, steps=3, size=size) for size in sizes]

    def loss_of(frames):
        return torch.nn.functional.mse_loss(model(frames[:, :-1]), frames[:, 1:])

    assert_compiled_training_matches_eager(model, loss_of, batches, dynamic=dynamic)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_trains_under_autocast(dtype, rng):
    """Mixed precision, as the model is trained on GPUs: forward and backward run unchanged, and the loss and
    gradients stay close to float32's."""
    frames = _frames(rng)
    results = {}
    for precision in ("float32", "autocast"):
        torch.manual_seed(0)
        model = SpatioTemporalAutoencoder(PRESETS["small"])
        torch.nn.init.normal_(model.flow_head[-1].weight, std=0.05)
        context = (
            torch.autocast("cpu", dtype=dtype) if precision == "autocast" else torch.autocast("cpu", enabled=False)
        )
        with context:
            loss = torch.nn.functional.mse_loss(model(frames[:, :-1]).float(), frames[:, 1:])
        loss.backward()
        results[precision] = (loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    loss32, grads32 = results["float32"]
    loss16, grads16 = results["autocast"]
    assert loss16.isfinite() and grads16.isfinite().all()
    torch.testing.assert_close(loss16, loss32, rtol=5e-2, atol=1e-3)
    assert torch.nn.functional.cosine_similarity(grads16, grads32, dim=0) > 0.95


def test_bad_inputs():
    model = SpatioTemporalAutoencoder(PRESETS["small"])
    with pytest.raises(ValueError, match=r"frames must be \(B, T, C, H, W\), got shape \(2, 1, 16, 16\)"):
        model(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"must have 1 channel\(s\), got 3"):
        model(torch.zeros(2, 2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"must be even, got 15x16"):
        model(torch.zeros(2, 2, 1, 15, 16))
    with pytest.raises(ValueError, match=r"unknown preset 'huge'"):
        build_st_autoencoder("huge")


@pytest.mark.slow
def test_paper_preset_runs_one_training_step():
    model = build_st_autoencoder("paper")
    frames = torch.rand(1, 3, 1, 64, 64)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-4)
    loss = torch.nn.functional.mse_loss(model(frames[:, :-1]), frames[:, 1:])
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
