"""What the image models' training tasks (``vae``, ``draw``) share: data, evaluation, pictures.

A model trained here is a latent-variable model of binarised images that exposes two methods:

- ``negative_elbo(x, generator=None) -> (B,)``: the negative evidence lower bound of each image,
  -E_q[log p(x | z)] + KL(q(z | x) || p(z)), in nats per image, estimated with one reparameterised
  sample (an upper bound on -log p(x) in expectation);
- ``nll_estimate(x, k, generator=None) -> (B,)``: the importance-weighted estimate of -log p(x) with
  k samples from q(z | x) (Burda et al. 2015), in nats per image; tighter than the negative ELBO
  and exact as k -> infinity.

Both take x of shape (B, 1, H, W) with values in {0, 1}. For pictures the models also expose
``sample(n, generator=None) -> (n, 1, H, W)`` and, optionally, ``reconstruct(x) -> (B, 1, H, W)``
(Bernoulli means in [0, 1]).

Task options (``TrainConfig.options``, CLI ``--option KEY=VALUE``):

- ``k``: importance samples of the evaluation's NLL estimate (default 100);
- ``mnist``: a folder holding MNIST IDX image files (``train-images-idx3-ubyte[.gz]`` and
  ``t10k-images-idx3-ubyte[.gz]``) or one IDX image file (then its last 10% is held out for
  evaluation); without it the tasks train on :class:`pyvidgen.data.BinarizedDigits`;
- ``binarize``: ``stochastic`` (default), ``threshold`` or ``none``;
- ``size``: image side of the generated digits (default 28).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from pyvidgen.data import BinarizedDigits, MNISTImages
from pyvidgen.data.moving_digits import _MASK64, _splitmix64
from pyvidgen.training.loop import TrainConfig
from pyvidgen.training.media import video_grid

__all__ = [
    "DEFAULT_EVAL_K",
    "BinarizedImageTask",
    "batch_generator",
    "evaluate_images",
    "find_mnist_files",
    "image_dataset",
    "save_image_grid",
    "unwrap",
]

DEFAULT_EVAL_K = 100
TRAIN_LENGTH = 1_000_000  # generated digits: effectively never repeats within a run
_MNIST_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
}
_HELD_OUT_FRACTION = 0.1


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _binarize_option(config: TrainConfig) -> str | None:
    value = config.options.get("binarize", "stochastic")
    return None if value is None or str(value).lower() == "none" else str(value)


def find_mnist_files(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """The (training, test) MNIST image files under ``path``.

    Args:
        path: a folder with ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte`` (each plain or
            ``.gz``; the ``train-images.idx3-ubyte`` spelling too), or one IDX image file.

    Returns:
        (training file, test file); the test file is None when ``path`` is a single file.

    Raises:
        FileNotFoundError: nothing at ``path``, or a folder missing one of the two files (the message
            lists the names looked for).
    """
    path = Path(path)
    if path.is_file():
        return path, None
    if not path.is_dir():
        raise FileNotFoundError(f"mnist: no such file or folder: {str(path)!r}")
    found = {}
    for split, names in _MNIST_NAMES.items():
        candidates = [path / (name + suffix) for name in names for suffix in ("", ".gz")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            raise FileNotFoundError(
                f"mnist: {str(path)!r} holds none of {', '.join(c.name for c in candidates)} ({split} images)"
            )
        found[split] = hit
    return found["train"], found["test"]


def image_dataset(config: TrainConfig, split: str, eval_length: int = 0) -> Dataset:
    """The training or held-out image set the options choose (see the module docstring).

    Args:
        config: the run's configuration (``seed`` and ``options``).
        split: ``"train"`` or ``"test"``.
        eval_length: how many held-out images to generate (generated digits only; a file's test
            set is used whole).

    Returns:
        a data set of float32 (1, H, W) images.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    binarize = _binarize_option(config)
    mnist = config.options.get("mnist")
    if mnist:
        train_file, test_file = find_mnist_files(mnist)
        if test_file is not None:
            # Different binarisation streams for the two files, so no image pairs up across them by chance.
            return MNISTImages(
                train_file if split == "train" else test_file, binarize=binarize, seed=config.seed + (split == "test")
            )
        whole = MNISTImages(train_file, binarize=binarize, seed=config.seed)
        count = len(whole)
        held = max(1, math.ceil(count * _HELD_OUT_FRACTION)) if count > 1 else 0
        indices = range(count - held) if split == "train" else range(count - held, count)
        return Subset(whole, indices)
    size = int(config.options.get("size", 28))
    length = TRAIN_LENGTH if split == "train" else eval_length
    return BinarizedDigits(length, split=split, seed=config.seed, size=size, binarize=binarize)


