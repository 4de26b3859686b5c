"""A training run as one rank of a process group; a module of its own so that spawned processes can import it."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pyvidgen.training.loop import TrainConfig, train
from pyvidgen.training.st_ae import STAETask

TINY = {"seq_len": 4, "size": 32, "digits": 1}


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    """A few steps of the ST-AE task on small videos."""
    values = dict(
        task="st-ae",
        steps=3,
        batch_size=2,
        out=str(Path(tmp_path) / "run"),
        eval_every=2,
        eval_batches=1,
        progress=False,
        options=dict(TINY),
    )
    values.update(overrides)
    return TrainConfig(**values)


def run(rank: int, world: int, port: int, tmp: str) -> None:
    """Train as ``rank`` of ``world`` and save the final parameters to ``tmp/params-<rank>.pt``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    model = train(STAETask(), tiny_config(tmp, steps=3, eval_every=100)).model
    torch.save([p.detach() for p in model.parameters()], Path(tmp) / f"params-{rank}.pt")
    torch.distributed.destroy_process_group()
