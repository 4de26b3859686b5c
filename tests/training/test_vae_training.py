"""The VAE training task and the helpers it shares with DRAW: CLI train/sample, resume, options, MNIST files."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyvidgen.data import BinarizedDigits, MNISTImages
from pyvidgen.models import build_vae
from pyvidgen.training.images import evaluate_images, find_mnist_files, image_dataset, save_image_grid
from pyvidgen.training.loop import TrainConfig, load_checkpoint, train
from pyvidgen.training.vae import VAETask


def _config(tmp_path, **overrides) -> TrainConfig:
    base = dict(
        task="vae",
        preset="small",
        steps=3,
        batch_size=8,
        out=str(tmp_path / "run"),
        eval_every=3,
        eval_batches=1,
        progress=False,
        options={"k": 4, "hidden": 32},  # a narrow MLP: these tests check plumbing, not learning
    )
    return TrainConfig(**{**base, **overrides})


def _write_idx(path, images: np.ndarray, compress: bool = False) -> None:
    n, rows, cols = images.shape
    raw = b"".join(v.to_bytes(4, "big") for v in (2051, n, rows, cols)) + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_cli_train_then_sample(tmp_path):
    out = tmp_path / "cli"
    run = [sys.executable, "-m", "pyvidgen.cli.main"]
    args = ["train", "vae", "--preset", "small", "--steps", "3", "--eval-every", "3", "--eval-batches", "1"]
    args += ["--batch-size", "8", "--option", "k=5", "--option", "hidden=32", "--out", str(out), "--no-progress"]
    subprocess.run([*run, *args], check=True, capture_output=True)
    for name in ("checkpoint.pt", "metrics.json", "samples.png", "reconstructions.png"):
        assert (out / name).is_file(), name
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert final["step"] == 3 and final["nll_k"] == 5 and final["images"] == 8
    # Fresh weights: every pixel costs about log 2 nats.
    assert 200 < final["nll_nats"] < 800 and 200 < final["neg_elbo_nats"] < 800
    assert load_checkpoint(out / "checkpoint.pt")["task"] == "vae"
    done = subprocess.run(
        [*run, "sample", "vae", "--checkpoint", str(out / "checkpoint.pt"), "--count", "12"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "sampled 12 images" in done.stdout and "held-out negative ELBO" in done.stdout
    assert (out / "sampled.png").is_file() and (out / "sampled_reconstructions.png").is_file()


def test_resume_continues_exactly(tmp_path):
    straight = train(VAETask(), _config(tmp_path / "a", steps=4, eval_every=100)).model
    train(VAETask(), _config(tmp_path / "b", steps=2, eval_every=100))
    resumed = train(VAETask(), _config(tmp_path / "b", steps=4, eval_every=100, resume=True)).model
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_options_choose_the_optimizer_and_the_model(tmp_path):
    task = VAETask()
    config = _config(tmp_path, options={"optimizer": "adagrad", "latent": 7, "hidden": 30})
    model = task.build_model(config)
    assert model.config.latent == 7 and model.config.hidden == 30
    optimizer = task.build_optimizer(model, config)
    assert isinstance(optimizer, torch.optim.Adagrad) and optimizer.param_groups[0]["lr"] == 0.02
    assert isinstance(task.build_optimizer(model, _config(tmp_path)), torch.optim.Adam)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        task.build_optimizer(model, _config(tmp_path, options={"optimizer": "sgd"}))
    with pytest.raises(ValueError, match="unknown preset 'big'"):
        task.build_model(_config(tmp_path, preset="big"))
    data = task.train_dataset(config)
    assert isinstance(data, BinarizedDigits) and data.split == "train"
    held_out = task.eval_dataset(config)
    assert held_out.split == "test" and len(held_out) == 8


def test_training_on_user_mnist_files(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    folder = tmp_path / "mnist"
    folder.mkdir()
    _write_idx(folder / "train-images-idx3-ubyte.gz", pixels[:20], compress=True)
    _write_idx(folder / "t10k-images-idx3-ubyte", pixels[20:])
    assert find_mnist_files(folder) == (folder / "train-images-idx3-ubyte.gz", folder / "t10k-images-idx3-ubyte")
    config = _config(tmp_path, steps=2, eval_every=2, options={"k": 2, "hidden": 32, "mnist": str(folder)})
    task = VAETask()
    assert isinstance(task.train_dataset(config), MNISTImages) and len(task.eval_dataset(config)) == 10
    result = train(task, config)
    assert math.isfinite(result.metrics["nll_nats"]) and result.metrics["images"] == 8
    # One file: its last 10% is held out.
    single = _config(tmp_path, options={"mnist": str(folder / "t10k-images-idx3-ubyte"), "binarize": "none"})
    train_part, test_part = image_dataset(single, "train"), image_dataset(single, "test")
    assert len(train_part) == 9 and len(test_part) == 1
    torch.testing.assert_close(test_part[0][0], torch.from_numpy(pixels[29].astype(np.float32) / 255))
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        (folder / "t10k-images-idx3-ubyte").unlink()
        find_mnist_files(folder)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_mnist_files(tmp_path / "nowhere")


def test_evaluate_images_and_the_grid_writer(tmp_path):
    import imageio.v3 as iio

    model = build_vae("small")
    batches = [BinarizedDigits(6, split="test").batch(range(6))]
    metrics = evaluate_images(model, batches, k=3, seed=1)
    assert set(metrics) == {"neg_elbo_nats", "nll_nats", "nll_k", "images"} and metrics["images"] == 6
    assert evaluate_images(model, batches, k=3, seed=1) == metrics  # seeded: repeatable
    assert math.isnan(evaluate_images(model, [], k=3)["nll_nats"])
    path = save_image_grid(tmp_path / "grid.png", torch.rand(10, 1, 28, 28), columns=4)
    assert iio.imread(path).shape == (3 * 30 - 2, 4 * 30 - 2)  # 3 rows of 4 tiles, 2-pixel gaps
    with pytest.raises(ValueError, match=r"\(n, C, H, W\)"):
        save_image_grid(tmp_path / "bad.png", torch.rand(28, 28))


def test_batch_generator_depends_on_the_batch_and_the_seed():
    from pyvidgen.training.images import batch_generator

    batch = BinarizedDigits(8, seed=0).batch(range(8))
    draw = lambda b, seed: torch.rand(4, generator=batch_generator(b, seed))  # noqa: E731
    assert torch.equal(draw(batch, 0), draw(batch.clone(), 0))
    assert not torch.equal(draw(batch, 0), draw(batch, 1))
    assert not torch.equal(draw(batch, 0), draw(batch.flip(0), 0))
