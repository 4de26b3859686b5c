"""Visual Dynamics' cross convolutional network (Xue, Wu, Bouman, Freeman 2016): a conditional VAE of next frames.

Given one image I (frame 0) the network samples possible next frames. Four parts::

    image encoder   I resized to each scale s of a pyramid  -> 5x5 convs           -> F_s (B, C, sH, sW)
    motion encoder  (frame 0, frame 1) concatenated         -> stride-2 5x5 convs  -> mean, logvar of z (B, Z, k, k)
    kernel decoder  z                                       -> two k x k convs     -> K_s (B, C, k, k) per scale
    cross conv      F_s (*) K_s per sample (pyvidgen.nn.CrossConv2d, i.e. pyvidgen.ops.cross_conv2d)
    motion decoder  every scale resized to H x W, concatenated -> convs 9x9, 1x1, 1x1 -> difference image D
    next frame      I + D

Training maximises a lower bound on log p(frame 1 | frame 0): the difference image has a Gaussian likelihood of
fixed variance sigma^2 (``config.variance``), so the reconstruction term is the squared error summed over the
image / (2 sigma^2) in nats, plus beta x the closed-form KL of the diagonal Gaussian posterior q(z | frame 0,
frame 1) to the prior N(0, I) (beta annealed up from 1e-5 in training, as the paper does). At test time
z ~ N(0, I) gives diverse futures of one image.

Design decisions (where the paper leaves room):

- Decoded kernels are used as they are, not normalised: a kernel must move content *and* remove it from where it
  was (a difference image is "shape at the new place minus shape at the old"), e.g. delta(v) - delta(0).
- The latent is spatial, (Z, k, k) (the paper's 128 x 5 x 5 = 3200 for ``paper``): the kernel decoder is two
  "same" k x k convolutions, each output channel one kernel.
- Features end in a ReLU, so a channel can be on for one shape and off for another: one z then moves each kind
  of content its own way (circles vertically, squares horizontally, in the shapes data).
- Pyramid levels: box averages when shrinking, bilinear when enlarging; the motion decoder brings every scale
  back to H x W the same way (the 2x scale is averaged down).
- ``deterministic=True`` is the paper's deterministic baseline: the same network with z = 0, so the kernels are
  constants learned through the kernel decoder's biases; no motion encoder, no KL.
- ``decoder_bottleneck`` > 0 factors the motion decoder's 9x9 convolution as a 1x1 projection of the concatenated
  scales followed by a narrower 9x9 (a low-rank 9x9), so that cross convolution dominates the small model's step.
- sigma^2 = 0.5: large enough that z carries the motion rather than residual appearance details (which samples
  from the prior would then get wrong), small enough that knowing the motion pays many times its KL.

Presets (:func:`build_cross_conv_net`):

- ``"paper"``: 128 x 128 RGB frames, scales (0.25, 0.5, 1, 2), per scale three 5x5 convs of 64 channels and a
  5x5 conv to 32 features, z = 128 x 5 x 5, 32 5x5 kernels per scale, motion decoder 9x9 / 1x1 / 1x1 of 128
  channels (our reading of the paper's sizes; PAPERS.md section 5).
- ``"small"``: 32 x 32 :class:`pyvidgen.data.shapes.Shapes` pairs, minutes on a CPU: scales (0.5, 1, 2), per
  scale a 5x5 conv of 16 channels and one to 32 features; 32 9x9 kernels per scale (a 5x5 kernel at scale 1
  moves content 2 pixels at most, and shapes move up to 4); a two-layer motion encoder (16, 32 channels, stride
  2) with a linear head to z = 2 x 9 x 9; a 16-channel bottleneck and decoder. With the reference backend about
  60% of its training step is cross convolution, which the fused op runs several times faster.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyvidgen.models.variational import gaussian_kl, reparameterize
from pyvidgen.nn.cross_conv import CrossConv2d

__all__ = ["PRESETS", "CrossConvConfig", "CrossConvLoss", "CrossConvNet", "CrossConvOutput", "build_cross_conv_net"]

_LINEAR_HEAD_GRID = 4  # the motion grid a linear head reads (see CrossConvConfig.motion_head)


@dataclass(frozen=True)
class CrossConvConfig:
    """Sizes of a :class:`CrossConvNet` (defaults: the ``paper`` preset).

    Attributes:
        image_size: frame side the preset is sized for (the network takes any H x W with sH, sW >= 1).
        channels: image channels.
        scales: pyramid scales of the image encoder (image resized by each).
        encoder_channels: widths of the hidden 5x5 convs of the image encoder, per scale (each followed by
            BatchNorm if ``batch_norm`` and ReLU), before the last 5x5 conv to ``features`` channels.
        features: C, feature maps per scale, i.e. kernels per scale.
        kernel_size: k, the side of the decoded kernels (odd) and of the spatial latent.
        motion_channels: widths of the motion encoder's stride-2 5x5 convs.
        motion_head: what turns the motion features into the mean and log-variance of z: ``"conv"`` (averaged to
            k x k, a 3x3 conv: the paper's fully convolutional encoder) or ``"linear"`` (averaged to 4 x 4, a linear
            layer, so every latent sees the whole image: a shallow encoder's z need not follow where in the image
            the motion was seen, which the kernels cannot use).
        z_channels: Z, channels of the latent z (B, Z, k, k).
        kernel_decoder_channels: width of the kernel decoder's hidden k x k conv.
        decoder_bottleneck: 0 (the paper) or the width of a 1x1 projection of the concatenated scales before the
            motion decoder's first conv.
        decoder_channels: width of the motion decoder's 9x9 and 1x1 hidden convs.
        decoder_kernel: size of the motion decoder's first conv (9).
        batch_norm: BatchNorm after the hidden convs of the image and motion encoders and the motion decoder.
        variance: sigma^2 of the Gaussian likelihood of the difference image.
        deterministic: the paper's deterministic baseline (z = 0, no motion encoder, no KL).
    """

    image_size: int = 128
    channels: int = 3
    scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    encoder_channels: tuple[int, ...] = (64, 64, 64)
    features: int = 32
    kernel_size: int = 5
    motion_channels: tuple[int, ...] = (96, 128, 256, 256)
    motion_head: str = "conv"
    z_channels: int = 128
    kernel_decoder_channels: int = 128
    decoder_bottleneck: int = 0
    decoder_channels: int = 128
    decoder_kernel: int = 9
    batch_norm: bool = True
    variance: float = 0.5
    deterministic: bool = False

    def __post_init__(self) -> None:
        def fail(name: str, requirement: str) -> None:
            raise ValueError(f"CrossConvConfig: {name} must be {requirement}, got {getattr(self, name)!r}")

        def positive(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 1

        sizes = ("image_size", "channels", "features", "kernel_size", "z_channels", "kernel_decoder_channels")
        for name in (*sizes, "decoder_channels", "decoder_kernel"):
            if not positive(getattr(self, name)):
                fail(name, "a positive int")
        for name in ("kernel_size", "decoder_kernel"):
            if getattr(self, name) % 2 == 0:
                fail(name, "odd")
        if not (self.decoder_bottleneck == 0 or positive(self.decoder_bottleneck)):
            fail("decoder_bottleneck", "an int >= 0")
        for name in ("encoder_channels", "motion_channels"):
            if not isinstance(getattr(self, name), tuple) or not all(positive(c) for c in getattr(self, name)):
                fail(name, "a tuple of positive ints")
        if (
            not isinstance(self.scales, tuple)
            or not self.scales
            or not all(isinstance(s, int | float) and s > 0 for s in self.scales)
        ):
            fail("scales", "a non-empty tuple of positive numbers")
        if not isinstance(self.variance, int | float) or not self.variance > 0:
            fail("variance", "> 0")
        if self.motion_head not in ("conv", "linear"):
            fail("motion_head", "'conv' or 'linear'")
        for name in ("batch_norm", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "a bool")


PRESETS: dict[str, CrossConvConfig] = {
    "paper": CrossConvConfig(),
    # Sized so that a training step is mostly cross convolution (see the module docstring).
    "small": CrossConvConfig(
        image_size=32,
        scales=(0.5, 1.0, 2.0),
        encoder_channels=(16,),
        kernel_size=9,
        motion_channels=(16, 32),
        motion_head="linear",
        z_channels=2,
        kernel_decoder_channels=32,
        decoder_bottleneck=16,
        decoder_channels=16,
    ),
}


def build_cross_conv_net(preset: str = "small", **overrides: object) -> CrossConvNet:
    """A :class:`CrossConvNet` of a preset (``"small"``, ``"paper"``), fields overridden by keyword.

    Raises:
        ValueError: an unknown preset or field, or a bad value.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    fields = asdict(PRESETS[preset])
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ValueError(f"build_cross_conv_net: unknown CrossConvConfig fields {sorted(unknown)}")
    return CrossConvNet(CrossConvConfig(**{**fields, **overrides}))


