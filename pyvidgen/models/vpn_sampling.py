"""Sampling future frames from a :class:`~pyvidgen.models.video_pixel_network.VideoPixelNetwork`.

A frame is generated one sub-pixel at a time in raster order (row, column, then colour). The naive
sampler runs the whole decoder on the partial frame for every sub-pixel: H * W * C decoder passes.
The cached sampler (the idea of Ramachandran et al. 2017's fast PixelCNN++ generation, in an
incremental form) keeps every decoder layer's outputs in buffers and, for each new sub-pixel, computes
each layer's output at that pixel and colour only, from the buffered outputs of the layer below at the
earlier pixels its masked kernel sees: one decoder pass's worth of arithmetic per frame.

Both draw from the same noise (Gumbel noise for the categorical output, uniform thresholds for
Bernoulli), so given the same generator they return the same samples; the decoder's arithmetic differs
only in summation order (in float64 the samples are equal).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyvidgen.kernels.reference.masked_conv2d import visible_rows
from pyvidgen.models.video_pixel_network import VideoPixelNetwork
from pyvidgen.nn import MaskedConv2d
from pyvidgen.ops.multiplicative_unit import MULTIPLICATIVE_UNIT


def _noise(model: VideoPixelNetwork, shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """Per sub-pixel noise: Gumbel (B, C, levels, H, W) (categorical) or logistic thresholds (B, C, H, W)."""
    config = model.config
    if config.output == "bernoulli":
        u = torch.rand(shape, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        noise = torch.log(u) - torch.log1p(-u)  # a logit above this threshold samples 1
    else:
        batch, channels, height, width = shape
        u = torch.rand(batch, channels, config.levels, height, width, generator=generator, dtype=torch.float64)
        noise = -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-12)))
    return noise.to(device=like.device, dtype=like.dtype)


def _value(model: VideoPixelNetwork, logits: Tensor, noise: Tensor) -> Tensor:
    """Sampled intensities in [0, 1] from logits (B, levels) or (B,) and their noise."""
    if model.config.output == "bernoulli":
        return (logits > noise).to(logits.dtype)
    levels = model.config.levels
    return (logits + noise).argmax(dim=1).to(logits.dtype) / (levels - 1)


def _logits_at(model: VideoPixelNetwork, logits: Tensor, colour: int, i: int, j: int) -> Tensor:
    """The logits of sub-pixel (colour, i, j) from the decoder's full output (N, C * levels or C, H, W)."""
    if model.config.output == "bernoulli":
        return logits[:, colour, i, j]
    levels = model.config.levels
    return logits[:, colour * levels : (colour + 1) * levels, i, j]


@torch.no_grad()
def sample_frame_naive(model: VideoPixelNetwork, conditions: list[Tensor], noise: Tensor) -> Tensor:
    """One frame (B, C, H, W) in [0, 1], running the whole decoder for every sub-pixel."""
    batch, _, height, width = conditions[0].shape
    channels = model.config.channels
    frame = torch.zeros(batch, channels, height, width, dtype=conditions[0].dtype, device=conditions[0].device)
    for i in range(height):
        for j in range(width):
            for colour in range(channels):
                logits = model.decode(model.inputs(frame), conditions)
                pick = noise[:, colour, :, i, j] if noise.dim() == 5 else noise[:, colour, i, j]
                frame[:, colour, i, j] = _value(model, _logits_at(model, logits, colour, i, j), pick)
    return frame


