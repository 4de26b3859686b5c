"""Tests of the shared variational helpers against direct formulas and Monte Carlo estimates."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from pyvidgen.models.variational import (
    bernoulli_log_likelihood,
    gaussian_kl,
    gaussian_log_prob,
    importance_weighted_nll,
    reparameterize,
)


def test_gaussian_kl_matches_the_closed_form_and_torch_distributions(rng):
    mean = torch.randn(5, 3, 4, generator=rng, dtype=torch.float64)
    logvar = torch.randn(5, 3, 4, generator=rng, dtype=torch.float64)
    kl = gaussian_kl(mean, logvar)
    assert kl.shape == (5,) and kl.dtype == torch.float64
    direct = -0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(dim=(1, 2))
    torch.testing.assert_close(kl, direct)
    q, p = Normal(mean, (0.5 * logvar).exp()), Normal(torch.zeros_like(mean), torch.ones_like(mean))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(dim=(1, 2)))
    assert torch.equal(gaussian_kl(torch.zeros(2, 7), torch.zeros(2, 7)), torch.zeros(2))


def test_gaussian_kl_matches_a_monte_carlo_estimate(rng):
    mean = torch.randn(3, 4, generator=rng, dtype=torch.float64)
    logvar = 0.5 * torch.randn(3, 4, generator=rng, dtype=torch.float64)
    samples = 40_000
    z = reparameterize(mean.repeat(samples, 1), logvar.repeat(samples, 1), generator=rng)
    log_ratio = gaussian_log_prob(z, mean.repeat(samples, 1), logvar.repeat(samples, 1)) - gaussian_log_prob(
        z, torch.zeros_like(z), torch.zeros_like(z)
    )
    log_ratio = log_ratio.view(samples, 3)
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(samples)
    assert ((estimate - gaussian_kl(mean, logvar)).abs() < 5 * stderr + 1e-9).all()


def test_gaussian_log_prob_matches_torch_distributions(rng):
    z, mean, logvar = (torch.randn(6, 10, generator=rng, dtype=torch.float64) for _ in range(3))
    expected = Normal(mean, (0.5 * logvar).exp()).log_prob(z).sum(dim=1)
    torch.testing.assert_close(gaussian_log_prob(z, mean, logvar), expected)


def test_bernoulli_log_likelihood_matches_the_formula(rng):
    logits = 4 * torch.randn(4, 1, 5, 5, generator=rng, dtype=torch.float64)
    x = (torch.rand(4, 1, 5, 5, generator=rng, dtype=torch.float64) < 0.5).double()
    p = torch.sigmoid(logits)
    direct = (x * p.log() + (1 - x) * (1 - p).log()).sum(dim=(1, 2, 3))
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x), direct)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x), Bernoulli(logits=logits).log_prob(x).sum((1, 2, 3)))
    # Stable where sigmoid saturates: a confident right answer costs ~0, a confident wrong one ~|logit|.
    big = torch.tensor([[200.0, -200.0]])
    assert bernoulli_log_likelihood(big, torch.tensor([[1.0, 0.0]])).abs().item() < 1e-6
    torch.testing.assert_close(bernoulli_log_likelihood(big, torch.tensor([[0.0, 0.0]])), torch.tensor([-200.0]))


def test_reparameterize_draws_from_the_gaussian_and_passes_gradients(rng):
    mean = torch.tensor([[1.0, -2.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, math.log(4.0)]], requires_grad=True)
    z = reparameterize(mean.expand(50_000, 2), logvar.expand(50_000, 2), generator=rng)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 2.0]), atol=0.05, rtol=0)
    z.sum().backward()
    assert mean.grad is not None and logvar.grad is not None and torch.isfinite(logvar.grad).all()
    a = reparameterize(torch.zeros(2, 3), torch.zeros(2, 3), generator=torch.Generator().manual_seed(1))
    b = reparameterize(torch.zeros(2, 3), torch.zeros(2, 3), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_importance_weighted_nll(rng):
    log_w = 3 * torch.randn(7, 4, generator=rng, dtype=torch.float64) - 100
    expected = -(torch.logsumexp(log_w, 0) - math.log(7))
    torch.testing.assert_close(importance_weighted_nll(log_w), expected)
    # One sample: the negative of its log weight (a one-sample -ELBO); equal weights: any k gives the same.
    torch.testing.assert_close(importance_weighted_nll(log_w[:1]), -log_w[0])
    torch.testing.assert_close(importance_weighted_nll(log_w[:1].expand(50, 4)), -log_w[0])
    # Jensen: never above the average of the k one-sample estimates.
    assert (importance_weighted_nll(log_w) <= -log_w.mean(0) + 1e-12).all()
    # Huge magnitudes do not overflow.
    assert torch.isfinite(importance_weighted_nll(torch.full((3, 2), -1e4))).all()


def test_half_precision_inputs_sum_in_float32():
    mean = torch.randn(2, 8).bfloat16()
    assert gaussian_kl(mean, mean).dtype == torch.float32
    assert bernoulli_log_likelihood(mean, torch.ones(2, 8)).dtype == torch.float32
    assert importance_weighted_nll(mean).dtype == torch.float32


def test_bad_shapes_name_the_arguments():
    with pytest.raises(ValueError, match=r"mean and logvar must have the same shape, got \(2, 3\) and \(2, 4\)"):
        gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="z and logvar"):
        gaussian_log_prob(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="logits and x"):
        bernoulli_log_likelihood(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="batch dimension"):
        gaussian_kl(torch.tensor(0.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"\(k, B\) with k >= 1, got shape \(0, 3\)"):
        importance_weighted_nll(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"got shape \(3,\)"):
        importance_weighted_nll(torch.zeros(3))