@torch.no_grad()
def evaluate_images(model: nn.Module, batches: list[Tensor], k: int = DEFAULT_EVAL_K, seed: int = 0) -> dict:
    """Held-out likelihood figures of a model with ``negative_elbo`` and ``nll_estimate``.

    Args:
        model: the model (or its DDP wrapper), see the module docstring for the two methods.
        batches: (B, 1, H, W) binary images.
        k: importance samples per image of the NLL estimate.
        seed: seed of the evaluation's samples, so that two evaluations of one model agree.

    Returns:
        ``{"neg_elbo_nats": mean negative ELBO per image (an upper bound on -log p(x); lower is better),
        "nll_nats": mean importance-weighted NLL estimate per image with k samples (tighter),
        "nll_k": k, "images": how many images}``; NaN figures when ``batches`` is empty.
    """
    model = unwrap(model)
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    neg_elbo, nll, count = 0.0, 0.0, 0
    for batch in batches:
        x = batch.to(device)
        neg_elbo += model.negative_elbo(x, generator=generator).double().sum().item()
        nll += model.nll_estimate(x, k, generator=generator).double().sum().item()
        count += x.shape[0]
    if count == 0:
        return {"neg_elbo_nats": math.nan, "nll_nats": math.nan, "nll_k": k, "images": 0}
    return {"neg_elbo_nats": neg_elbo / count, "nll_nats": nll / count, "nll_k": k, "images": count}


def batch_generator(batch: Tensor, seed: int = 0) -> torch.Generator:
    """A generator for a training step's noise, seeded by the batch's content and the run's seed.

    The loop's batches are a function of (seed, step), so noise drawn from this generator is too: a run
    resumed from a checkpoint draws exactly the noise the uninterrupted run drew (the global generator
    would restart from the seed on resume).

    Args:
        batch: (B, ...) the step's images in [0, 1] (on any device).
        seed: the run's seed.

    Returns:
        a ``torch.Generator`` on ``batch``'s device.
    """
    levels = (batch.detach().flatten().float() * 255).round().to(torch.int64)
    position = torch.arange(levels.numel(), device=levels.device, dtype=torch.int64)
    # Integer arithmetic wraps mod 2^64, so the checksum is the same whatever order the sum runs in.
    checksum = int(((levels + 1) * (position * 0x9E3779B1 + 1)).sum().item())
    mixed = _splitmix64((checksum & _MASK64) ^ _splitmix64(seed & _MASK64))
    return torch.Generator(batch.device).manual_seed(mixed & ((1 << 63) - 1))


def save_image_grid(path: str | os.PathLike, images: Tensor, columns: int | None = None) -> Path:
    """Tile images into one PNG (white lines between tiles; blank tiles fill the last row).

    Args:
        path: output file.
        images: (n, C, H, W) with C = 1 or 3, values in [0, 1]; n >= 1.
        columns: tiles per row (default: ceil(sqrt(n))).

    Returns:
        ``path`` as a Path.
    """
    import imageio.v3 as iio

    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be (n, C, H, W) with n >= 1, got shape {tuple(images.shape)}")
    n = images.shape[0]
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    padded = torch.zeros(rows * columns, *images.shape[1:])
    padded[:n] = images.detach().float().cpu()
    path = Path(path)
    # Each row of tiles is a "video" of `columns` frames for media.video_grid.
    iio.imwrite(path, video_grid(list(padded.view(rows, columns, *images.shape[1:]))))
    return path


