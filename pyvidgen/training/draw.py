"""Training task of DRAW (Gregor et al. 2015) on binarised digits, with or without attention.

Loss: the mean negative ELBO per image in nats (Bernoulli likelihood of the final canvas plus the KL of every
glimpse's latent). Evaluation on held-out images: the negative ELBO and the importance-weighted NLL estimate
with ``k`` samples of the whole latent sequence (:mod:`pyvidgen.training.images`). Pictures: a grid of samples
and, for ``pyvidgen sample draw``, a GIF of the canvas over the glimpses with the attention windows drawn on
it, the picture DRAW is known by.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pyvidgen.models.draw import DRAW, PRESETS, DrawSteps, build_draw
from pyvidgen.training.images import BinarizedImageTask, image_dataset, unwrap
from pyvidgen.training.loop import TrainConfig

# Adam, as in the paper; 1e-3 trains the small preset in minutes, the paper's network is steadier at 3e-4.
DEFAULT_LR = {"small": 1e-3, "paper": 3e-4}

# Pictures: each 28 x 28 canvas scaled up so that the attention windows are visible lines.
GIF_SCALE = 4
READ_COLOR = (40, 200, 40)  # green: where the encoder looks
WRITE_COLOR = (230, 40, 40)  # red: where the decoder draws
GIF_FRAME_MS = 120
GIF_HOLD_MS = 1500  # the finished pictures stay on screen a while before the loop restarts


# Sizes of the network a task option may override (``--option glimpses=32 --option read_n=5``).
SIZE_OPTIONS = ("glimpses", "read_n", "write_n", "encoder_size", "decoder_size", "z_size")


def _flag(value: object) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")


class DRAWTask(BinarizedImageTask):
    """``pyvidgen train draw``: DRAW on :class:`pyvidgen.data.BinarizedDigits` (or MNIST files a user has).

    Task options (``--option KEY=VALUE``), besides those of :mod:`pyvidgen.training.images` (``k``, ``mnist``,
    ``binarize``, ``size``): ``attention`` (true; false trains the paper's baseline that reads whole images
    and writes the whole canvas) and the sizes in :data:`SIZE_OPTIONS` (``glimpses`` T, ``read_n``, ...; default
    the preset's).
    """

    name = "draw"
    default_lr = DEFAULT_LR

    def make_model(self, config: TrainConfig) -> nn.Module:
        if config.preset not in PRESETS:
            raise ValueError(f"unknown preset {config.preset!r}; expected one of {', '.join(PRESETS)}")
        size = int(config.options.get("size", 28))
        overrides = {"attention": _flag(config.options.get("attention", True)), "height": size, "width": size}
        for field in SIZE_OPTIONS:
            if field in config.options:
                overrides[field] = int(config.options[field])
        return build_draw(config.preset, **overrides)

    def loss(self, model: nn.Module, batch: Tensor) -> Tensor:
        """Mean negative ELBO per image (nats); through ``model(batch)`` so a DDP wrapper syncs gradients.

        The reparameterisation noise comes from :meth:`noise_generator`, a function of the run's seed and the
        batch, so a run resumed from a checkpoint continues exactly as if it had never stopped.
        """
        return model(batch, self.noise_generator(batch)).mean()

    def write_samples(
        self, model: nn.Module, config: TrainConfig, out_dir: Path, count: int, seed: int
    ) -> tuple[list[Path], str]:
        """``pyvidgen sample draw``: the grid of ``count`` samples and of reconstructions, and ``draw.gif``.

        The GIF shows, glimpse by glimpse, the canvas ``sigmoid(c_t)``: top row, held-out digits being
        reconstructed, with the read window (green) and the write window (red); bottom row, digits generated
        from the prior, with the write window (generation reads nothing).
        """
        paths, line = super().write_samples(model, config, out_dir, count, seed)
        draw = unwrap(model)
        shown = 4
        test = image_dataset(config, "test", eval_length=shown)
        x = torch.stack([test[i] for i in range(min(shown, len(test)))])
        device = next(draw.parameters()).device
        generator = torch.Generator(device).manual_seed(seed)
        with torch.no_grad():
            reconstruction = draw.reconstruct_steps(x.to(device), generator)
            _, generation = draw.generate(shown, generator, return_steps=True)
        gif = save_draw_gif(Path(out_dir) / "draw.gif", draw, [reconstruction, generation])
        return [*paths, gif], line + f"; canvas over {draw.config.glimpses} glimpses in {gif.name}"


def _box(frame: np.ndarray, params: Tensor, n: int, scale: int, color: tuple[int, int, int]) -> None:
    """Draw an attention window on ``frame`` (H', W', 3) uint8, in place.

    ``params`` = (gx, gy, delta, sigma2, gamma) in 0-based pixels of the small image; the window spans the
    filter centres' extent ``(gx, gy) +- N delta / 2``. Pixel a of the small image covers
    ``[a scale, (a + 1) scale)`` of the frame, so position u maps to ``(u + 0.5) scale``. Edges outside the
    frame are not drawn; the others are clipped to it.
    """
    gx, gy, delta = params[:3].detach().tolist()
    half = n * delta / 2
    height, width = frame.shape[:2]

    def to_frame(u: float) -> int:
        return int(round((u + 0.5) * scale))

    x0, x1, y0, y1 = to_frame(gx - half), to_frame(gx + half), to_frame(gy - half), to_frame(gy + half)
    cx0, cx1, cy0, cy1 = max(x0, 0), min(x1, width - 1), max(y0, 0), min(y1, height - 1)
    if cx0 > cx1 or cy0 > cy1:
        return  # the window lies wholly outside the picture
    for y in (y0, y1):
        if 0 <= y < height:
            frame[y, cx0 : cx1 + 1] = color
    for x in (x0, x1):
        if 0 <= x < width:
            frame[cy0 : cy1 + 1, x] = color


def draw_frames(model: DRAW, steps: DrawSteps, scale: int = GIF_SCALE) -> np.ndarray:
    """RGB frames of each image's canvas after each glimpse, with the attention windows drawn on them.

    Args:
        model: the DRAW network (for the glimpse sizes).
        steps: from :meth:`DRAW.reconstruct_steps` or :meth:`DRAW.generate`; canvases (T, B, C, H, W).
        scale: nearest-neighbour upscaling of each canvas.

    Returns:
        (T, B, H * scale, W * scale, 3) uint8.
    """
    canvases = steps.canvases.detach().float().cpu().clamp(0, 1)
    if canvases.shape[2] == 1:
        canvases = canvases.expand(-1, -1, 3, -1, -1)
    canvases = canvases.repeat_interleave(scale, dim=3).repeat_interleave(scale, dim=4)
    frames = np.ascontiguousarray((canvases * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy())
    cfg = model.config
    for t in range(frames.shape[0]):
        for b in range(frames.shape[1]):
            if steps.read is not None:
                _box(frames[t, b], steps.read[t, b], cfg.read_n, scale, READ_COLOR)
            if steps.write is not None:
                _box(frames[t, b], steps.write[t, b], cfg.write_n, scale, WRITE_COLOR)
    return frames


def save_draw_gif(path: str | Path, model: DRAW, rows: list[DrawSteps], pad: int = 4) -> Path:
    """A looping GIF of :func:`draw_frames`: one row of pictures per entry of ``rows``, one frame per glimpse.

    Args:
        path: output file.
        model: the DRAW network.
        rows: :class:`DrawSteps` with the same T and the same number of images.
        pad: white pixels between pictures.

    Returns:
        ``path`` as a Path.
    """
    import imageio.v3 as iio

    drawn = [draw_frames(model, steps) for steps in rows]
    steps, count, height, width, _ = drawn[0].shape
    sheet = np.full((steps, len(drawn) * (height + pad) - pad, count * (width + pad) - pad, 3), 255, dtype=np.uint8)
    for r, frames in enumerate(drawn):
        for b in range(count):
            y, x = r * (height + pad), b * (width + pad)
            sheet[:, y : y + height, x : x + width] = frames[:, b]
    path = Path(path)
    iio.imwrite(path, sheet, duration=[GIF_FRAME_MS] * (steps - 1) + [GIF_HOLD_MS], loop=0)
    return path
