"""DRAW: the paper's configuration, the loss and the NLL estimate, both variants, backends, compile, pictures."""

from __future__ import annotations

import pytest
import torch

import pyvidgen
from pyvidgen.models.draw import DRAW, PRESETS, DRAWConfig, build_draw
from pyvidgen.nn import DrawAttention, DrawNoAttention

# Few glimpses and small LSTMs: each test runs in well under a second.
TINY = {"glimpses": 3, "encoder_size": 16, "decoder_size": 16, "z_size": 4, "height": 10, "width": 12}


def _tiny(attention: bool = True, **overrides) -> DRAW:
    torch.manual_seed(0)
    return build_draw("small", **{**TINY, "attention": attention, **overrides})


def _images(rng: torch.Generator, batch: int = 4, channels: int = 1) -> torch.Tensor:
    return (torch.rand(batch, channels, 10, 12, generator=rng) < 0.3).float()


def test_paper_preset_matches_the_paper():
    config = PRESETS["paper"]
    assert (config.glimpses, config.encoder_size, config.decoder_size, config.z_size) == (64, 256, 256, 100)
    assert (config.read_n, config.write_n, config.channels, config.height, config.width) == (2, 5, 1, 28, 28)
    model = DRAW(config)
    assert isinstance(model.heads, DrawAttention) and (model.heads.read_n, model.heads.write_n) == (2, 5)
    assert model.encoder.input_size == 2 * 2 * 2 + 256 and model.encoder.hidden_size == 256
    assert model.posterior.out_features == 2 * 100 and model.decoder.input_size == 100
    assert model.decoder.hidden_size == 256 and model.heads.patch_layer.out_features == 25
    baseline = build_draw("paper", attention=False)
    assert isinstance(baseline.heads, DrawNoAttention) and baseline.encoder.input_size == 2 * 784 + 256
    assert baseline.config.glimpses == 64 and baseline.heads.write_layer.out_features == 784


@pytest.mark.parametrize("attention", [True, False], ids=["attention", "no-attention"])
def test_losses_and_nll_estimate(attention, rng):
    model = _tiny(attention)
    x = _images(rng)
    neg_elbo = torch.stack([model.negative_elbo(x, torch.Generator().manual_seed(s)) for s in range(8)])
    assert neg_elbo.shape == (8, 4) and torch.isfinite(neg_elbo).all() and (neg_elbo > 0).all()
    again = model.negative_elbo(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, neg_elbo[0])  # the generator is the only randomness
    with torch.no_grad():
        nll = model.nll_estimate(x, 64, torch.Generator().manual_seed(1))
        chunked = model.nll_estimate(x, 64, torch.Generator().manual_seed(1), max_rows=4 * 5)
    assert nll.shape == (4,) and torch.isfinite(nll).all() and (nll > 0).all()
    # An importance-weighted bound is tighter than the ELBO: lower on average (Burda et al. 2016).
    assert nll.mean() <= neg_elbo.mean()
    assert torch.isfinite(chunked).all() and (chunked - nll).abs().max() < 0.05 * nll.abs().max()


