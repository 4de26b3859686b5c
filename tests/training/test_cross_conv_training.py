"""The cross-conv task: train and sample from the CLI, exact resume through the KL annealing, options, and the
paper's velocity-KL evaluation on hand-built predictors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import imageio.v3 as iio
import pytest
import torch

from pyvidgen.data.shapes import SHAPE_CLASSES, Shapes
from pyvidgen.training.cross_conv import CrossConvTask, class_items, kl_weight_at, velocity_kl_by_class
from pyvidgen.training.loop import TrainConfig, load_checkpoint, train

RUN = [sys.executable, "-m", "pyvidgen.cli.main"]
# 16 x 16 frames and a tiny evaluation keep each run to seconds.
TINY = {"size": 16, "eval_images": 3, "samples": 2, "anneal_steps": 4}


def _config(tmp_path, **overrides) -> TrainConfig:
    base = dict(
        task="cross-conv",
        steps=3,
        batch_size=4,
        out=str(tmp_path / "run"),
        eval_every=100,
        eval_batches=1,
        progress=False,
        options=dict(TINY),
    )
    return TrainConfig(**{**base, **overrides})


def test_cli_train_and_sample(tmp_path):
    out = tmp_path / "cli"
    args = ["train", "cross-conv", "--steps", "3", "--eval-every", "3", "--eval-batches", "1", "--batch-size", "4"]
    options = [item for key, value in TINY.items() for item in ("--option", f"{key}={value}")]
    subprocess.run([*RUN, *args, *options, "--out", str(out), "--no-progress"], check=True, capture_output=True)
    for name in ("checkpoint.pt", "metrics.json", "samples.png", "samples.gif"):
        assert (out / name).is_file(), name
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert final["step"] == 3 and final["kl_nats"] > 0 and final["sse"] > 0
    for name in SHAPE_CLASSES:
        assert final[f"velocity_kl_{name}"] >= 0
    assert final["velocity_kl"] == pytest.approx(sum(final[f"velocity_kl_{n}"] for n in SHAPE_CLASSES) / 3)
    assert load_checkpoint(out / "checkpoint.pt")["task"] == "cross-conv"
    # Rows: frame 0, true frame 1, six sampled futures, for the first held-out pairs (a batch of four here); 16 x 16
    # tiles, 2-pixel lines.
    assert iio.imread(out / "samples.png").shape[:2] == (4 * 18 - 2, 8 * 18 - 2)
    sample = [*RUN, "sample", "cross-conv", "--checkpoint", str(out / "checkpoint.pt"), "--count", "12"]
    done = subprocess.run([*sample, "--out", str(out)], check=True, capture_output=True, text=True)
    assert "sampled 2 futures of each of 6 held-out images" in done.stdout and "velocity KL" in done.stdout
    png = iio.imread(out / "sampled.png")
    assert png.shape == (6 * 18 - 2, 4 * 18 - 2, 3)
    gif = iio.imread(out / "sampled.gif")  # frame 0 everywhere, then each cell's future; cells scaled 4x
    assert gif.shape[:3] == (2, 6 * 68 - 4, 3 * 68 - 4)


def test_resume_continues_exactly_through_the_annealing(tmp_path):
    straight = train(CrossConvTask(), _config(tmp_path / "a", steps=4)).model
    train(CrossConvTask(), _config(tmp_path / "b", steps=2))
    task = CrossConvTask()
    resumed = train(task, _config(tmp_path / "b", steps=4, resume=True)).model
    assert task.step == 3 and task.kl_weight() == pytest.approx(kl_weight_at(3, 1.0, 4))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_kl_weight_is_annealed_log_linearly_from_the_papers_start():
    assert kl_weight_at(0, 1.0, 100) == pytest.approx(1e-5)
    assert kl_weight_at(50, 1.0, 100) == pytest.approx(1e-5**0.5)
    assert kl_weight_at(100, 1.0, 100) == kl_weight_at(10**6, 1.0, 100) == 1.0
    assert kl_weight_at(0, 0.5, 0) == 0.5  # no annealing


def test_options_choose_the_model(tmp_path):
    task = CrossConvTask()
    baseline = task.build_model(_config(tmp_path, options={"deterministic": "true", "z_channels": 3}))
    assert baseline.config.deterministic and baseline.motion_encoder is None and baseline.latent_shape == (3, 9, 9)
    model = task.build_model(_config(tmp_path, options={"scales": "0.5,1", "variance": 0.1}))
    assert model.config.scales == (0.5, 1.0) and model.config.variance == 0.1 and not model.config.deterministic
    assert task.build_optimizer(model, _config(tmp_path)).defaults["lr"] == 1e-3
    assert len(task.eval_dataset(_config(tmp_path, eval_batches=2))) == 8
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        task.build_model(_config(tmp_path, preset="huge"))


def _shift(frames: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Content moved dx pixels right and dy down, zeros shifted in (as estimate_velocities shifts)."""
    r = max(abs(dx), abs(dy))
    padded = torch.nn.functional.pad(frames, (r, r, r, r))
    height, width = frames.shape[-2:]
    return padded[..., r - dy : r - dy + height, r - dx : r - dx + width]


def test_velocity_kl_of_a_perfect_predictor_is_near_zero_and_of_a_still_one_large():
    dataset = Shapes(1000, size=32, split="test", seed=3)
    items = class_items(dataset, 40)
    assert [len(i) for i in items] == [40, 40, 40]
    labels = {pairs[i, 0].numpy().tobytes(): label for label, pairs in enumerate(items) for i in range(len(pairs))}
    R = dataset.max_speed

    def perfect(frame0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Moves each shape by a velocity drawn from its class's true law."""
        out = []
        for image in frame0:
            law = dataset.velocity_distribution(labels[image.numpy().tobytes()]).flatten()
            cell = int(torch.multinomial(law, 1, generator=generator))
            out.append(_shift(image, cell % (2 * R + 1) - R, cell // (2 * R + 1) - R))
        return torch.stack(out)

    good = velocity_kl_by_class(perfect, dataset, samples=10, items=items)
    assert set(good) == {f"velocity_kl_{n}" for n in SHAPE_CLASSES} | {"velocity_kl"}
    assert good["velocity_kl"] < 0.05 and max(good.values()) < 0.08
    # The z = 0 failure: every future the same, here the shape standing still (velocity (0, 0), never in the law).
    still = velocity_kl_by_class(lambda frame0, generator: frame0.clone(), dataset, samples=2, items=items)
    assert still["velocity_kl"] > 5
    # One plausible velocity for every triangle is far from the law too: the 2R - 1 cells it leaves out get only the
    # smoothing's share of 1e-3 / (2R + 1)^2 each.
    one = velocity_kl_by_class(lambda frame0, generator: _shift(frame0, 1, 1), dataset, samples=2, items=items)
    empty, hit = 1e-3 / (2 * R + 1) ** 2, 1 - 1e-3 + 1e-3 / (2 * R + 1) ** 2
    expected = (math.log(1 / (2 * R * hit)) + (2 * R - 1) * math.log(1 / (2 * R * empty))) / (2 * R)
    assert one["velocity_kl_triangle"] == pytest.approx(expected)