def _group_ranges(channels: int, groups: int, per_channel: int = 1) -> list[slice]:
    """The channels of each colour group, a contiguous range (``per_channel`` interleaved outputs per channel)."""
    bounds = [-(-g * channels // groups) for g in range(groups + 1)]  # first channel c with c * G // n >= g
    return [slice(bounds[g] * per_channel, bounds[g + 1] * per_channel) for g in range(groups)]


class _Layer:
    """A masked convolution evaluated one pixel and colour group at a time from a padded input buffer."""

    def __init__(self, conv: MaskedConv2d, batch: int, height: int, width: int, like: Tensor, interleave: int = 1):
        groups = conv.color_groups
        self.dilation, self.reach = conv.dilation, conv.dilation * (conv.kernel_size // 2)
        self.buffer = like.new_zeros(batch, conv.in_channels, height + self.reach, width + 2 * self.reach)
        self.inputs = _group_ranges(conv.in_channels, groups)
        # The visible kernel rows with exact zeros at the hidden taps, as the op computes them, flattened so
        # that one output is one matrix product with the flattened window: (Cin * rows * k, Cout of the group).
        rows = visible_rows(conv.weight.to(like.dtype), conv.mask_type, groups).flatten(1)
        bias = conv.bias.to(like.dtype) if conv.bias is not None else None
        self.outputs = _group_ranges(conv.out_channels // interleave, groups, interleave)
        self.weights = [rows[out].t().contiguous() for out in self.outputs]
        self.biases = [bias[out] if bias is not None else like.new_zeros(out.stop - out.start) for out in self.outputs]

    def write(self, values: Tensor, group: int, i: int, j: int) -> None:
        """Store the layer's input at pixel (i, j) for the channels of ``group``."""
        self.buffer[:, self.inputs[group], i + self.reach, j + self.reach] = values

    def output(self, group: int, i: int, j: int) -> Tensor:
        """The layer's output at (i, j) for the output channels of ``group``: (B, channels of the group)."""
        d, r = self.dilation, self.reach
        window = self.buffer[:, :, i : i + r + 1 : d, j : j + 2 * r + 1 : d].reshape(self.buffer.shape[0], -1)
        return torch.addmm(self.biases[group], window, self.weights[group])


class _CachedDecoder:
    """The decoder of one frame evaluated incrementally (see the module docstring)."""

    def __init__(self, model: VideoPixelNetwork, conditions: list[Tensor]) -> None:
        self.model = model
        config = model.config
        like = conditions[0]
        batch, hidden, height, width = like.shape
        self.groups = config.color_groups
        self.hidden = _group_ranges(hidden, self.groups)
        # The conditioning as (H, W, B, hidden): one pixel's vector is one contiguous read.
        self.conditions = [c.permute(2, 3, 0, 1).contiguous() for c in conditions]
        self.first = _Layer(model.first, batch, height, width, like) if model.first is not None else None
        interleave = 4 if self.groups > 1 else 1
        self.blocks = []
        for block in model.decoder:
            mus = [_Layer(mu.conv, batch, height, width, like, interleave) for mu in (block.mu1, block.mu2)]
            self.blocks.append(
                (_Layer(block.down, batch, height, width, like), mus, _Layer(block.up, batch, height, width, like))
            )
        self.head = _Layer(model.head, batch, height, width, like)
        # The fused gate's kernel itself, as the naive path's op runs it (no per-call checks).
        gate = MULTIPLICATIVE_UNIT
        self.gate = gate.implementation(gate.resolve_backend(like.device), "forward")

    def _gate(self, pre: Tensor, h: Tensor) -> Tensor:
        if self.groups > 1:
            pre = pre.unflatten(1, (-1, 4)).transpose(1, 2).flatten(1)
        return self.gate(pre[:, :, None, None].contiguous(), h[:, :, None, None].contiguous())[:, :, 0, 0]

    def step(self, group: int, i: int, j: int) -> Tensor:
        """Logits of sub-pixel (group, i, j): (B, levels) or (B,)."""
        rows = self.hidden[group]
        h = self.conditions[0][i, j, :, rows]
        if self.first is not None:
            h = h + self.first.output(group, i, j)
        for (down, (mu1, mu2), up), condition in zip(self.blocks, self.conditions[1:], strict=True):
            h = h + condition[i, j, :, rows]
            down.write(h, group, i, j)
            x = down.output(group, i, j)
            for mu in (mu1, mu2):
                mu.write(x, group, i, j)
                x = self._gate(mu.output(group, i, j), x)
            up.write(x, group, i, j)
            h = h + up.output(group, i, j)
        self.head.write(torch.relu(h), group, i, j)
        logits = self.head.output(group, i, j)
        return logits[:, 0] if self.model.config.output == "bernoulli" else logits

    def feed(self, values: Tensor, colour: int, i: int, j: int) -> None:
        """Write the sampled value of sub-pixel (colour, i, j) into the first layer's input (scaled as
        :meth:`VideoPixelNetwork.inputs` scales it: 2 v - 1 for v in [0, 1])."""
        if self.first is not None:
            self.first.write((values * 2 - 1)[:, None], colour, i, j)


@torch.inference_mode()
def sample_frame_cached(model: VideoPixelNetwork, conditions: list[Tensor], noise: Tensor) -> Tensor:
    """One frame (B, C, H, W) in [0, 1], each decoder layer computed once per sub-pixel from cached outputs."""
    batch, _, height, width = conditions[0].shape
    channels = model.config.channels
    frame = conditions[0].new_zeros(batch, channels, height, width)
    decoder = _CachedDecoder(model, conditions)
    for i in range(height):
        for j in range(width):
            for colour in range(channels):
                logits = decoder.step(colour, i, j)
                pick = noise[:, colour, :, i, j] if noise.dim() == 5 else noise[:, colour, i, j]
                value = _value(model, logits, pick)
                frame[:, colour, i, j] = value
                decoder.feed(value, colour, i, j)
    return frame


@torch.no_grad()
def sample_future(
    model: VideoPixelNetwork,
    context: Tensor,
    steps: int,
    *,
    cached: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Frames after ``context``, each sampled given the context and the frames sampled before it.

    Args:
        model: a trained network (put it in eval mode).
        context: (B, T0, C, H, W) observed frames in [0, 1], T0 >= 1.
        steps: frames to sample.
        cached: the cached sampler (else the naive one: far slower, for testing).
        generator: the noise's source; the same generator state gives the same samples with either sampler.

    Returns:
        (B, steps, C, H, W) in [0, 1] (levels / (levels - 1), or {0, 1} for Bernoulli).
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    outputs, state = model.context(context)
    last = outputs[:, -1]
    frames = []
    sample = sample_frame_cached if cached else sample_frame_naive
    batch, _, channels, height, width = context.shape
    for _ in range(steps):
        conditions = model.conditioning(last)
        noise = _noise(model, (batch, channels, height, width), generator, conditions[0])
        frame = sample(model, conditions, noise)
        frames.append(frame)
        outputs, state = model.context(frame[:, None].to(context.dtype), state)
        last = outputs[:, -1]
    return torch.stack(frames, dim=1)
