"""Tests of the VAE (Kingma & Welling 2013): presets, shapes, the bounds, gradients, autocast, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pyvidgen.models.vae as vae_module
from pyvidgen.data import BinarizedDigits
from pyvidgen.models import VAE, build_vae
from pyvidgen.models.variational import bernoulli_log_likelihood, gaussian_log_prob


def _digits(n: int, seed: int = 0, split: str = "test") -> torch.Tensor:
    return BinarizedDigits(n, seed=seed, split=split).batch(range(n))


@pytest.fixture(scope="module")
def trained() -> VAE:
    """A small VAE whose encoder is far from the true posterior, so the bounds differ clearly.

    Stands in for a trained model without the training time: the decoder's first layer is scaled up
    so p(x | z) depends strongly on z, and q(z | x) gets a fixed spread (std 0.6) unrelated to the true posterior.
    """
    torch.manual_seed(0)
    model = build_vae("small")
    with torch.no_grad():
        model.decoder[0][0].weight.mul_(4.0)
        model.head.bias[model.config.latent :].fill_(-1.0)
    return model.eval()


def test_paper_preset_is_the_papers_mlp():
    model = build_vae("paper")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    # Encoder 784 -> 500 (tanh) -> (mean, logvar) of 20 each; decoder 20 -> 500 (tanh) -> 784 logits.
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 500), (500, 40), (20, 500), (500, 784)]
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 2
    assert model.config.latent == 20 and model.config.hidden_layers == 1
    assert build_vae("paper", latent=200).config.latent == 200
    with pytest.raises(ValueError, match="unknown VAE preset 'huge'"):
        build_vae("huge")
    with pytest.raises(ValueError, match="multiple of 4"):
        build_vae("conv", image_size=30)


@pytest.mark.parametrize("preset", ["paper", "conv", "small"])
def test_shapes(preset):
    model = build_vae(preset)
    latent = model.config.latent
    x = _digits(3)
    logits, mean, logvar = model(x)
    assert logits.shape == (3, 1, 28, 28) and mean.shape == logvar.shape == (3, latent)
    assert model.decode(mean).shape == (3, 1, 28, 28)
    assert model.negative_elbo(x).shape == (3,) and model.nll_estimate(x, 4).shape == (3,)
    samples = model.sample(5)
    assert samples.shape == (5, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1
    assert model.reconstruct(x).shape == (3, 1, 28, 28)
    assert model.sample(0).shape == (0, 1, 28, 28)
    assert model.negative_elbo(x[:0]).shape == (0,)


def test_sampling_is_reproducible_and_binary_on_request():
    model = build_vae("small")
    a = model.sample(4, generator=torch.Generator().manual_seed(3), binary=True)
    b = model.sample(4, generator=torch.Generator().manual_seed(3), binary=True)
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}


def test_one_sample_importance_estimate_is_the_one_sample_negative_elbo():
    model = build_vae("small")
    x = _digits(6)
    nll = model.nll_estimate(x, 1, generator=torch.Generator().manual_seed(5))
    # The same z by hand: -(log p(x|z) + log p(z) - log q(z|x)).
    mean, logvar = model.encode(x)
    z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=torch.Generator().manual_seed(5))
    zeros = torch.zeros_like(z)
    log_w = bernoulli_log_likelihood(model.decode(z), x) + gaussian_log_prob(z, zeros, zeros)
    log_w = log_w - gaussian_log_prob(z, mean, logvar)
    torch.testing.assert_close(nll, -log_w, rtol=1e-5, atol=1e-4)


def test_importance_weighting_tightens_the_bound(trained):
    x = _digits(64, seed=2)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        neg_elbo = torch.stack([trained.negative_elbo(x, generator=gen) for _ in range(4)]).mean()
        by_k = {k: trained.nll_estimate(x, k, generator=gen).mean().item() for k in (1, 10, 100)}
    assert abs(by_k[1] - neg_elbo.item()) < 2.0  # same expectation (sampled vs closed-form KL)
    assert neg_elbo.item() > by_k[10] > by_k[100]
    assert by_k[1] - by_k[100] > 1.0


def test_chunked_importance_samples_agree(trained, monkeypatch):
    x = _digits(32, seed=3)
    with torch.no_grad():
        whole = trained.nll_estimate(x, 40, generator=torch.Generator().manual_seed(1)).mean()
        monkeypatch.setattr(vae_module, "_CHUNK_ELEMENTS", 3 * 32 * 784)  # chunks of 3 samples
        chunked = trained.nll_estimate(x, 40, generator=torch.Generator().manual_seed(1)).mean()
    assert abs(whole - chunked) < 1.0


@pytest.mark.parametrize("preset", ["paper", "conv"])
def test_gradients_reach_every_parameter(preset):
    model = build_vae(preset)
    model.negative_elbo(_digits(4)).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("preset", ["small", "conv"])
def test_autocast_bfloat16(preset):
    torch.manual_seed(0)
    model = build_vae(preset)
    x = _digits(8)
    reference = model.negative_elbo(x, generator=torch.Generator().manual_seed(0)).mean()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.negative_elbo(x, generator=torch.Generator().manual_seed(0)).mean()
        nll = model.nll_estimate(x, 3)
    assert loss.dtype == torch.float32 and torch.isfinite(nll).all()
    torch.testing.assert_close(loss, reference, rtol=0.03, atol=0)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_bad_inputs_name_the_argument_and_shapes():
    model = build_vae("small")
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 28, 28\), got \(2, 28, 28\)"):
        model.negative_elbo(torch.zeros(2, 28, 28))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 28, 28\), got \(2, 1, 32, 32\)"):
        model.nll_estimate(torch.zeros(2, 1, 32, 32), 5)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        model.nll_estimate(torch.zeros(2, 1, 28, 28), 0)
    with pytest.raises(ValueError, match=r"z must have shape \(B, 10\), got \(2, 20\)"):
        model.decode(torch.zeros(2, 20))
    with pytest.raises(ValueError, match="n must be >= 0"):
        model.sample(-1)