class BinarizedImageTask:
    """Base of the ``vae`` and ``draw`` training tasks (the Task protocol of :mod:`pyvidgen.training.loop`).

    A subclass sets ``name`` and ``default_lr`` and implements ``make_model(config)``; it may override
    ``build_optimizer`` and ``loss``. Data, evaluation (negative ELBO and k-sample NLL on held-out
    images), training pictures and ``pyvidgen sample`` come from here. Options: see the module docstring.
    """

    name = "images"
    default_lr: dict[str, float] = {}
    samples_shown = 64

    def __init__(self) -> None:
        self.config: TrainConfig | None = None

    # -- what a subclass provides --
    def make_model(self, config: TrainConfig) -> nn.Module:
        raise NotImplementedError

    # -- the Task protocol --
    def build_model(self, config: TrainConfig) -> nn.Module:
        self.config = config  # evaluate() reads k and the seed from it
        return self.make_model(config)

    def lr(self, config: TrainConfig) -> float:
        return config.lr if config.lr is not None else self.default_lr.get(config.preset, 1e-3)

    def build_optimizer(self, model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=self.lr(config))

    def train_dataset(self, config: TrainConfig) -> Dataset:
        return image_dataset(config, "train")

    def eval_dataset(self, config: TrainConfig) -> Dataset:
        return image_dataset(config, "test", eval_length=config.eval_batches * config.batch_size)

    def noise_generator(self, batch: Tensor) -> torch.Generator:
        """The generator of a training step's noise (see `batch_generator`): resumed runs continue exactly."""
        return batch_generator(batch, self.config.seed if self.config is not None else 0)

    def loss(self, model: nn.Module, batch: Tensor) -> Tensor:
        """Mean negative ELBO per image, in nats (what ``train`` minimises).

        Note: this calls ``negative_elbo`` on the unwrapped model, which bypasses DDP's forward; a
        task whose model may run under DDP overrides it to go through ``model(batch)``.
        """
        return unwrap(model).negative_elbo(batch, generator=self.noise_generator(batch)).mean()

    def importance_samples(self, config: TrainConfig | None) -> int:
        return int(config.options.get("k", DEFAULT_EVAL_K)) if config is not None else DEFAULT_EVAL_K

    def evaluate(self, model: nn.Module, batches: list[Tensor]) -> dict[str, float]:
        seed = self.config.seed if self.config is not None else 0
        return evaluate_images(model, batches, k=self.importance_samples(self.config), seed=seed)

    @torch.no_grad()
    def _pictures(self, model: nn.Module, batch: Tensor | None, out_dir: Path, count: int, seed: int, stem: str):
        model = unwrap(model)
        device = next(model.parameters()).device
        generator = torch.Generator(device).manual_seed(seed)
        paths = [save_image_grid(out_dir / f"{stem}.png", model.sample(count, generator=generator).cpu())]
        if batch is not None and hasattr(model, "reconstruct"):
            shown = batch[: min(batch.shape[0], 8)].to(device)
            recon = model.reconstruct(shown).cpu()
            # Row 1: held-out images; row 2: their reconstructions.
            pairs = torch.cat((shown.cpu(), recon))
            recon_name = "reconstructions.png" if stem == "samples" else f"{stem}_reconstructions.png"
            paths.append(save_image_grid(out_dir / recon_name, pairs, columns=shown.shape[0]))
        return paths

    def save_samples(self, model: nn.Module, batch: Tensor, out_dir: Path, step: int) -> list[Path]:
        """``samples.png`` (model samples) and ``reconstructions.png`` (held-out images over their reconstructions)."""
        # The same latents at every evaluation, so successive pictures show the model improving.
        seed = self.config.seed if self.config is not None else 0
        return self._pictures(model, batch, Path(out_dir), self.samples_shown, seed=seed, stem="samples")

    def write_samples(
        self, model: nn.Module, config: TrainConfig, out_dir: Path, count: int, seed: int
    ) -> tuple[list[Path], str]:
        """``pyvidgen sample``: ``sampled.png`` (``count`` samples), ``sampled_reconstructions.png`` (held-out images).

        Returns:
            (written paths, a summary line with the held-out negative ELBO of those images).
        """
        self.config = config
        test = image_dataset(config, "test", eval_length=min(count, 64))
        n = min(len(test), 64)
        batch = torch.stack([test[i] for i in range(n)]) if n else None
        paths = self._pictures(model, batch, Path(out_dir), count, seed, stem="sampled")
        line = f"sampled {count} images (seed {seed})"
        if batch is not None:
            device = next(unwrap(model).parameters()).device
            generator = torch.Generator(device).manual_seed(seed)
            with torch.no_grad():
                value = unwrap(model).negative_elbo(batch.to(device), generator=generator).mean().item()
            line += f"; held-out negative ELBO {value:.2f} nats per image on {n} test images"
        return paths, line
