"""Training task of Video Pixel Networks on bouncing digits, grey (binary) or coloured.

Loss: the negative log-likelihood of every frame given the frames before it (teacher forcing), in nats
per sub-pixel. Evaluation on held-out videos (digit glyphs never seen in training) follows the
Moving MNIST protocol: ``context`` frames given (10), the likelihood of the next ``future`` (10), in
nats per frame and bits per sub-pixel. Pictures: future frames sampled sub-pixel by sub-pixel with the
cached sampler, under the true ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from pyvidgen.data import MovingDigits
from pyvidgen.models.video_pixel_network import PRESETS, VideoPixelNetwork, bits_per_dim, build_vpn
from pyvidgen.models.vpn_sampling import sample_future
from pyvidgen.training.loop import TrainConfig
from pyvidgen.training.media import save_gif, save_png_grid

# The paper's RMSProp at 3e-4; faster for the small CPU presets.
DEFAULT_LR = {"paper": 3e-4, "small": 1e-3, "small-rgb": 1e-3}
# Frame sizes: the paper's 64 x 64; the small presets train on 32 x 32 (digits scaled alike) to fit minutes.
DEFAULT_SIZE = {"paper": 64, "small": 32, "small-rgb": 32}


def _unwrap(model: nn.Module) -> VideoPixelNetwork:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _flag(value: object) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")


class VPNTask:
    """``pyvidgen train vpn``: the Video Pixel Network on :class:`pyvidgen.data.MovingDigits`.

    Task options (``TrainConfig.options``, ``--option KEY=VALUE``): ``seq_len`` (frames per training clip,
    10), ``size`` (frame size: 32 for the small presets, 64 for the paper's), ``digits`` (2), ``context``
    and ``future`` (the evaluation protocol, 10 and 10), ``spatial_dependencies`` (true; false trains the
    paper's baseline whose decoder does not see the frame it predicts).
    """

    name = "vpn"

    def _option(self, config: TrainConfig, key: str, default: int) -> int:
        return int(config.options.get(key, default))

    def _size(self, config: TrainConfig) -> int:
        return self._option(config, "size", DEFAULT_SIZE.get(config.preset, 64))

    def _data(self, config: TrainConfig, split: str, length: int, seq_len: int) -> MovingDigits:
        size = self._size(config)
        return MovingDigits(
            length=length,
            seq_len=seq_len,
            size=size,
            digits=self._option(config, "digits", 2),
            digit_size=max(1, round(28 * size / 64)),
            seed=config.seed,
            split=split,
            colors=PRESETS[config.preset].channels == 3,
        )

    def _protocol(self, config: TrainConfig) -> tuple[int, int]:
        return self._option(config, "context", 10), self._option(config, "future", 10)

    def build_model(self, config: TrainConfig) -> nn.Module:
        if config.preset not in PRESETS:
            raise ValueError(f"unknown preset {config.preset!r}; expected one of {', '.join(PRESETS)}")
        spatial = _flag(config.options.get("spatial_dependencies", True))
        return build_vpn(config.preset, spatial_dependencies=spatial)

    def build_optimizer(self, model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
        lr = config.lr if config.lr is not None else DEFAULT_LR.get(config.preset, 3e-4)
        return torch.optim.RMSprop(model.parameters(), lr=lr)

    def train_dataset(self, config: TrainConfig) -> Dataset:
        return self._data(config, "train", 1_000_000, self._option(config, "seq_len", 10))

    def eval_dataset(self, config: TrainConfig) -> Dataset:
        context, future = self._protocol(config)
        self.context = context  # evaluate() counts the likelihood of the frames after it
        return self._data(config, "test", config.eval_batches * config.batch_size, context + future)

    def videos(self, config: TrainConfig, count: int, seq_len: int, seed: int) -> Tensor:
        """``count`` held-out videos of ``seq_len`` frames (B, T, C, H, W), drawn from ``seed``."""
        data = self._data(config, "test", count, seq_len)
        data.seed = seed
        return data.batch(range(count))

    def loss(self, model: nn.Module, batch: Tensor) -> Tensor:
        """Mean negative log-likelihood per sub-pixel (nats) of frames 1..T-1."""
        nll = model.module.nll(batch) if isinstance(model, nn.parallel.DistributedDataParallel) else model.nll(batch)
        return nll.mean() / batch[0, 0].numel()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: list[Tensor]) -> dict[str, float]:
        model = _unwrap(model)
        device = next(model.parameters()).device
        totals, frames_counted, dims = 0.0, 0, 1
        for batch in batches:
            frames = batch.to(device)
            context = max(1, min(frames.shape[1] - 1, getattr(self, "context", 10)))
            nll = model.nll(frames, from_frame=context)
            totals += float(nll.sum())
            frames_counted += nll.numel()
            dims = frames[0, 0].numel()
        nats = totals / max(frames_counted, 1)
        return {"nll_nats_per_frame": nats, "nll_bits_per_dim": bits_per_dim(nats, dims)}

    def sample(
        self, model: nn.Module, batch: Tensor, context: int, frames: int, seed: int
    ) -> tuple[Tensor, Tensor, str]:
        """Sample ``frames`` frames after the first ``context`` of each video: (truth, predicted, a summary line)."""
        model = _unwrap(model)
        device = next(model.parameters()).device
        videos = batch.to(device)
        generator = torch.Generator().manual_seed(seed)
        future = sample_future(model, videos[:, :context], frames, generator=generator).to(videos.dtype)
        predicted = torch.cat((videos[:, :context], future), dim=1).cpu()
        truth = videos[:, : context + frames].cpu()
        line = f"sampled {frames} frames after {context}, sub-pixel by sub-pixel (cached sampler)"
        return truth, predicted, line

    @torch.no_grad()
    def save_samples(self, model: nn.Module, batch: Tensor, out_dir: Path, step: int) -> list[Path]:
        context = min(batch.shape[1] - 1, 10)
        truth, predicted, _ = self.sample(model, batch[:2], context, min(4, batch.shape[1] - context), seed=step)
        rows = [video for pair in zip(truth, predicted, strict=True) for video in pair]
        png = save_png_grid(out_dir / "samples.png", rows)
        gif = save_gif(
            out_dir / "samples.gif", [torch.cat(list(pair), dim=-1) for pair in zip(truth, predicted, strict=True)]
        )
        return [png, gif]
