"""``pyvidgen info``: versions, build and available backends."""

from __future__ import annotations

import platform

import torch

import pyvidgen
from pyvidgen._backend import _load_cpp, available_backends, get_backend


def info_lines() -> list[str]:
    """Human-readable lines describing this installation."""
    lines = [
        f"pyvidgen {pyvidgen.__version__}  torch {torch.__version__}  python {platform.python_version()}",
        f"cpu threads: {torch.get_num_threads()}  cuda: {torch.cuda.is_available()}",
    ]
    try:
        import triton

        lines.append(f"triton {triton.__version__}")
    except ImportError:
        lines.append("triton: not installed")
    module, _ = _load_cpp()
    if module is not None:
        lines.append(f"_C: built ({module.cpu_capability} CPU code)")
    lines.append(f"backend in force: {get_backend()}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for name, why in available_backends(device).items():
            lines.append(f"  {device:4s} {name:9s} " + ("available" if not why else f"unavailable: {why}"))
    return lines


def run_info() -> int:
    print("\n".join(info_lines()))
    return 0