class CrossConvOutput(NamedTuple):
    """What :meth:`CrossConvNet.forward` returns.

    Attributes:
        difference: (B, C, H, W) predicted difference image (next frame = frame 0 + difference).
        z: (B, Z, k, k) the latent the prediction was decoded from (zeros for the deterministic model).
        mean: (B, Z, k, k) posterior mean, None for the deterministic model.
        logvar: (B, Z, k, k) posterior log-variance, None for the deterministic model.
    """

    difference: Tensor
    z: Tensor
    mean: Tensor | None
    logvar: Tensor | None


class CrossConvLoss(NamedTuple):
    """What :meth:`CrossConvNet.loss` returns; per-image terms in nats.

    Attributes:
        loss: () mean over the batch of ``reconstruction + kl_weight * kl`` (what training minimises).
        reconstruction: (B,) sum of squared errors of the difference image / (2 sigma^2).
        kl: (B,) KL(q(z | frames) || N(0, I)) (zeros for the deterministic model).
        negative_elbo: (B,) ``reconstruction + D/2 log(2 pi sigma^2) + kl``, D = C H W: an upper bound on
            -log p(frame 1 | frame 0) in expectation (a density of continuous pixels, so it may be negative).
    """

    loss: Tensor
    reconstruction: Tensor
    kl: Tensor
    negative_elbo: Tensor


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``x`` (B, C, h, w) at ``size``: box average when shrinking (exact block means for integer factors),
    bilinear when enlarging."""
    height, width = x.shape[-2:]
    if (height, width) == tuple(size):
        return x
    if size[0] <= height and size[1] <= width:
        if height % size[0] == 0 and width % size[1] == 0:
            # The same block means as adaptive pooling, several times faster on CPU (forward and backward).
            return F.avg_pool2d(x, (height // size[0], width // size[1]))
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _conv_block(c_in: int, c_out: int, kernel: int, batch_norm: bool, stride: int = 1) -> list[nn.Module]:
    """conv, optional BatchNorm (then the conv has no bias), ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU())
    return layers


