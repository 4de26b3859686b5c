"""Video Pixel Networks (Kalchbrenner et al. 2016): a likelihood model of video, pixel by pixel.

``p(x) = prod_t prod_i prod_j prod_c p(x[t, c, i, j] | x[<t], x[t, <(i, j)], x[t, <c, i, j])``. Each
context frame goes through a resolution-preserving encoder (residual multiplicative blocks, dilated),
a ConvLSTM runs over the encoded frames, and a PixelCNN decoder of masked residual multiplicative blocks
models frame t given the LSTM's state after frames < t and the already generated sub-pixels of frame t.
The output is a categorical distribution over ``levels`` intensities per sub-pixel (grey or RGB, the
colours generated in order: R, then G given R, then B) or a Bernoulli per pixel for binary frames.
With ``spatial_dependencies=False`` the decoder never sees frame t (the paper's baseline that predicts
every pixel from the past frames alone); everything else is the same network.

Training is teacher-forced: one forward pass gives the distribution of every frame 1..T-1. Sampling
(:mod:`pyvidgen.models.vpn_sampling`) is autoregressive, sub-pixel by sub-pixel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pyvidgen.nn import ConvLSTM, MaskedConv2d, ResidualMultiplicativeBlock

OUTPUTS = ("categorical", "bernoulli")


@dataclass(frozen=True)
class VPNConfig:
    """Sizes of a :class:`VideoPixelNetwork` (defaults: the paper's Moving MNIST network).

    Attributes:
        channels: image channels C (1 grey, 3 RGB; RGB is generated colour by colour).
        output: "categorical" (``levels`` intensities per sub-pixel) or "bernoulli" (binary frames).
        levels: intensity levels of the categorical output (256 in the paper).
        hidden: channels 2c of every residual multiplicative block (c = hidden / 2).
        encoder_dilations: one encoder block per entry, with that dilation.
        lstm_channels: ConvLSTM channels.
        lstm_kernel: ConvLSTM kernel size.
        decoder_blocks: masked residual multiplicative blocks of the decoder.
        kernel_size: kernel of the blocks' multiplicative units.
        first_kernel: kernel of the decoder's first (mask A) convolution.
        spatial_dependencies: False for the paper's baseline: the decoder does not see frame t.
    """

    channels: int = 1
    output: str = "categorical"
    levels: int = 256
    hidden: int = 256
    encoder_dilations: tuple[int, ...] = (1, 2, 4, 8, 1, 2, 4, 8)
    lstm_channels: int = 256
    lstm_kernel: int = 3
    decoder_blocks: int = 12
    kernel_size: int = 3
    first_kernel: int = 7
    spatial_dependencies: bool = True

    @property
    def color_groups(self) -> int:
        return self.channels


PRESETS = {
    "paper": VPNConfig(),
    # Minutes on a CPU: binary bouncing digits (Bernoulli), two encoder and three decoder blocks.
    "small": VPNConfig(
        output="bernoulli",
        hidden=32,
        encoder_dilations=(1, 2),
        lstm_channels=32,
        decoder_blocks=3,
        first_kernel=5,
    ),
    # Coloured digits, 256 levels per colour generated R, G, B: the colour-group masks end to end.
    "small-rgb": VPNConfig(
        channels=3,
        output="categorical",
        levels=256,
        hidden=48,
        encoder_dilations=(1, 2),
        lstm_channels=48,
        decoder_blocks=3,
        first_kernel=5,
    ),
}


def _check_config(config: VPNConfig) -> None:
    if config.output not in OUTPUTS:
        raise ValueError(f"VPNConfig: output must be one of {OUTPUTS}, got {config.output!r}")
    if config.output == "bernoulli" and config.channels != 1:
        raise ValueError(f"VPNConfig: the Bernoulli output models one binary channel, got channels = {config.channels}")
    half = config.hidden // 2
    if config.hidden % 2 or half % config.color_groups:
        raise ValueError(
            f"VPNConfig: hidden must be even with hidden / 2 a multiple of channels ({config.channels}), "
            f"got {config.hidden}"
        )


class VideoPixelNetwork(nn.Module):
    """The VPN: encoder, ConvLSTM, masked PixelCNN decoder.

    Args:
        config: sizes (see :class:`VPNConfig` and :data:`PRESETS`).

    Attributes:
        encoder: input convolution and residual multiplicative blocks, per context frame.
        lstm: :class:`pyvidgen.nn.ConvLSTM` over the encoded frames.
        first: the decoder's mask-A convolution of frame t (None without spatial dependencies).
        condition: per decoder block (and the first layer), a 1x1 convolution of the LSTM state added to
            the block's input.
        decoder: masked residual multiplicative blocks.
        head: masked 1x1 convolution to the output parameters (``C * levels`` logits, or C for Bernoulli).

    Shape:
        - frames: (B, T, C, H, W), values in [0, 1]
        - output of :meth:`forward`: logits of frames 1..T-1, (B, T-1, C, levels, H, W) or, for
          Bernoulli, (B, T-1, C, H, W)
    """

    def __init__(self, config: VPNConfig | None = None) -> None:
        super().__init__()
        config = config or VPNConfig()
        _check_config(config)
        self.config = config
        c, hidden, groups = config.channels, config.hidden, config.color_groups
        self.encoder = nn.Sequential(
            nn.Conv2d(c, hidden, 3, padding=1),
            *[ResidualMultiplicativeBlock(hidden, config.kernel_size, d) for d in config.encoder_dilations],
        )
        self.lstm = ConvLSTM(hidden, config.lstm_channels, config.lstm_kernel)
        # Without spatial dependencies the decoder never reads frame t: no first layer at all.
        self.first = MaskedConv2d(c, hidden, config.first_kernel, "A", groups) if config.spatial_dependencies else None
        self.condition = nn.ModuleList(
            nn.Conv2d(config.lstm_channels, hidden, 1) for _ in range(config.decoder_blocks + 1)
        )
        self.decoder = nn.ModuleList(
            ResidualMultiplicativeBlock(hidden, config.kernel_size, 1, masked=True, color_groups=groups)
            for _ in range(config.decoder_blocks)
        )
        outputs = c * config.levels if config.output == "categorical" else c
        self.head = MaskedConv2d(hidden, outputs, 1, "B", groups)

    # ------------------------------------------------------------------------------------------ pieces
    def inputs(self, frames: Tensor) -> Tensor:
        """What the network reads of frames in [0, 1]: their quantised values scaled to [-1, 1]."""
        if self.config.output == "bernoulli":
            return binarize(frames) * 2 - 1
        return quantize(frames, self.config.levels).to(frames.dtype) * (2.0 / (self.config.levels - 1)) - 1

    def context(self, frames: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """LSTM outputs after each frame: (B, T, lstm_channels, H, W) and the final state.

        The output at index t summarises frames 0..t and conditions the decoder of frame t + 1.
        """
        return self.context_of_inputs(self.inputs(frames), state)

    def context_of_inputs(self, scaled: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """:meth:`context` of frames already scaled by :meth:`inputs`."""
        batch, steps = scaled.shape[:2]
        encoded = self.encoder(scaled.flatten(0, 1)).unflatten(0, (batch, steps))
        return self.lstm(encoded, state)

    def conditioning(self, context: Tensor) -> list[Tensor]:
        """The decoder's conditioning of a frame from the LSTM output before it: first layer's, then each block's."""
        return [layer(context) for layer in self.condition]

    def decode(self, frame_inputs: Tensor | None, conditions: list[Tensor]) -> Tensor:
        """Output parameters of a frame from its scaled inputs (None without spatial dependencies).

        Args:
            frame_inputs: (N, C, H, W) in [-1, 1] (:meth:`inputs`), or None.
            conditions: :meth:`conditioning` of the frame's context, each (N, hidden, H, W).

        Returns:
            (N, C * levels, H, W) logits (categorical, colour-major) or (N, C, H, W) (Bernoulli).
        """
        h = conditions[0]
        if self.first is not None and frame_inputs is not None:
            h = h + self.first(frame_inputs)
        for block, condition in zip(self.decoder, conditions[1:], strict=True):
            h = block(h + condition)
        return self.head(F.relu(h))

    # ------------------------------------------------------------------------------------------ model
    def forward(self, frames: Tensor) -> Tensor:
        """Teacher-forced logits of frames 1..T-1 given the frames before each.

        Args:
            frames: (B, T, C, H, W) in [0, 1], T >= 2.

        Returns:
            (B, T-1, C, levels, H, W) (categorical) or (B, T-1, C, H, W) (Bernoulli).
        """
        self._check(frames)
        return self.forward_inputs(self.inputs(frames))

    def forward_inputs(self, scaled: Tensor) -> Tensor:
        """:meth:`forward` on frames already scaled by :meth:`inputs` (differentiable: the causality tests
        backpropagate through it)."""
        batch, steps = scaled.shape[:2]
        context, _ = self.context_of_inputs(scaled[:, :-1])
        conditions = self.conditioning(context.flatten(0, 1))
        logits = self.decode(scaled[:, 1:].flatten(0, 1), conditions).unflatten(0, (batch, steps - 1))
        if self.config.output == "categorical":
            logits = logits.unflatten(2, (self.config.channels, self.config.levels))
        return logits

    def nll(self, frames: Tensor, from_frame: int = 1) -> Tensor:
        """Negative log-likelihood in nats of each frame ``from_frame``.. given the frames before it.

        Args:
            frames: (B, T, C, H, W) in [0, 1].
            from_frame: first frame whose likelihood counts (10 in the 10 -> 10 protocol).

        Returns:
            (B, T - from_frame) nats per frame (sum over its sub-pixels).
        """
        logits = self(frames)[:, from_frame - 1 :]
        # At least float32 (half logits under autocast), float64 for a float64 model.
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        target = frames[:, from_frame:]
        if self.config.output == "bernoulli":
            per_pixel = F.binary_cross_entropy_with_logits(logits, binarize(target).to(logits.dtype), reduction="none")
        else:
            levels = quantize(target, self.config.levels)
            per_pixel = F.cross_entropy(logits.flatten(0, 2), levels.flatten(0, 2), reduction="none")
            per_pixel = per_pixel.unflatten(0, target.shape[:3])
        return per_pixel.flatten(2).sum(-1)

    def _check(self, frames: Tensor) -> None:
        c = self.config.channels
        if not isinstance(frames, Tensor) or frames.dim() != 5 or frames.shape[2] != c or frames.shape[1] < 2:
            got = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise ValueError(f"VideoPixelNetwork: frames must be (B, T, C, H, W) with C = {c} and T >= 2, got {got}")

    def config_dict(self) -> dict:
        return asdict(self.config)


def quantize(frames: Tensor, levels: int) -> Tensor:
    """Intensities in [0, 1] to integer levels 0..levels-1 (int64)."""
    return (frames.clamp(0, 1) * (levels - 1)).round().long()


def binarize(frames: Tensor) -> Tensor:
    """Intensities in [0, 1] to {0, 1} (threshold 0.5), in the frames' dtype."""
    return (frames > 0.5).to(frames.dtype)


def bits_per_dim(nats_per_frame: Tensor | float, dims_per_frame: int) -> float:
    """nats per frame to bits per sub-pixel."""
    value = nats_per_frame.detach() if isinstance(nats_per_frame, Tensor) else nats_per_frame
    return float(value) / (dims_per_frame * math.log(2.0))


def build_vpn(preset: str = "small", **overrides: object) -> VideoPixelNetwork:
    """A :class:`VideoPixelNetwork` of a preset ("small", "small-rgb", "paper"), fields overridden by keyword."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    config = PRESETS[preset]
    return VideoPixelNetwork(VPNConfig(**{**asdict(config), **overrides}))
