"""Spatio-temporal video autoencoder with differentiable memory (Patraucean, Handa, Cipolla 2015).

Next-frame prediction: each frame is encoded, a ConvLSTM memory integrates the encoded frames,
a flow regressor turns the memory state into a dense flow, the encoded current frame is warped by
that flow, and a decoder turns the warped features into the predicted next frame. A Huber
smoothness prior on the flow is injected into the backward pass (HuberPenalty).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from pyvidgen.nn import ConvLSTM, FlowWarp, HuberPenalty


class NearestUpsample2x(nn.Module):
    """``nn.Upsample(scale_factor=2, mode="nearest")``, the same values: each pixel repeated along rows and columns.

    On the CPU torch's nearest upsampling converts the image's memory layout on the way in and out, which
    cost about six times the repeats (89 against 14 ms forward and backward for 144 x 16 x 32 x 32, 2 threads),
    a sixth of the small model's training step.

    Shape:
        - input: (N, C, H, W); output: (N, C, 2H, 2W).
    """

    def forward(self, x: Tensor) -> Tensor:
        return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


class ChannelsLastConv2d(nn.Conv2d):
    """``nn.Conv2d`` that convolves in the channels-last layout (same parameters, same state dict keys).

    oneDNN computes convolutions with few output channels (the flow regressor's 2, the decoder's frame
    channels) about twice as fast from a channels-last input, the conversion included: forward and
    backward at the small model's sizes, 2 threads, 160 -> 82 ms for the decoder's 16 -> 1 5x5 at 64²
    and 92 -> 63 ms for the flow regressor's 24 -> 2 9x9 at 32². The output is channels-last too.
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.contiguous(memory_format=torch.channels_last))


@dataclass(frozen=True)
class STAEConfig:
    """Sizes of a :class:`SpatioTemporalAutoencoder` (defaults: the paper's).

    Attributes:
        in_channels: frame channels (1 for Moving MNIST).
        encoder_channels: channels of the encoded frame (32 in the paper).
        encoder_kernel: encoder conv size (7).
        memory_channels: ConvLSTM hidden channels (45).
        memory_kernel: ConvLSTM input-to-gate kernel (7).
        memory_hidden_kernel: ConvLSTM hidden-to-gate kernel (7).
        flow_kernel: the two flow-regressor convs (15).
        flow_clamp: bound of the normalised flow (0.5).
        decoder_kernel: decoder conv size (7).
        smoothness_weight: weight of the injected Huber flow penalty (1e-3).
        smoothness_delta: Huber threshold of the penalty.
        forget_bias: initial forget-gate bias of the memory.
    """

    in_channels: int = 1
    encoder_channels: int = 32
    encoder_kernel: int = 7
    memory_channels: int = 45
    memory_kernel: int = 7
    memory_hidden_kernel: int = 7
    flow_kernel: int = 15
    flow_clamp: float = 0.5
    decoder_kernel: int = 7
    smoothness_weight: float = 1e-3
    smoothness_delta: float = 1.0
    forget_bias: float = 1.0


PRESETS: dict[str, STAEConfig] = {
    "paper": STAEConfig(),
    # Trains on a 2-core CPU in minutes: the same architecture, narrower, with smaller kernels (the
    # memory's 3x3 convolutions see motion of 1-2 feature pixels per frame at 32x32; the 9x9 flow
    # regressor gives the spatial context).
    "small": STAEConfig(
        encoder_channels=16,
        encoder_kernel=5,
        memory_channels=24,
        memory_kernel=3,
        memory_hidden_kernel=3,
        flow_kernel=9,
        decoder_kernel=5,
    ),
}


