"""``pyvidgen train TASK`` and ``pyvidgen sample TASK``: train a paper's model, roll out from a checkpoint.

Examples::

    pyvidgen train st-ae --preset small --steps 2000 --out runs/st-ae
    torchrun --nproc-per-node 2 -m pyvidgen.cli.main train st-ae --steps 200 --out runs/ddp
    pyvidgen sample st-ae --checkpoint runs/st-ae/checkpoint.pt --frames 10
    pyvidgen train vpn --preset small --steps 600 --out runs/vpn
    pyvidgen train vpn --preset small --steps 600 --option spatial_dependencies=false --out runs/vpn-baseline
    pyvidgen sample vpn --checkpoint runs/vpn/checkpoint.pt --context 10 --frames 10
    pyvidgen train vae --preset paper --steps 6000 --batch-size 100 --out runs/vae
    pyvidgen train draw --preset small --out runs/draw
    pyvidgen train draw --preset small --option attention=false --out runs/draw-no-attention
    pyvidgen sample draw --checkpoint runs/draw/checkpoint.pt --count 64
    pyvidgen train cross-conv --preset small --steps 2500 --batch-size 32 --eval-every 500 --out runs/cc
    pyvidgen train cross-conv --preset small --steps 2500 --batch-size 32 --option deterministic=true --out runs/cc-det
    pyvidgen sample cross-conv --checkpoint runs/cc/checkpoint.pt --count 36
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch

# Task name -> "module:class", imported only when that task runs (each pulls in its model and data).
TASKS = {
    "st-ae": "pyvidgen.training.st_ae:STAETask",
    "vpn": "pyvidgen.training.vpn:VPNTask",
    "draw": "pyvidgen.training.draw:DRAWTask",
    "vae": "pyvidgen.training.vae:VAETask",
    "cross-conv": "pyvidgen.training.cross_conv:CrossConvTask",
}
TASK_NAMES = tuple(TASKS)


def make_task(name: str):
    """A fresh task object of ``name`` (one of :data:`TASK_NAMES`)."""
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def _parse_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE an int, a float, true/false or a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"options are KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    return key, value


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=TASK_NAMES)
    parser.add_argument("--preset", default="small", help="model size: small (CPU, minutes) or paper")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--lr", type=float, default=None, help="default: the preset's")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--backend", default="auto", choices=("auto", "reference", "cpp", "triton"))
    parser.add_argument("--out", default=None, metavar="DIR", help="default: runs/TASK")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt if it exists")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=10, help="frames per training video")
    parser.add_argument(
        "--option",
        action="append",
        type=_parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="a task option (repeatable), e.g. vpn: spatial_dependencies=false (the paper's baseline), size=64",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--no-cpu-tensor-cache",
        action="store_true",
        help="leave torch's CPU allocator alone (by default CPU tensors of 4 MiB or more reuse freed memory: "
        "pyvidgen.set_cache_all_cpu_tensors)",
    )


def run_train(args: argparse.Namespace) -> int:
    from pyvidgen._backend import _load_cpp
    from pyvidgen.output_cache import cache_all_cpu_tensors
    from pyvidgen.training.loop import TrainConfig, train

    config = TrainConfig(
        task=args.task,
        preset=args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        backend=args.backend,
        out=args.out or f"runs/{args.task}",
        resume=args.resume,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        checkpoint_every=args.eval_every,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
        options={"seq_len": args.seq_len, **dict(args.option)},
    )
    # Training is what the process is for: every step's large tensors (activations, gradients) reuse freed
    # memory instead of faulting fresh pages in (the small ST-AE's CPU step 382-477 -> 344-346 ms).
    with cache_all_cpu_tensors(not args.no_cpu_tensor_cache and _load_cpp()[0] is not None):
        result = train(make_task(args.task), config).metrics
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        print(json.dumps(result, indent=2))
        print(f"checkpoint, metrics and samples in {Path(config.out).resolve()}")
    return 0


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=TASK_NAMES)
    parser.add_argument("--checkpoint", required=True, metavar="PATH")
    parser.add_argument("--frames", type=int, default=10, help="frames to predict")
    parser.add_argument("--context", type=int, default=5, help="observed frames before the rollout")
    parser.add_argument("--videos", type=int, default=4, help="videos to roll out (video tasks: st-ae, vpn)")
    parser.add_argument(
        "--count", type=int, default=64, help="images to sample (image tasks: draw, vae; cross-conv: futures in all)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=None, metavar="DIR", help="default: the checkpoint's folder")


def run_sample(args: argparse.Namespace) -> int:
    from pyvidgen.training.loop import TrainConfig, load_checkpoint
    from pyvidgen.training.media import save_gif, save_png_grid

    state = load_checkpoint(args.checkpoint)
    if state.get("task", args.task) != args.task:
        print(f"pyvidgen sample: {args.checkpoint} is a {state['task']} checkpoint, not {args.task}", file=sys.stderr)
        return 2
    config = TrainConfig(**state["config"])
    task = make_task(args.task)
    model = task.build_model(config)
    model.load_state_dict(state["model"])
    model.eval()
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(task, "write_samples"):
        # Image models draw their own pictures (grids, and for DRAW the canvas over the glimpses).
        paths, line = task.write_samples(model, config, out, count=args.count, seed=args.seed)
        print(line)
        print(f"wrote {' and '.join(str(p) for p in paths)}")
        return 0
    videos = task.videos(config, args.videos, args.context + args.frames, args.seed)
    truth, predicted, line = task.sample(model, videos, args.context, args.frames, args.seed)
    rows = [v for pair in zip(truth, predicted, strict=True) for v in pair]
    png = save_png_grid(out / "rollout.png", rows)
    gif = save_gif(out / "rollout.gif", [torch.cat(list(pair), dim=-1) for pair in zip(truth, predicted, strict=True)])
    print(line)
    print(f"wrote {png} and {gif}")
    return 0
