"""The training loop on the VPN task: files and metrics, exact resume, the baseline option, train/sample CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from pyvidgen.training.loop import TrainConfig, load_checkpoint, train
from pyvidgen.training.vpn import VPNTask


def _config(tmp_path, **overrides) -> TrainConfig:
    options = {"seq_len": 4, "size": 12, "context": 3, "future": 2, **overrides.pop("options", {})}
    base = dict(
        task="vpn",
        preset="small",
        steps=3,
        batch_size=2,
        out=str(tmp_path / "run"),
        eval_every=2,
        eval_batches=1,
        progress=False,
        options=options,
    )
    return TrainConfig(**{**base, **overrides})


def test_train_writes_likelihoods_and_samples(tmp_path):
    result = train(VPNTask(), _config(tmp_path))
    out = tmp_path / "run"
    for name in ("checkpoint.pt", "metrics.json", "samples.png", "samples.gif"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    final = metrics["final"]
    assert final["nll_nats_per_frame"] > 0 and 0 < final["nll_bits_per_dim"] < final["nll_nats_per_frame"]
    assert load_checkpoint(out / "checkpoint.pt")["task"] == "vpn" and result.metrics["step"] == 3


def test_resume_continues_exactly(tmp_path):
    straight = train(VPNTask(), _config(tmp_path / "a", steps=4, eval_every=100)).model
    train(VPNTask(), _config(tmp_path / "b", steps=2, eval_every=100))
    resumed = train(VPNTask(), _config(tmp_path / "b", steps=4, eval_every=100, resume=True)).model
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_baseline_option_drops_the_spatial_dependencies(tmp_path):
    model = VPNTask().build_model(_config(tmp_path, options={"spatial_dependencies": False}))
    assert model.first is None and not model.config.spatial_dependencies


def test_cli_train_and_sample(tmp_path):
    out = tmp_path / "cli"
    run = [sys.executable, "-m", "pyvidgen.cli.main"]
    train_args = ["train", "vpn", "--steps", "2", "--batch-size", "2", "--eval-every", "2", "--eval-batches", "1"]
    options = ["--option", "size=12", "--option", "context=2", "--option", "future=1", "--seq-len", "3"]
    subprocess.run([*run, *train_args, *options, "--out", str(out), "--no-progress"], check=True, capture_output=True)
    sample = [*run, "sample", "vpn", "--checkpoint", str(out / "checkpoint.pt"), "--context", "2", "--frames", "2"]
    done = subprocess.run([*sample, "--videos", "2"], check=True, capture_output=True, text=True)
    assert "sampled 2 frames after 2" in done.stdout and (out / "rollout.png").is_file()
    wrong = subprocess.run(
        [*run, "sample", "st-ae", "--checkpoint", str(out / "checkpoint.pt")], capture_output=True, text=True
    )
    assert wrong.returncode == 2 and "is a vpn checkpoint, not st-ae" in wrong.stderr
