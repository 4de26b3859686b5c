"""Pieces of variational inference shared by the VAE (Kingma & Welling 2013) and DRAW (Gregor et al. 2015).

Conventions: a diagonal Gaussian is given by its ``mean`` and ``logvar`` (log of the variance), tensors
of the same shape (B, ...); every per-example quantity is summed over all non-batch dimensions and
returned as a (B,) tensor in nats. Computations run in float32 at least (under autocast too), since
they are sums of hundreds of terms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bernoulli_log_likelihood",
    "gaussian_kl",
    "gaussian_log_prob",
    "importance_weighted_nll",
    "reparameterize",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _float(t: Tensor) -> Tensor:
    """``t`` in float32 at least (float64 stays float64)."""
    return t if t.dtype == torch.float64 else t.float()


def _check_pair(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim < 1:
        raise ValueError(f"{name_a} must have a batch dimension (B, ...), got a 0-d tensor")


def _sum_per_example(t: Tensor) -> Tensor:
    return t.flatten(1).sum(dim=1) if t.ndim > 1 else t


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example, in closed form.

    KL = 1/2 * sum(mean^2 + exp(logvar) - 1 - logvar) (Kingma & Welling 2013, appendix B).

    Args:
        mean: (B, ...) means of the diagonal Gaussian.
        logvar: (B, ...) log-variances, the shape of ``mean``.

    Returns:
        (B,) float32 (float64 for float64 inputs) KL divergences in nats, summed over the non-batch dims.

    Raises:
        ValueError: shapes differ, or no batch dimension.
    """
    _check_pair(mean, logvar, "mean", "logvar")
    mean, logvar = _float(mean), _float(logvar)
    return 0.5 * _sum_per_example(mean.square() + logvar.exp() - 1.0 - logvar)


def reparameterize(mean: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A sample z = mean + exp(logvar / 2) * eps, eps ~ N(0, I): differentiable in mean and logvar.

    Args:
        mean: (B, ...) means.
        logvar: (B, ...) log-variances, the shape of ``mean``.
        generator: draws eps (on the tensors' device); None uses the global generator.

    Returns:
        (B, ...) sample, the dtype of ``mean``.

    Raises:
        ValueError: shapes differ.
    """
    _check_pair(mean, logvar, "mean", "logvar")
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps


def gaussian_log_prob(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mean, exp(logvar)) of a diagonal Gaussian, summed over the non-batch dims.

    Use ``mean = logvar = zeros`` for the standard normal prior.

    Args:
        z: (B, ...) points.
        mean: (B, ...) means, the shape of ``z``.
        logvar: (B, ...) log-variances, the shape of ``z``.

    Returns:
        (B,) float32 (float64 for float64 inputs) log densities in nats.

    Raises:
        ValueError: shapes differ.
    """
    _check_pair(z, mean, "z", "mean")
    _check_pair(z, logvar, "z", "logvar")
    z, mean, logvar = _float(z), _float(mean), _float(logvar)
    return -0.5 * _sum_per_example(_LOG_2PI + logvar + (z - mean).square() * torch.exp(-logvar))


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x | logits) of independent Bernoulli pixels, summed over the non-batch dims.

    Computed as ``-binary_cross_entropy_with_logits`` (stable for large logits). ``x`` may hold grey
    levels in [0, 1] as well as 0/1 (then it is the usual cross-entropy, not a likelihood).

    Args:
        logits: (B, ...) logits of p(pixel = 1).
        x: (B, ...) targets in [0, 1], the shape of ``logits``.

    Returns:
        (B,) float32 (float64 for float64 inputs) log-likelihoods in nats (<= 0 for binary x).

    Raises:
        ValueError: shapes differ.
    """
    _check_pair(logits, x, "logits", "x")
    logits = _float(logits)
    nll = F.binary_cross_entropy_with_logits(logits, x.to(logits.dtype), reduction="none")
    return -_sum_per_example(nll)


def importance_weighted_nll(log_weights: Tensor) -> Tensor:
    """The importance-weighted estimate of -log p(x) (Burda et al. 2015's IWAE bound) from k samples.

    -log p(x) ~ -(logsumexp_k log w_k - log k), with log w_k = log p(x, z_k) - log q(z_k | x) and
    z_k ~ q(z | x). Its expectation is an upper bound on -log p(x) that tightens as k grows; k = 1 is
    the negative ELBO of one sample.

    Args:
        log_weights: (k, B) log importance weights, k >= 1.

    Returns:
        (B,) float32 (float64 for float64 inputs) estimates in nats.

    Raises:
        ValueError: ``log_weights`` is not 2-D or k = 0.
    """
    if log_weights.ndim != 2 or log_weights.shape[0] < 1:
        raise ValueError(f"log_weights must be (k, B) with k >= 1, got shape {tuple(log_weights.shape)}")
    log_weights = _float(log_weights)
    return -(torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0]))