def test_negative_elbo_is_the_likelihood_plus_the_kl_of_every_step(rng):
    """Two glimpses written out by hand against the model's loss."""
    model = _tiny(glimpses=2).double()
    x = _images(rng).double()
    got = model.negative_elbo(x, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    h = c = torch.zeros(4, 16, dtype=torch.float64)
    h_enc = c_enc = torch.zeros(4, 16, dtype=torch.float64)
    canvas, kl = torch.zeros_like(x), 0.0
    for _ in range(2):
        r = model.heads.read(x, x - torch.sigmoid(canvas), h)
        h_enc, c_enc = model.encoder(torch.cat((r, h), 1), (h_enc, c_enc))
        mean, logvar = model.posterior(h_enc).chunk(2, -1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen, dtype=torch.float64)
        kl = kl + 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(-1)
        h, c = model.decoder(z, (h, c))
        canvas = canvas + model.heads.write(h)
    nll = torch.nn.functional.binary_cross_entropy_with_logits(canvas, x, reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(got, nll + kl)


@pytest.mark.parametrize("channels", [1, 3])
def test_generate_and_steps(channels, rng):
    model = _tiny(channels=channels).eval()
    images, steps = model.generate(5, torch.Generator().manual_seed(0), return_steps=True)
    assert images.shape == (5, channels, 10, 12) and 0 <= images.min() and images.max() <= 1
    assert steps.canvases.shape == (3, 5, channels, 10, 12) and steps.write.shape == (3, 5, 5) and steps.read is None
    torch.testing.assert_close(steps.canvases[-1], images)
    torch.testing.assert_close(model.sample(5, torch.Generator().manual_seed(0)), images)
    seen = model.reconstruct_steps(_images(rng, 2, channels), torch.Generator().manual_seed(0))
    assert seen.canvases.shape == (3, 2, channels, 10, 12) and seen.read.shape == seen.write.shape == (3, 2, 5)
    # The first read comes from the zero decoder state: the read layer's bias alone.
    torch.testing.assert_close(seen.read[0], model.heads.params(torch.zeros(2, 16), "read").stacked())
    assert model.reconstruct(_images(rng, 2, channels)).shape == (2, channels, 10, 12)
    plain = _tiny(False).eval()
    _, plain_steps = plain.generate(2, return_steps=True)
    assert plain_steps.write is None and plain.reconstruct_steps(_images(rng, 2)).read is None


def test_backends_give_the_same_loss_and_gradients(rng):
    x = _images(rng)
    results = {}
    for name in ("reference", "auto"):
        model = _tiny(channels=1)
        with pyvidgen.backend(name):
            loss = model.negative_elbo(x, torch.Generator().manual_seed(0)).mean()
            loss.backward()
        results[name] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(results["auto"][0], results["reference"][0], rtol=1e-5, atol=1e-4)
    for a, b in zip(results["auto"][1], results["reference"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_compiles_fullgraph(rng):
    model = _tiny()
    x = _images(rng)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.manual_seed(5)
    got = compiled(x)
    torch.manual_seed(5)
    torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-4)


def test_autocast_bfloat16_trains(rng):
    model = _tiny()
    x = _images(rng)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.negative_elbo(x).mean()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_bad_inputs(rng):
    model = _tiny()
    with pytest.raises(ValueError, match=r"DRAW.negative_elbo: x must be \(B, 1, 10, 12\), got \(4, 1, 12, 10\)"):
        model.negative_elbo(_images(rng).transpose(2, 3))
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        model.nll_estimate(_images(rng), 0)
    with pytest.raises(ValueError, match="glimpses must be a positive int"):
        DRAW(DRAWConfig(glimpses=0))
    with pytest.raises(ValueError, match="attention must be a bool"):
        DRAW(DRAWConfig(attention="no"))
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        build_draw("huge")
    with pytest.raises(ValueError, match=r"unknown DRAWConfig fields \['lstm'\]"):
        build_draw("small", lstm=3)


def test_training_step_benchmark_compares_both_backends():
    from pyvidgen.bench.layers_report import format_step_table
    from pyvidgen.bench.model_step import time_model_step

    rows = time_model_step("draw", batch=4, seconds=0.1, min_runs=1, rounds=1, **{**TINY, "height": 28, "width": 28})
    assert [r["backend"] for r in rows] == ["reference", "auto"]
    assert all(r["ms"] > 0 and r["loss_diff_vs_reference"] < 1e-3 for r in rows)
    assert "draw small 4x3x28^2" in format_step_table(rows)


@pytest.mark.slow
def test_paper_preset_takes_a_training_step(rng):
    torch.manual_seed(0)
    model = build_draw("paper")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = (torch.rand(2, 1, 28, 28, generator=rng) < 0.2).float()
    before = model.negative_elbo(x, torch.Generator().manual_seed(0)).mean()
    before.backward()
    optimizer.step()
    assert torch.isfinite(before) and all(torch.isfinite(p).all() for p in model.parameters())
    images, steps = model.generate(2, return_steps=True)
    assert images.shape == (2, 1, 28, 28) and steps.canvases.shape[0] == 64
