"""Training task of Visual Dynamics' cross convolutional network (Xue et al. 2016) on the shapes data set.

Data: :class:`pyvidgen.data.shapes.Shapes` pairs (frame 0, frame 1), generated on the fly (train split; the test
split held out). Loss: :meth:`CrossConvNet.loss` with one posterior sample per pair: the difference image's
squared error / (2 sigma^2) + beta KL, beta annealed log-linearly from 1e-5 (the paper's start) to ``kl_weight``
over ``anneal_steps`` steps. beta is a function of the step (the loop's ``set_step`` hook) and the noise of a
step a function of its batch, so a resumed run continues exactly.

Evaluation, as the paper's: for each shape class, held-out images of that class, ``samples`` futures of each with
z ~ N(0, I) (z = 0 for the deterministic model), each future's velocity estimated as the integer shift that best
takes frame 0 to it, and the KL divergence between the class's true velocity law and the histogram of those
velocities (:func:`velocity_kl_by_class`; lower is better, 0 is perfect). Also the held-out negative ELBO.

Task options (``--option KEY=VALUE``): ``deterministic`` (false; true trains the paper's deterministic baseline),
``size`` (frame side, default the preset's), ``max_speed`` (4), ``kl_weight`` (final beta, 1), ``kl_start``
(1e-5), ``anneal_steps`` (see :data:`DEFAULT_ANNEAL_STEPS`), ``samples`` (futures per image in the evaluation,
10), ``eval_images`` (held-out images per class, 50), and the model sizes in :data:`MODEL_OPTIONS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from pyvidgen.data.shapes import SHAPE_CLASSES, Shapes, estimate_velocities, velocity_histogram, velocity_kl
from pyvidgen.models.cross_conv_net import PRESETS, CrossConvNet, build_cross_conv_net
from pyvidgen.training.images import batch_generator, save_image_grid, unwrap
from pyvidgen.training.loop import TrainConfig
from pyvidgen.training.media import video_grid

__all__ = ["CrossConvTask", "class_items", "kl_weight_at", "save_future_gif", "velocity_kl_by_class"]

DEFAULT_LR = {"small": 1e-3, "paper": 1e-4}
KL_START = 1e-5  # the paper's first KL weight
DEFAULT_ANNEAL_STEPS = {"small": 800, "paper": 10_000}
TRAIN_LENGTH = 1_000_000  # generated pairs: effectively never repeats within a run
DEFAULT_SAMPLES = 10
DEFAULT_EVAL_IMAGES = 50
PICTURE_ROWS_PER_CLASS = 2
PICTURE_FUTURES = 6
GIF_SCALE = 4
GIF_FRAME_MS = 600

# Model sizes a task option may override (``--option z_channels=8``); "scales" takes "0.5,1,2".
MODEL_OPTIONS: dict[str, Callable[[object], object]] = {
    "features": int,
    "kernel_size": int,
    "z_channels": int,
    "kernel_decoder_channels": int,
    "decoder_bottleneck": int,
    "decoder_channels": int,
    "variance": float,
    "motion_head": str,
    "encoder_channels": lambda v: tuple(int(c) for c in str(v).split(",") if c),
    "motion_channels": lambda v: tuple(int(c) for c in str(v).split(",") if c),
    "batch_norm": lambda v: _flag(v),
    "scales": lambda v: tuple(float(s) for s in str(v).split(",")),
}


def _flag(value: object) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")


def kl_weight_at(step: int, final: float, anneal_steps: int, start: float = KL_START) -> float:
    """beta at training step ``step`` (0-based): log-linear from ``start`` to ``final`` over ``anneal_steps``."""
    if anneal_steps <= 0 or step >= anneal_steps or final <= 0:
        return float(final)
    return float(start * (final / start) ** (step / anneal_steps))


def class_items(dataset: Shapes, per_class: int) -> list[Tensor]:
    """The first ``per_class`` items of each class in ``dataset``'s order.

    Returns:
        one (per_class, 2, C, S, S) tensor of frame pairs per class of :data:`SHAPE_CLASSES` (fewer items if the
        data set runs out).
    """
    found: list[list[int]] = [[] for _ in SHAPE_CLASSES]
    for index in range(len(dataset)):
        label = int(dataset.item_info(index)["label"])
        if len(found[label]) < per_class:
            found[label].append(index)
        if all(len(f) >= per_class for f in found):
            break
    return [dataset.batch(indices) for indices in found]


@torch.no_grad()
def velocity_kl_by_class(
    predict: Callable[[Tensor, torch.Generator], Tensor],
    dataset: Shapes,
    per_class: int = DEFAULT_EVAL_IMAGES,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    batch_size: int = 256,
    items: list[Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """The paper's evaluation: per class, KL(true velocity law || histogram of the predicted futures' velocities).

    Each of ``per_class`` images of a class gets ``samples`` predicted next frames; each prediction, clamped to
    [0, 1], gets its velocity from :func:`estimate_velocities` (the best integer shift of frame 0, up to the data
    set's ``max_speed``); the histogram of all of them is compared with ``dataset.velocity_distribution(label)``
    by :func:`velocity_kl` (nats).

    Args:
        predict: ``(frame0 (n, C, H, W), generator) -> (n, C, H, W)``, one sampled next frame per image (e.g.
            ``lambda x, g: model.sample(x, generator=g)``).
        dataset: held-out :class:`Shapes`.
        per_class: images per class.
        samples: futures per image.
        seed: seeds the generator handed to ``predict``.
        batch_size: images per ``predict`` call.
        items: the pairs of each class, as :func:`class_items` returns them (computed when None).
        device: where ``predict`` runs (its inputs and the generator are put there).

    Returns:
        ``{"velocity_kl_<class>": KL of each class, "velocity_kl": their mean}``.
    """
    items = items if items is not None else class_items(dataset, per_class)
    device = torch.device(device)
    generator = torch.Generator(device).manual_seed(seed)
    result = {}
    for label, pairs in enumerate(items):
        frame0 = pairs[:, 0].repeat(samples, 1, 1, 1)  # sample s of image i is row s * n + i
        velocities = []
        for chunk in frame0.split(batch_size):
            predicted = predict(chunk.to(device), generator).float().clamp(0, 1).cpu()
            velocities.append(estimate_velocities(chunk, predicted, dataset.max_speed))
        histogram = velocity_histogram(torch.cat(velocities), dataset.max_speed)
        truth = dataset.velocity_distribution(label)
        result[f"velocity_kl_{SHAPE_CLASSES[label]}"] = float(velocity_kl(truth, histogram))
    result["velocity_kl"] = sum(result.values()) / len(items)
    return result


def _sampler(model: CrossConvNet) -> Callable[[Tensor, torch.Generator], Tensor]:
    """The ``predict`` of :func:`velocity_kl_by_class` for a model: one future per image, z ~ N(0, I)."""
    return lambda frame0, generator: model.sample(frame0, generator=generator)


def _futures(model: CrossConvNet, pairs: Tensor, futures: int, generator: torch.Generator) -> Tensor:
    """(n, 2 + futures, C, H, W): frame 0, the true frame 1, then ``futures`` sampled next frames of each pair."""
    device = next(model.parameters()).device
    frame0 = pairs[:, 0].to(device)
    sampled = [model.sample(frame0, generator=generator).float().clamp(0, 1).cpu() for _ in range(futures)]
    return torch.stack([pairs[:, 0], pairs[:, 1], *sampled], dim=1)


def save_future_gif(path: str | Path, rows: Tensor, scale: int = GIF_SCALE) -> Path:
    """A looping GIF of two frames: every cell shows frame 0, then its own next frame.

    Args:
        path: output file.
        rows: (n, 2 + M, C, H, W) as :func:`_futures` gives: frame 0, the true next frame, M sampled futures.
        scale: nearest-neighbour upscaling.

    Returns:
        ``path`` as a Path. The grid has n rows and M + 1 columns (the true future, then the samples).
    """
    import imageio.v3 as iio

    rows = rows.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    nexts = rows[:, 1:]
    inputs = rows[:, :1].expand_as(nexts)
    frames = [video_grid(list(cells), pad=scale) for cells in (inputs, nexts)]
    path = Path(path)
    iio.imwrite(path, np.stack(frames), duration=GIF_FRAME_MS, loop=0)
    return path


class CrossConvTask:
    """``pyvidgen train cross-conv``: the cross convolutional network on :class:`Shapes` (options: module docstring)."""

    name = "cross-conv"

    def __init__(self) -> None:
        self.config: TrainConfig | None = None
        self.step = 0
        self._eval_items: list[Tensor] | None = None

    # -- options --
    def _option(self, key: str, default: object) -> object:
        return self.config.options.get(key, default) if self.config is not None else default

    def size(self, config: TrainConfig) -> int:
        return int(config.options.get("size", PRESETS[config.preset].image_size if config.preset in PRESETS else 32))

    def max_speed(self, config: TrainConfig) -> int:
        return int(config.options.get("max_speed", 4))

    def kl_weight(self) -> float:
        """beta at the current step (:meth:`set_step`)."""
        preset = self.config.preset if self.config is not None else "small"
        anneal = int(self._option("anneal_steps", DEFAULT_ANNEAL_STEPS.get(preset, 0)))
        start = float(self._option("kl_start", KL_START))
        return kl_weight_at(self.step, float(self._option("kl_weight", 1.0)), anneal, start)

    # -- the Task protocol --
    def build_model(self, config: TrainConfig) -> nn.Module:
        self.config = config
        if config.preset not in PRESETS:
            raise ValueError(f"unknown preset {config.preset!r}; expected one of {', '.join(PRESETS)}")
        overrides = {key: parse(config.options[key]) for key, parse in MODEL_OPTIONS.items() if key in config.options}
        overrides["deterministic"] = _flag(config.options.get("deterministic", False))
        overrides["image_size"] = self.size(config)
        return build_cross_conv_net(config.preset, **overrides)

    def build_optimizer(self, model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
        lr = config.lr if config.lr is not None else DEFAULT_LR.get(config.preset, 1e-3)
        return torch.optim.Adam(model.parameters(), lr=lr)

    def train_dataset(self, config: TrainConfig) -> Dataset:
        return Shapes(TRAIN_LENGTH, self.size(config), "train", config.seed, self.max_speed(config))

    def eval_dataset(self, config: TrainConfig) -> Dataset:
        length = config.eval_batches * config.batch_size
        return Shapes(length, self.size(config), "test", config.seed, self.max_speed(config))

    def _velocity_set(self, config: TrainConfig) -> Shapes:
        # Held-out images for the velocity evaluation: the test split, long enough to find every class.
        return Shapes(TRAIN_LENGTH, self.size(config), "test", config.seed + 1, self.max_speed(config))

    def set_step(self, step: int) -> None:
        """Called by the loop before each training step (0-based): the KL weight follows it."""
        self.step = int(step)

    def noise_generator(self, batch: Tensor) -> torch.Generator:
        return batch_generator(batch, self.config.seed if self.config is not None else 0)

    def loss(self, model: nn.Module, batch: Tensor) -> Tensor:
        """Mean of reconstruction + beta KL per pair (nats), through ``model(...)`` so DDP sees the forward.

        Args:
            batch: (B, 2, C, H, W) frame pairs.
        """
        frame0, frame1 = batch[:, 0], batch[:, 1]
        output = model(frame0, frame1, self.noise_generator(batch))
        return unwrap(model).loss_from(frame0, frame1, output, self.kl_weight()).loss

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: list[Tensor]) -> dict[str, float]:
        """Held-out negative ELBO and its terms (nats per pair), and the per-class velocity KL (nats)."""
        net = unwrap(model)
        device = next(net.parameters()).device
        seed = self.config.seed if self.config is not None else 0
        generator = torch.Generator(device).manual_seed(seed)
        totals, count = {"neg_elbo_nats": 0.0, "reconstruction_nats": 0.0, "kl_nats": 0.0, "sse": 0.0}, 0
        for batch in batches:
            pairs = batch.to(device)
            terms = net.loss(pairs[:, 0], pairs[:, 1], generator=generator)
            totals["neg_elbo_nats"] += terms.negative_elbo.double().sum().item()
            totals["reconstruction_nats"] += terms.reconstruction.double().sum().item()
            totals["kl_nats"] += terms.kl.double().sum().item()
            totals["sse"] += (terms.reconstruction.double() * 2 * net.config.variance).sum().item()
            count += pairs.shape[0]
        result = {key: value / count if count else math.nan for key, value in totals.items()}
        config = self.config
        if config is not None:
            dataset = self._velocity_set(config)
            per_class = int(self._option("eval_images", DEFAULT_EVAL_IMAGES))
            if self._eval_items is None:
                self._eval_items = class_items(dataset, per_class)
            samples = int(self._option("samples", DEFAULT_SAMPLES))
            result.update(
                velocity_kl_by_class(
                    _sampler(net), dataset, per_class, samples, seed, items=self._eval_items, device=device
                )
            )
        result["kl_weight"] = self.kl_weight()
        return result

    # -- pictures --
    def _pictures(self, model: nn.Module, pairs: Tensor, out_dir: Path, stem: str, futures: int, seed: int):
        net = unwrap(model)
        generator = torch.Generator(next(net.parameters()).device).manual_seed(seed)
        with torch.no_grad():
            rows = _futures(net, pairs, futures, generator)
        png = save_image_grid(out_dir / f"{stem}.png", rows.flatten(0, 1), columns=rows.shape[1])
        return [png, save_future_gif(out_dir / f"{stem}.gif", rows)]

    def save_samples(self, model: nn.Module, batch: Tensor, out_dir: Path, step: int) -> list[Path]:
        """``samples.png`` (rows: frame 0, true frame 1, sampled futures) and ``samples.gif`` of held-out pairs."""
        seed = self.config.seed if self.config is not None else 0
        pairs = batch[: len(SHAPE_CLASSES) * PICTURE_ROWS_PER_CLASS].cpu()
        return self._pictures(model, pairs, Path(out_dir), "samples", PICTURE_FUTURES, seed)

    def write_samples(
        self, model: nn.Module, config: TrainConfig, out_dir: Path, count: int, seed: int
    ) -> tuple[list[Path], str]:
        """``pyvidgen sample cross-conv``: ``sampled.png`` and ``sampled.gif``, two held-out images per class.

        ``count`` is the total number of sampled futures, shared among the images (at least one each).

        Returns:
            (written paths, a summary line with the held-out velocity KL of a quick evaluation).
        """
        self.config = config
        dataset = self._velocity_set(config)
        items = class_items(dataset, PICTURE_ROWS_PER_CLASS)
        pairs = torch.cat(items)
        futures = max(1, count // pairs.shape[0])
        paths = self._pictures(model, pairs, Path(out_dir), "sampled", futures, seed)
        net = unwrap(model)
        device = next(net.parameters()).device
        quick = velocity_kl_by_class(_sampler(net), dataset, per_class=20, samples=5, seed=seed, device=device)
        per_class = ", ".join(f"{name} {quick[f'velocity_kl_{name}']:.3f}" for name in SHAPE_CLASSES)
        line = (
            f"sampled {futures} futures of each of {pairs.shape[0]} held-out images (seed {seed}); "
            f"velocity KL {quick['velocity_kl']:.3f} nats ({per_class}) on 20 images x 5 futures per class"
        )
        return paths, line
