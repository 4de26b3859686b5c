"""The variational autoencoder of Kingma & Welling 2013 ("Auto-Encoding Variational Bayes").

Encoder q(z | x) = N(mean(x), diag(exp(logvar(x)))), prior p(z) = N(0, I), Bernoulli decoder
p(x | z) with logits from a network of z; trained by maximising the ELBO
E_q[log p(x | z)] - KL(q(z | x) || p(z)) with one reparameterised sample z = mean + sigma * eps per image
and the KL in closed form (the paper's "SGVB estimator B").

Presets (``build_vae``):

- ``"paper"``: the paper's MNIST model: one tanh hidden layer of 500 units in the encoder and in the
  decoder, Bernoulli decoder, 20 latent dimensions. The paper trains latent sizes 2 to 200 (its
  figure 2: 3, 5, 10, 20, 200); the bound improves little beyond 20 while larger latents cost more
  evaluation samples to pin down, so 20 is the usual pick. The paper optimises with Adagrad
  (minibatch 100); the training task uses Adam by default (see :mod:`pyvidgen.training.vae`).
- ``"conv"``: a convolutional variant: two stride-2 4x4 convolutions (32, 64 channels, ReLU) down to
  7x7, a 256-unit layer, and the mirror image with transposed convolutions; 20 latents.
- ``"small"``: a 200-unit tanh MLP with 10 latents, for quick CPU runs and tests.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pyvidgen.models.variational import (
    bernoulli_log_likelihood,
    gaussian_kl,
    gaussian_log_prob,
    importance_weighted_nll,
    reparameterize,
)

__all__ = ["PRESETS", "VAE", "VAEConfig", "build_vae"]

# Bound on the decoder logits held at once by nll_estimate (elements), so k = 5000 fits in memory.
_CHUNK_ELEMENTS = 1 << 23


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of a :class:`VAE`.

    Attributes:
        architecture: ``"mlp"`` (fully connected, as the paper) or ``"conv"``.
        image_size: side H = W of the images (a multiple of 4 for ``"conv"``).
        channels: image channels C (1 for binarised digits).
        latent: latent dimensions.
        hidden: units of the hidden layer(s) (the MLP's one layer; the conv net's fully connected layer).
        hidden_layers: hidden layers of the MLP encoder and of the decoder (the paper: 1).
        activation: ``"tanh"`` (the paper) or ``"relu"`` for the MLP; the conv net uses ReLU.
        conv_channels: channels of the two stride-2 convolutions of ``"conv"``.
    """

    architecture: str = "mlp"
    image_size: int = 28
    channels: int = 1
    latent: int = 20
    hidden: int = 500
    hidden_layers: int = 1
    activation: str = "tanh"
    conv_channels: tuple[int, int] = (32, 64)

    def __post_init__(self) -> None:
        if self.architecture not in ("mlp", "conv"):
            raise ValueError(f"architecture must be 'mlp' or 'conv', got {self.architecture!r}")
        if self.activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu', got {self.activation!r}")
        for name in ("image_size", "channels", "latent", "hidden", "hidden_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.architecture == "conv" and self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 for the conv architecture, got {self.image_size}")


PRESETS: dict[str, VAEConfig] = {
    "paper": VAEConfig(architecture="mlp", latent=20, hidden=500, activation="tanh"),
    "conv": VAEConfig(architecture="conv", latent=20, hidden=256, conv_channels=(32, 64)),
    "small": VAEConfig(architecture="mlp", latent=10, hidden=200, activation="tanh"),
}


