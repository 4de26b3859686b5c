"""The training loop on the ST-AE task: files, resume, DistributedDataParallel, the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

from pyvidgen._backend import available_backends
from pyvidgen.training.loop import StepSampler, load_checkpoint, train
from pyvidgen.training.st_ae import STAETask
from tests.training import ddp_worker

_config = ddp_worker.tiny_config


def test_step_sampler_disjoint_ranks_and_resumable():
    full = list(StepSampler(1000, 4, 0, 5, rank=0, world=2))
    other = list(StepSampler(1000, 4, 0, 5, rank=1, world=2))
    assert not set(full) & set(other)
    assert list(StepSampler(1000, 4, 3, 5, rank=0, world=2)) == full[3 * 4 :]


def test_train_writes_checkpoint_metrics_and_samples(tmp_path):
    result = train(STAETask(), _config(tmp_path))
    out = tmp_path / "run"
    for name in ("checkpoint.pt", "metrics.json", "samples.png", "samples.gif"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["step"] for r in metrics["history"]] == [2, 3]
    for key in ("next_frame_mse", "copy_last_mse", "rollout_mse", "next_frame_vs_copy_last"):
        assert key in metrics["final"] and metrics["final"][key] >= 0
    assert result.metrics["step"] == 3
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 3 and state["task"] == "st-ae"


def test_resume_continues_exactly(tmp_path):
    straight = train(STAETask(), _config(tmp_path / "a", steps=4, eval_every=100)).model
    train(STAETask(), _config(tmp_path / "b", steps=2, eval_every=100))
    resumed = train(STAETask(), _config(tmp_path / "b", steps=4, eval_every=100, resume=True)).model
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_end_with_identical_parameters(tmp_path):
    mp.spawn(ddp_worker.run, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"params-{r}.pt") for r in (0, 1))
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    # Only rank 0 wrote the run's files; the replicas trained on different data yet agree.
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    single = train(STAETask(), _config(tmp_path / "single", steps=3, eval_every=100)).model
    assert any(not torch.equal(a, b.detach()) for a, b in zip(first, single.parameters(), strict=True))


@pytest.mark.slow
def test_cli_train_under_torchrun_and_sample(tmp_path):
    out = tmp_path / "cli"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "pyvidgen.cli.main",
        "train",
        "st-ae",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "4",
        "--eval-every",
        "2",
        "--eval-batches",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "checkpoint.pt").is_file() and "next_frame_mse" in done.stdout
    sample = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyvidgen.cli.main",
            "sample",
            "st-ae",
            "--checkpoint",
            str(out / "checkpoint.pt"),
            "--frames",
            "3",
            "--context",
            "2",
            "--videos",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sample.returncode == 0, sample.stderr[-2000:]
    assert (out / "rollout.png").is_file() and (out / "rollout.gif").is_file()
    assert "copy-last-frame" in sample.stdout


@pytest.mark.skipif(bool(available_backends("cpu")["cpp"]), reason="the C++ extension (and its cache) is not built")
@pytest.mark.parametrize(("flags", "cached"), [((), 1), (("--no-cpu-tensor-cache",), 0)])
def test_cli_train_caches_large_cpu_tensors_while_it_trains(monkeypatch, tmp_path, flags, cached):
    import pyvidgen
    import pyvidgen.training.loop as loop
    from pyvidgen.cli.main import main

    seen = []

    def fake_train(task, config):
        seen.append(pyvidgen.output_cache_info()["all_cpu_tensors"])
        return SimpleNamespace(metrics={})

    monkeypatch.setattr(loop, "train", fake_train)
    assert main(["train", "st-ae", "--steps", "1", "--out", str(tmp_path), "--no-progress", *flags]) == 0
    assert seen == [cached]
    assert pyvidgen.output_cache_info()["all_cpu_tensors"] == 0  # torch's allocator again afterwards
