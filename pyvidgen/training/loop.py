"""The training loop every model uses: one process or DistributedDataParallel under torchrun.

Under ``torchrun --nproc-per-node N`` (``WORLD_SIZE`` > 1) each rank trains a replica wrapped in
DistributedDataParallel (gloo on CPU, nccl on CUDA) on its own slice of the data; only rank 0
evaluates, writes checkpoints, metrics and pictures. Data order is a function of (seed, step,
rank), so a resumed run continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

import pyvidgen


@dataclass
class TrainConfig:
    """Options of a training run (the ``pyvidgen train`` flags)."""

    task: str
    preset: str = "small"
    steps: int = 1000
    batch_size: int = 16
    lr: float | None = None  # None: the task's default for the preset
    device: str = "cpu"
    backend: str = "auto"
    out: str = "runs/run"
    resume: bool = False
    eval_every: int = 250
    eval_batches: int = 8
    checkpoint_every: int = 250
    seed: int = 0
    workers: int = 0
    grad_clip: float = 1.0
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # task-specific (e.g. seq_len)


class Task(Protocol):
    """What the loop needs from a model family."""

    name: str

    def build_model(self, config: TrainConfig) -> nn.Module: ...

    def build_optimizer(self, model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer: ...

    def train_dataset(self, config: TrainConfig) -> Dataset: ...

    def eval_dataset(self, config: TrainConfig) -> Dataset: ...

    def loss(self, model: nn.Module, batch: Tensor) -> Tensor: ...

    def evaluate(self, model: nn.Module, batches: list[Tensor]) -> dict[str, float]: ...

    def save_samples(self, model: nn.Module, batch: Tensor, out_dir: Path, step: int) -> list[Path]: ...


class StepSampler(Sampler[int]):
    """Indices for steps ``start``.. of one rank: step s, rank r, slot i -> ((s * W + r) * B + i) mod N.

    Different ranks see different data, and the order does not depend on how often the run was
    interrupted and resumed.
    """

    def __init__(self, length: int, batch_size: int, start_step: int, steps: int, rank: int, world: int) -> None:
        self.length, self.batch_size = length, batch_size
        self.start_step, self.steps, self.rank, self.world = start_step, steps, rank, world

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.steps):
            base = (step * self.world + self.rank) * self.batch_size
            for i in range(self.batch_size):
                yield (base + i) % self.length

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step) * self.batch_size


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Distributed:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`train` (model, optimizer, step, config, metrics)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=False)


@dataclass
class TrainResult:
    """What :func:`train` returns: the final metrics and the trained (unwrapped) model."""

    metrics: dict[str, Any]
    model: nn.Module


def train(task: Task, config: TrainConfig, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train ``task``'s model as ``config`` says.

    Files in ``config.out`` (rank 0 only): ``checkpoint.pt`` (model, optimizer, step, config, eval
    history), ``metrics.json``, and the task's sample pictures, refreshed at every evaluation.
    """
    ddp = setup_distributed(config.device)
    device = torch.device(config.device if not config.device.startswith("cuda") else f"cuda:{ddp.local_rank}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    pyvidgen.set_backend(config.backend)
    torch.manual_seed(config.seed)  # same initial weights on every rank
    out = Path(config.out)
    if ddp.is_main:
        out.mkdir(parents=True, exist_ok=True)

    model = task.build_model(config).to(device)
    optimizer = task.build_optimizer(model, config)
    start_step, history = 0, []
    checkpoint_path = out / "checkpoint.pt"
    if config.resume and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path, map_location=str(device))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, history = state["step"], state.get("history", [])
    wrapped = nn.parallel.DistributedDataParallel(model) if ddp.world > 1 else model

    train_set = task.train_dataset(config)
    sampler = StepSampler(len(train_set), config.batch_size, start_step, config.steps, ddp.rank, ddp.world)
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers)
    eval_batches: list[Tensor] = []
    if ddp.is_main:
        eval_loader = DataLoader(task.eval_dataset(config), batch_size=config.batch_size, shuffle=False)
        eval_batches = [b for _, b in zip(range(config.eval_batches), eval_loader, strict=False)]

    def evaluate_and_save(step: int) -> None:
        model.eval()
        record = {"step": step, **task.evaluate(model, eval_batches)}
        history.append(record)
        task.save_samples(model, eval_batches[0], out, step)
        model.train()
        _atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "task": task.name,
                "config": asdict(config),
                "history": history,
            },
            checkpoint_path,
        )
        (out / "metrics.json").write_text(
            json.dumps({"task": task.name, "config": asdict(config), "history": history}, indent=2)
        )

    progress = None
    if ddp.is_main and config.progress:
        from tqdm.auto import tqdm

        progress = tqdm(
            total=config.steps, initial=start_step, desc=f"train {task.name}", unit="step", dynamic_ncols=True
        )
    model.train()
    step, seen, started, loss_value = start_step, 0, time.perf_counter(), math.nan
    # Optional: a task whose loss depends on the step (an annealed KL weight) is told which step comes next, so a
    # resumed run continues exactly.
    set_step = getattr(task, "set_step", None)
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        if set_step is not None:
            set_step(step)
        loss = task.loss(wrapped, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        seen += batch.shape[0] * ddp.world
        loss_value = loss.item()
        if on_step is not None:
            on_step(step, loss_value)
        if progress is not None:
            rate = seen / max(time.perf_counter() - started, 1e-9)
            progress.set_postfix(loss=f"{loss_value:.4g}", samples_per_s=f"{rate:.1f}")
            progress.update(1)
        if ddp.is_main and (step % config.eval_every == 0 or step == config.steps):
            evaluate_and_save(step)
    if progress is not None:
        progress.close()
    if ddp.is_main and (not history or history[-1]["step"] != step):
        evaluate_and_save(step)
    elapsed = time.perf_counter() - started
    result = {"step": step, "train_loss": loss_value, "seconds": elapsed, "samples_per_s": seen / max(elapsed, 1e-9)}
    if history:
        result.update({k: v for k, v in history[-1].items() if k != "step"})
    if ddp.is_main:
        (out / "metrics.json").write_text(
            json.dumps({"task": task.name, "config": asdict(config), "history": history, "final": result}, indent=2)
        )
    if ddp.world > 1:
        dist.barrier()
    return TrainResult(result, model)