def build_vae(preset: str = "paper", **overrides) -> VAE:
    """A :class:`VAE` of a preset, with fields of :class:`VAEConfig` overridden.

    Args:
        preset: ``"paper"``, ``"conv"`` or ``"small"`` (see the module docstring).
        **overrides: :class:`VAEConfig` fields, e.g. ``latent=50``.

    Raises:
        ValueError: unknown preset or a bad field value.
        TypeError: an unknown field.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown VAE preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return VAE(dataclasses.replace(PRESETS[preset], **overrides))


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh() if activation == "tanh" else nn.ReLU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Kingma & Welling's variational autoencoder with a Bernoulli decoder.

    Args:
        config: the architecture (see :class:`VAEConfig` and ``PRESETS``).

    Shapes: images x are (B, C, H, W) with values in [0, 1] (binary for a likelihood); latents z are
    (B, latent). All likelihood figures are in nats per image.

    Example:
        >>> vae = build_vae("paper")
        >>> logits, mean, logvar = vae(torch.zeros(4, 1, 28, 28))
        >>> logits.shape, mean.shape
        (torch.Size([4, 1, 28, 28]), torch.Size([4, 20]))
    """

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PRESETS["paper"]
        C, S, L = config.channels, config.image_size, config.latent
        self.image_shape = (C, S, S)
        if config.architecture == "mlp":
            hidden = [config.hidden] * config.hidden_layers
            # One head emits mean and log-variance together; split in encode().
            self.encoder = nn.Sequential(
                nn.Flatten(), _mlp([C * S * S, *hidden], config.activation), self._act(config.activation)
            )
            self.head = nn.Linear(config.hidden, 2 * L)
            self.decoder = nn.Sequential(
                _mlp([L, *hidden, C * S * S], config.activation), nn.Unflatten(1, self.image_shape)
            )
        else:
            c1, c2 = config.conv_channels
            small = S // 4
            self.encoder = nn.Sequential(
                nn.Conv2d(C, c1, 4, stride=2, padding=1),  # S -> S/2
                nn.ReLU(),
                nn.Conv2d(c1, c2, 4, stride=2, padding=1),  # S/2 -> S/4
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(c2 * small * small, config.hidden),
                nn.ReLU(),
            )
            self.head = nn.Linear(config.hidden, 2 * L)
            self.decoder = nn.Sequential(
                nn.Linear(L, config.hidden),
                nn.ReLU(),
                nn.Linear(config.hidden, c2 * small * small),
                nn.ReLU(),
                nn.Unflatten(1, (c2, small, small)),
                nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),  # S/4 -> S/2
                nn.ReLU(),
                nn.ConvTranspose2d(c1, C, 4, stride=2, padding=1),  # S/2 -> S
            )

    @staticmethod
    def _act(name: str) -> nn.Module:
        return nn.Tanh() if name == "tanh" else nn.ReLU()

    # -- checks --
    def _check_images(self, x: Tensor, name: str = "x") -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            expected = "(B, {}, {}, {})".format(*self.image_shape)
            raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor with values in [0, 1], got {x.dtype}")

    def _check_latents(self, z: Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.config.latent:
            raise ValueError(f"z must have shape (B, {self.config.latent}), got {tuple(z.shape)}")

    # -- the model --
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Parameters of q(z | x).

        Args:
            x: (B, C, H, W) images in [0, 1].

        Returns:
            (mean, logvar), each (B, latent).
        """
        self._check_images(x)
        return self.head(self.encoder(x)).chunk(2, dim=1)

    def decode(self, z: Tensor) -> Tensor:
        """Logits of p(x | z).

        Args:
            z: (B, latent) latents.

        Returns:
            (B, C, H, W) Bernoulli logits.
        """
        self._check_latents(z)
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Encode, draw one reparameterised z, decode.

        Args:
            x: (B, C, H, W) images in [0, 1].
            generator: draws the noise of z (None: the global generator).

        Returns:
            (logits (B, C, H, W) of p(x | z), mean (B, latent), logvar (B, latent) of q(z | x)).
        """
        mean, logvar = self.encode(x)
        z = reparameterize(mean, logvar, generator=generator)
        return self.decoder(z), mean, logvar

    @staticmethod
    def negative_elbo_from(x: Tensor, logits: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
        """-ELBO per image from ``forward``'s outputs: -log p(x | z) + KL(q(z | x) || p(z)), (B,) nats."""
        return -bernoulli_log_likelihood(logits, x) + gaussian_kl(mean, logvar)

    def negative_elbo(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The negative ELBO of each image with one sample of z (the training loss).

        Args:
            x: (B, C, H, W) images in [0, 1] (binary for a likelihood).
            generator: draws the noise of z.

        Returns:
            (B,) float32 negative ELBO in nats per image; its expectation bounds -log p(x) from above.
        """
        logits, mean, logvar = self(x, generator=generator)
        return self.negative_elbo_from(x, logits, mean, logvar)

    def nll_estimate(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """Importance-weighted estimate of -log p(x) with k samples of q(z | x) (Burda et al. 2015).

        The k samples are decoded in chunks, so memory stays bounded for large k.

        Args:
            x: (B, C, H, W) binary images.
            k: importance samples per image (>= 1); k = 1 is a one-sample negative ELBO with the KL
                estimated by sampling.
            generator: draws the samples.

        Returns:
            (B,) float32 estimates in nats per image; on average they decrease towards -log p(x) as k grows.

        Raises:
            ValueError: bad ``x`` shape or ``k`` < 1.
        """
        try:
            k = operator.index(k)
        except TypeError:
            raise ValueError(f"k must be a positive int, got {k!r}") from None
        if k < 1:
            raise ValueError(f"k must be a positive int, got {k}")
        mean, logvar = self.encode(x)
        B = x.shape[0]
        pixels = math.prod(self.image_shape)
        chunk = max(1, min(k, _CHUNK_ELEMENTS // max(1, B * pixels)))
        zeros = torch.zeros_like(mean)
        log_weights = []
        for start in range(0, k, chunk):
            c = min(chunk, k - start)
            # (c, B, latent) -> (c * B, latent): sample s of image b is row s * B + b.
            mean_c, logvar_c = mean.repeat(c, 1), logvar.repeat(c, 1)
            z = reparameterize(mean_c, logvar_c, generator=generator)
            logits = self.decoder(z)
            log_px_z = bernoulli_log_likelihood(logits, x.repeat(c, 1, 1, 1))
            log_pz = gaussian_log_prob(z, zeros.repeat(c, 1), zeros.repeat(c, 1))
            log_qz = gaussian_log_prob(z, mean_c, logvar_c)
            log_weights.append((log_px_z + log_pz - log_qz).view(c, B))
        return importance_weighted_nll(torch.cat(log_weights))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, binary: bool = False) -> Tensor:
        """Images from the model: z ~ N(0, I), then the decoder.

        Args:
            n: number of images (>= 0).
            generator: draws z (and the pixels when ``binary``).
            binary: draw each pixel from its Bernoulli; by default the Bernoulli means (probabilities)
                are returned, which show the model's digits more clearly.

        Returns:
            (n, C, H, W) float32 in [0, 1] (in {0, 1} when ``binary``).
        """
        n = operator.index(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        param = self.head.weight
        z = torch.randn(n, self.config.latent, generator=generator, device=param.device, dtype=param.dtype)
        probs = torch.sigmoid(self.decoder(z).float())
        if binary:
            return (torch.rand(probs.shape, generator=generator, device=probs.device) < probs).float()
        return probs

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Bernoulli means of p(x | z) at the posterior mean z = mean(x).

        Args:
            x: (B, C, H, W) images.

        Returns:
            (B, C, H, W) float32 in [0, 1].
        """
        mean, _ = self.encode(x)
        return torch.sigmoid(self.decoder(mean).float())