class CrossConvNet(nn.Module):
    """The cross convolutional network: image encoder, motion encoder, kernel decoder, cross conv, motion decoder.

    Args:
        config: sizes (see :class:`CrossConvConfig` and :data:`PRESETS`).

    Attributes:
        image_encoders: one ``nn.Sequential`` per scale, (B, C_img, sH, sW) -> (B, features, sH, sW).
        motion_encoder: (B, 2 C_img, H, W) -> (B, 2 Z, k, k), mean and log-variance; None when deterministic.
        kernel_decoder: (B, Z, k, k) -> (B, scales * features, k, k).
        cross_conv: :class:`pyvidgen.nn.CrossConv2d`.
        motion_decoder: (B, scales * features, H, W) -> (B, C_img, H, W), the difference image.

    Shape:
        - frame0, frame1: (B, C_img, H, W) float images in [0, 1] (any strides, e.g. channels_last or slices)
        - z: (B, Z, k, k), :attr:`latent_shape` = (Z, k, k)

    Example:
        >>> net = build_cross_conv_net("small")
        >>> frames = torch.rand(4, 2, 3, 32, 32)
        >>> net.loss(frames[:, 0], frames[:, 1]).loss.shape
        torch.Size([])
        >>> net.sample(frames[:, 0]).shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(self, config: CrossConvConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PRESETS["paper"]
        c_img, feats, k, bn = config.channels, config.features, config.kernel_size, config.batch_norm
        self.latent_shape = (config.z_channels, k, k)

        def image_encoder() -> nn.Sequential:
            widths = (c_img, *config.encoder_channels)
            layers = [m for a, b in zip(widths[:-1], widths[1:], strict=True) for m in _conv_block(a, b, 5, bn)]
            return nn.Sequential(*layers, nn.Conv2d(widths[-1], feats, 5, padding=2), nn.ReLU())

        self.image_encoders = nn.ModuleList(image_encoder() for _ in config.scales)
        self.motion_encoder: nn.Sequential | None = None
        if not config.deterministic:
            widths = (2 * c_img, *config.motion_channels)
            layers = [m for a, b in zip(widths[:-1], widths[1:], strict=True) for m in _conv_block(a, b, 5, bn, 2)]
            # Average pooling to a fixed grid makes the latent independent of the frame size: to the latent's k x k
            # for the conv head; to a coarse 4 x 4 for the linear head, which only needs where-free motion evidence.
            if config.motion_head == "conv":
                pool, head = k, [nn.Conv2d(widths[-1], 2 * config.z_channels, 3, padding=1)]
            else:
                pool = _LINEAR_HEAD_GRID
                head = [
                    nn.Flatten(),
                    nn.Linear(widths[-1] * pool * pool, 2 * config.z_channels * k * k),
                    nn.Unflatten(1, (2 * config.z_channels, k, k)),
                ]
            self.motion_encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pool), *head)
        self.kernel_decoder = nn.Sequential(
            nn.Conv2d(config.z_channels, config.kernel_decoder_channels, k, padding=k // 2),
            nn.ReLU(),
            nn.Conv2d(config.kernel_decoder_channels, len(config.scales) * feats, k, padding=k // 2),
        )
        self.cross_conv = CrossConv2d()
        stacked = len(config.scales) * feats
        bottleneck: list[nn.Module] = []
        if config.decoder_bottleneck:
            bottleneck.append(nn.Conv2d(stacked, config.decoder_bottleneck, 1))
            stacked = config.decoder_bottleneck
        width = config.decoder_channels
        self.motion_decoder = nn.Sequential(
            *bottleneck,
            *_conv_block(stacked, width, config.decoder_kernel, bn),
            *_conv_block(width, width, 1, bn),
            nn.Conv2d(width, c_img, 1),
        )

    # ------------------------------------------------------------------------------------------ parts
    def _check(self, x: Tensor, name: str, method: str) -> None:
        c = self.config.channels
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != c:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"CrossConvNet.{method}: {name} must be (B, {c}, H, W), got {got}")
        if not x.is_floating_point():
            raise ValueError(f"CrossConvNet.{method}: {name} must be a floating-point tensor, got {x.dtype}")

    def _check_pair(self, frame0: Tensor, frame1: Tensor, method: str) -> None:
        self._check(frame0, "frame0", method)
        self._check(frame1, "frame1", method)
        if frame0.shape != frame1.shape:
            raise ValueError(
                f"CrossConvNet.{method}: frame0 {tuple(frame0.shape)} and frame1 {tuple(frame1.shape)} differ"
            )

    def _check_z(self, z: Tensor, batch: int, method: str) -> None:
        expected = (batch, *self.latent_shape)
        if not isinstance(z, Tensor) or tuple(z.shape) != expected:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"CrossConvNet.{method}: z must be {expected}, got {got}")

    def encode_image(self, frame0: Tensor) -> list[Tensor]:
        """Feature maps of each pyramid scale: a list of (B, features, round(s H), round(s W))."""
        height, width = frame0.shape[-2:]
        features = []
        for scale, encoder in zip(self.config.scales, self.image_encoders, strict=True):
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            features.append(encoder(_resize(frame0, size)))
        return features

    def encode_motion(self, frame0: Tensor, frame1: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior q(z | frame 0, frame 1): (mean, logvar), each (B, Z, k, k)."""
        if self.motion_encoder is None:
            raise RuntimeError("CrossConvNet.encode_motion: the deterministic model has no motion encoder")
        self._check_pair(frame0, frame1, "encode_motion")
        return self.motion_encoder(torch.cat((frame0, frame1), dim=1)).chunk(2, dim=1)

    def decode_kernels(self, z: Tensor) -> list[Tensor]:
        """The cross convolution's kernels, one (B, features, k, k) tensor per scale, used unnormalised."""
        kernels = self.kernel_decoder(z)
        return list(kernels.unflatten(1, (len(self.config.scales), self.config.features)).unbind(1))

    def predict_difference(self, frame0: Tensor, z: Tensor) -> Tensor:
        """The difference image decoded from ``z`` for ``frame0``.

        Args:
            frame0: (B, C, H, W).
            z: (B, Z, k, k).

        Returns:
            (B, C, H, W): frame 1 is predicted as ``frame0 + difference``.
        """
        self._check(frame0, "frame0", "predict_difference")
        self._check_z(z, frame0.shape[0], "predict_difference")
        size = tuple(frame0.shape[-2:])
        moved = self.cross_conv(self.encode_image(frame0), self.decode_kernels(z))
        return self.motion_decoder(torch.cat([_resize(m, size) for m in moved], dim=1))

    def _zeros(self, frame0: Tensor) -> Tensor:
        return frame0.new_zeros(frame0.shape[0], *self.latent_shape)

    # ------------------------------------------------------------------------------------------ the model
    def forward(
        self,
        frame0: Tensor,
        frame1: Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> CrossConvOutput:
        """Encode the motion from frame 0 to frame 1, draw z from the posterior, decode the difference image.

        Args:
            frame0: (B, C, H, W) the input images.
            frame1: (B, C, H, W) the true next frames (unused, and may be None, for the deterministic model).
            generator: draws the reparameterisation noise (None: the global generator).
            noise: (B, Z, k, k) the standard normal noise itself instead of a draw (what a compiled step or a
                test passes to reproduce a pass exactly).

        Returns:
            :class:`CrossConvOutput`.
        """
        self._check(frame0, "frame0", "forward")
        if self.motion_encoder is None:
            z = self._zeros(frame0)
            return CrossConvOutput(self.predict_difference(frame0, z), z, None, None)
        if frame1 is None:
            raise ValueError("CrossConvNet.forward: frame1 is needed to encode the motion (or use sample())")
        mean, logvar = self.encode_motion(frame0, frame1)
        if noise is None:
            z = reparameterize(mean, logvar, generator=generator)
        else:
            self._check_z(noise, frame0.shape[0], "forward")
            z = mean + torch.exp(0.5 * logvar) * noise
        return CrossConvOutput(self.predict_difference(frame0, z), z, mean, logvar)

    def loss_from(
        self, frame0: Tensor, frame1: Tensor, output: CrossConvOutput, kl_weight: float = 1.0
    ) -> CrossConvLoss:
        """The loss terms of a :meth:`forward` pass (see :class:`CrossConvLoss`), in float32 at least."""
        target = frame1 - frame0
        error = output.difference.to(torch.promote_types(target.dtype, torch.float32)) - target
        reconstruction = error.square().flatten(1).sum(dim=1) / (2.0 * self.config.variance)
        if output.mean is None:
            kl = torch.zeros_like(reconstruction)
        else:
            kl = gaussian_kl(output.mean, output.logvar).to(reconstruction.dtype)
        constant = 0.5 * frame0[0].numel() * math.log(2.0 * math.pi * self.config.variance)
        loss = (reconstruction + kl_weight * kl).mean() if output.mean is not None else reconstruction.mean()
        return CrossConvLoss(loss, reconstruction, kl, reconstruction + constant + kl)

    def loss(
        self,
        frame0: Tensor,
        frame1: Tensor,
        kl_weight: float = 1.0,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> CrossConvLoss:
        """Reconstruction of the difference image + ``kl_weight`` x KL, with one posterior sample per pair.

        Args:
            frame0: (B, C, H, W) input images.
            frame1: (B, C, H, W) true next frames.
            kl_weight: beta, the weight of the KL in ``loss`` (1 for the ELBO).
            generator: draws the reparameterisation noise.
            noise: (B, Z, k, k) the noise itself (see :meth:`forward`).

        Returns:
            :class:`CrossConvLoss`.
        """
        self._check_pair(frame0, frame1, "loss")
        return self.loss_from(frame0, frame1, self(frame0, frame1, generator, noise), kl_weight)

    @torch.no_grad()
    def sample(self, frame0: Tensor, z: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """A possible next frame of each image: z ~ N(0, I) (z = 0 for the deterministic model), decoded.

        Args:
            frame0: (B, C, H, W) images.
            z: (B, Z, k, k) latents to decode instead of drawing them (ignored by the deterministic model).
            generator: draws z.

        Returns:
            (B, C, H, W) ``frame0 + difference`` (not clamped to [0, 1]).
        """
        self._check(frame0, "frame0", "sample")
        if self.config.deterministic:
            z = self._zeros(frame0)
        elif z is None:
            z = torch.randn(
                (frame0.shape[0], *self.latent_shape), generator=generator, device=frame0.device, dtype=frame0.dtype
            )
        return frame0 + self.predict_difference(frame0, z.to(frame0.dtype)).to(frame0.dtype)