class SpatioTemporalAutoencoder(nn.Module):
    """Patraucean et al.'s next-frame predictor.

    Args:
        config: layer sizes; see :data:`PRESETS` ("paper", "small").

    Shape:
        - frames: (B, T, C, H, W) with H and W even, values in [0, 1].
        - output of :meth:`forward`: (B, T, C, H, W), the prediction of frames 1..T from frames 0..T-1
          (teacher forcing: every step sees the true previous frame).
    """

    def __init__(self, config: STAEConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or STAEConfig()
        e, m = config.encoder_channels, config.memory_channels
        # The paper's conv -> tanh -> 2x2 max pool, pooled before the tanh: tanh is increasing, so the values are
        # the same, and the tanh (and its gradient) runs on a quarter of the pixels. (Where float32 rounds two
        # pixels of a window to the same tanh, the gradient goes to the larger input rather than the first.)
        self.encoder = nn.Sequential(
            nn.Conv2d(config.in_channels, e, config.encoder_kernel, padding=config.encoder_kernel // 2),
            nn.MaxPool2d(2),
            nn.Tanh(),
        )
        self.memory = ConvLSTM(
            e,
            m,
            config.memory_kernel,
            hidden_kernel_size=config.memory_hidden_kernel,
            forget_bias=config.forget_bias,
            batch_first=True,
        )
        k = config.flow_kernel
        self.flow_head = nn.Sequential(
            ChannelsLastConv2d(m, 2, k, padding=k // 2),
            ChannelsLastConv2d(2, 2, k, padding=k // 2),
            ChannelsLastConv2d(2, 2, 1),
        )
        # Training starts from zero flow: the last 1x1 conv is zero, so the first predictions copy.
        nn.init.zeros_(self.flow_head[-1].weight)
        nn.init.zeros_(self.flow_head[-1].bias)
        self.smoothness = HuberPenalty(config.smoothness_weight, config.smoothness_delta)
        self.warp = FlowWarp(padding_mode="border", normalized=True)
        self.decoder = nn.Sequential(
            NearestUpsample2x(),
            ChannelsLastConv2d(e, config.in_channels, config.decoder_kernel, padding=config.decoder_kernel // 2),
        )

    def _check(self, frames: Tensor) -> None:
        if frames.dim() != 5:
            raise ValueError(
                f"SpatioTemporalAutoencoder: frames must be (B, T, C, H, W), got shape {tuple(frames.shape)}"
            )
        _, _, channels, height, width = frames.shape
        if channels != self.config.in_channels:
            raise ValueError(
                f"SpatioTemporalAutoencoder: frames must have {self.config.in_channels} channel(s), got {channels}"
            )
        if height % 2 or width % 2:
            raise ValueError(f"SpatioTemporalAutoencoder: frame height and width must be even, got {height}x{width}")

    def step_all(self, frames: Tensor, state: list | None = None) -> tuple[Tensor, Tensor, list]:
        """Run every frame through the model at once (the memory still runs in time order).

        Args:
            frames: (B, T, C, H, W).
            state: the memory's state after earlier frames, or None.

        Returns:
            (predictions (B, T, C, H, W) of the frames that follow each input frame,
            flows (B, T, 2, H/2, W/2) in normalised units, the memory's final state).
        """
        self._check(frames)
        batch, steps, channels, height, width = frames.shape
        encoded = self.encoder(frames.reshape(batch * steps, channels, height, width))
        e_channels, e_height, e_width = encoded.shape[1:]
        memory, state = self.memory(encoded.reshape(batch, steps, e_channels, e_height, e_width), state)
        flow = self.flow_head(memory.reshape(batch * steps, -1, e_height, e_width))
        flow = self.smoothness(flow.clamp(-self.config.flow_clamp, self.config.flow_clamp))
        warped = self.warp(encoded, flow)
        predictions = self.decoder(warped).reshape(batch, steps, channels, height, width)
        return predictions, flow.reshape(batch, steps, 2, e_height, e_width), state

    def forward(self, frames: Tensor) -> Tensor:
        """Predict frames 1..T from frames 0..T-1 (teacher forcing).

        Args:
            frames: (B, T, C, H, W) input frames.

        Returns:
            (B, T, C, H, W): output t is the prediction of frame t + 1.
        """
        return self.step_all(frames)[0]

    @torch.no_grad()
    def rollout(self, context: Tensor, steps: int) -> Tensor:
        """Predict ``steps`` future frames by feeding each prediction back as the next input.

        Args:
            context: (B, T0, C, H, W) observed frames, T0 >= 1.
            steps: number of frames to predict.

        Returns:
            (B, steps, C, H, W): the frames that follow the context.
        """
        predictions, _, state = self.step_all(context)
        frame = predictions[:, -1:].clamp(0, 1)
        future = [frame]
        for _ in range(steps - 1):
            predictions, _, state = self.step_all(frame, state)
            frame = predictions.clamp(0, 1)
            future.append(frame)
        return torch.cat(future, dim=1)

    def config_dict(self) -> dict:
        """The configuration as a plain dict (stored in checkpoints)."""
        return asdict(self.config)


def build_st_autoencoder(preset: str = "small") -> SpatioTemporalAutoencoder:
    """A model from a named preset ("small" or "paper")."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return SpatioTemporalAutoencoder(PRESETS[preset])
