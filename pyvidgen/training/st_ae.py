"""Training task of the spatio-temporal video autoencoder on bouncing-digits video.

Loss: mean squared error of the predicted next frame, every step teacher-forced. Evaluation on
held-out videos (digit glyphs never seen in training): next-frame MSE against the copy-last-frame
baseline (predict that nothing moves), and the MSE of a multi-step rollout that feeds the
model's own predictions back.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from pyvidgen.data import MovingDigits
from pyvidgen.models.st_autoencoder import PRESETS, SpatioTemporalAutoencoder
from pyvidgen.training.loop import TrainConfig
from pyvidgen.training.media import save_gif, save_png_grid

# Optimiser settings per preset: the paper's RMSProp at 1e-4, faster for the small CPU preset.
DEFAULT_LR = {"paper": 1e-4, "small": 1e-3}


def _unwrap(model: nn.Module) -> SpatioTemporalAutoencoder:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class STAETask:
    """``pyvidgen train st-ae``: Patraucean et al.'s model on :class:`pyvidgen.data.MovingDigits`.

    Task options (``TrainConfig.options``): ``seq_len`` (frames per training video, default 10),
    ``size`` (frame size, 64), ``digits`` (per video, 2), ``context`` (frames given before a
    rollout in evaluation and samples, default seq_len // 2).
    """

    name = "st-ae"

    def _option(self, config: TrainConfig, key: str, default: int) -> int:
        return int(config.options.get(key, default))

    def _data(self, config: TrainConfig, split: str, length: int) -> MovingDigits:
        return MovingDigits(
            length=length,
            seq_len=self._option(config, "seq_len", 10),
            size=self._option(config, "size", 64),
            digits=self._option(config, "digits", 2),
            seed=config.seed,
            split=split,
        )

    def build_model(self, config: TrainConfig) -> nn.Module:
        if config.preset not in PRESETS:
            raise ValueError(f"unknown preset {config.preset!r}; expected one of {', '.join(PRESETS)}")
        return SpatioTemporalAutoencoder(PRESETS[config.preset])

    def build_optimizer(self, model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
        lr = config.lr if config.lr is not None else DEFAULT_LR.get(config.preset, 1e-4)
        return torch.optim.RMSprop(model.parameters(), lr=lr)

    def train_dataset(self, config: TrainConfig) -> Dataset:
        return self._data(config, "train", length=1_000_000)

    def eval_dataset(self, config: TrainConfig) -> Dataset:
        return self._data(config, "test", length=config.eval_batches * config.batch_size)

    def loss(self, model: nn.Module, batch: Tensor) -> Tensor:
        predictions = model(batch[:, :-1])
        return torch.nn.functional.mse_loss(predictions, batch[:, 1:])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: list[Tensor]) -> dict[str, float]:
        model = _unwrap(model)
        device = next(model.parameters()).device
        totals = {"next_frame_mse": 0.0, "copy_last_mse": 0.0, "rollout_mse": 0.0, "copy_last_rollout_mse": 0.0}
        count = 0
        for batch in batches:
            frames = batch.to(device)
            context = max(1, frames.shape[1] // 2)
            predictions = model(frames[:, :-1]).clamp(0, 1)
            totals["next_frame_mse"] += torch.mean((predictions - frames[:, 1:]) ** 2).item()
            totals["copy_last_mse"] += torch.mean((frames[:, :-1] - frames[:, 1:]) ** 2).item()
            future = model.rollout(frames[:, :context], frames.shape[1] - context)
            totals["rollout_mse"] += torch.mean((future - frames[:, context:]) ** 2).item()
            held = frames[:, context - 1 : context].expand_as(frames[:, context:])
            totals["copy_last_rollout_mse"] += torch.mean((held - frames[:, context:]) ** 2).item()
            count += 1
        metrics = {k: v / max(count, 1) for k, v in totals.items()}
        metrics["next_frame_vs_copy_last"] = metrics["next_frame_mse"] / max(metrics["copy_last_mse"], 1e-12)
        return metrics

    def videos(self, config: TrainConfig, count: int, seq_len: int, seed: int) -> Tensor:
        """``count`` held-out videos of ``seq_len`` frames (B, T, 1, H, W), drawn from ``seed``."""
        data = MovingDigits(
            length=count,
            seq_len=seq_len,
            seed=seed,
            split="test",
            size=self._option(config, "size", 64),
            digits=self._option(config, "digits", 2),
        )
        return data.batch(range(count))

    @torch.no_grad()
    def sample(
        self, model: nn.Module, batch: Tensor, context: int, frames: int, seed: int
    ) -> tuple[Tensor, Tensor, str]:
        """Roll out ``frames`` frames after the first ``context``: (truth, predicted, a summary line with the MSE)."""
        model = _unwrap(model)
        truth = batch[:, : context + frames]
        future = model.rollout(truth[:, :context].to(next(model.parameters()).device), frames).cpu()
        predicted = torch.cat((truth[:, :context], future), dim=1)
        mse = torch.mean((future - truth[:, context:]) ** 2).item()
        held = torch.mean((truth[:, context - 1 : context] - truth[:, context:]) ** 2).item()
        return (
            truth,
            predicted,
            f"rollout of {frames} frames after {context}: MSE {mse:.5f} (copy-last-frame {held:.5f})",
        )

    @torch.no_grad()
    def save_samples(self, model: nn.Module, batch: Tensor, out_dir: Path, step: int) -> list[Path]:
        model = _unwrap(model)
        device = next(model.parameters()).device
        frames = batch[:4].to(device)
        context = max(1, frames.shape[1] // 2)
        future = model.rollout(frames[:, :context], frames.shape[1] - context)
        predicted = torch.cat((frames[:, :context], future), dim=1).cpu()
        truth = frames.cpu()
        rows = [video for pair in zip(truth, predicted, strict=True) for video in pair]  # true, predicted, ...
        png = save_png_grid(out_dir / "samples.png", rows)
        gif = save_gif(
            out_dir / "samples.gif", [torch.cat(list(pair), dim=-1) for pair in zip(truth, predicted, strict=True)]
        )
        return [png, gif]
