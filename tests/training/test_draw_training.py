"""The DRAW task: train and sample from the CLI (checkpoint, metrics, pictures, the GIF), resume, options."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import torch

from pyvidgen.models.draw import build_draw
from pyvidgen.nn import DrawNoAttention
from pyvidgen.training.draw import READ_COLOR, WRITE_COLOR, DRAWTask, _box, save_draw_gif
from pyvidgen.training.loop import TrainConfig, load_checkpoint, train

RUN = [sys.executable, "-m", "pyvidgen.cli.main"]
# Few glimpses keep the CLI runs to seconds (the small preset's LSTMs are kept).
TINY = ["--option", "glimpses=2", "--option", "k=2"]


def _config(tmp_path, **overrides) -> TrainConfig:
    base = dict(
        task="draw",
        steps=3,
        batch_size=4,
        out=str(tmp_path / "run"),
        eval_every=100,
        eval_batches=1,
        progress=False,
        options={"glimpses": 2, "k": 2},
    )
    return TrainConfig(**{**base, **overrides})


def test_cli_train_and_sample(tmp_path):
    out = tmp_path / "cli"
    args = ["train", "draw", "--steps", "3", "--eval-every", "3", "--eval-batches", "1", "--batch-size", "8"]
    subprocess.run([*RUN, *args, *TINY, "--out", str(out), "--no-progress"], check=True, capture_output=True)
    for name in ("checkpoint.pt", "metrics.json", "samples.png", "reconstructions.png"):
        assert (out / name).is_file(), name
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert final["step"] == 3 and final["nll_k"] == 2 and 0 < final["nll_nats"] and 0 < final["neg_elbo_nats"]
    assert load_checkpoint(out / "checkpoint.pt")["task"] == "draw"
    sample = [*RUN, "sample", "draw", "--checkpoint", str(out / "checkpoint.pt"), "--count", "9", "--out", str(out)]
    done = subprocess.run(sample, check=True, capture_output=True, text=True)
    assert "sampled 9 images" in done.stdout and "draw.gif" in done.stdout
    gif = iio.imread(out / "draw.gif")  # (frames, H, W, 3): one frame per glimpse
    assert gif.shape == (2, 2 * 112 + 4, 4 * 112 + 3 * 4, 3)
    assert iio.imread(out / "sampled.png").ndim == 2


def test_resume_continues_exactly(tmp_path):
    straight = train(DRAWTask(), _config(tmp_path / "a", steps=4)).model
    train(DRAWTask(), _config(tmp_path / "b", steps=2))
    resumed = train(DRAWTask(), _config(tmp_path / "b", steps=4, resume=True)).model
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_options_choose_the_variant(tmp_path):
    task = DRAWTask()
    plain = task.build_model(_config(tmp_path, options={"attention": "false", "glimpses": 5}))
    assert isinstance(plain.heads, DrawNoAttention) and plain.config.glimpses == 5
    assert task.build_model(_config(tmp_path, options={})).config.glimpses == build_draw("small").config.glimpses
    assert task.build_optimizer(plain, _config(tmp_path)).defaults["lr"] == 1e-3


def test_boxes_are_drawn_where_the_window_is():
    frame = np.zeros((40, 40, 3), dtype=np.uint8)
    # Centre (4.5, 4.5), N delta = 4 in pixels of a 10 x 10 image: from 2.5 to 6.5, scaled by 4 -> 12 .. 28.
    _box(frame, torch.tensor([4.5, 4.5, 2.0, 1.0, 1.0]), 2, 4, READ_COLOR)
    assert (frame[12, 12:29] == READ_COLOR).all() and (frame[12:29, 28] == READ_COLOR).all()
    assert (frame[20, 20] == 0).all() and (frame[11] == 0).all()
    _box(frame, torch.tensor([-50.0, 4.5, 2.0, 1.0, 1.0]), 2, 4, WRITE_COLOR)  # wholly outside: nothing
    assert not (frame == WRITE_COLOR).all(-1).any()


def _near(frames: np.ndarray, color: tuple[int, int, int]) -> bool:
    """Whether some pixel has about ``color`` (a GIF's palette may shift colours a little)."""
    return bool((np.abs(frames[..., :3].astype(int) - np.array(color)) <= 8).all(-1).any())


def test_gif_of_both_rows(tmp_path):
    model = build_draw("small", glimpses=3)
    with torch.no_grad():  # windows inside the picture: a stride of about a pixel
        for layer in (model.heads.read_layer, model.heads.write_layer):
            layer.bias.copy_(torch.tensor([0.1, -0.1, 0.0, -3.0, 0.0]))
        steps = model.reconstruct_steps(torch.zeros(2, 1, 28, 28))
        _, generated = model.generate(2, return_steps=True)
    frames = iio.imread(save_draw_gif(tmp_path / "d.gif", model, [steps, generated]))
    assert frames.shape == (3, 2 * 112 + 4, 2 * 112 + 4, 3)
    assert _near(frames[:, :112], READ_COLOR) and _near(frames[:, :112], WRITE_COLOR)
    assert not _near(frames[:, 116:], READ_COLOR) and _near(frames[:, 116:], WRITE_COLOR)  # generation reads nothing
