"""pyvidgen: fused PyTorch kernels for generative video and image models.

Quick start::

    import torch, pyvidgen
    x = torch.randn(2, 8, 32, 32, requires_grad=True)
    flow = torch.randn(2, 2, 32, 32, requires_grad=True)
    y = pyvidgen.ops.flow_warp(x, flow, padding_mode="border")
    with pyvidgen.backend("reference"):
        y_ref = pyvidgen.ops.flow_warp(x, flow, padding_mode="border")
"""

from pyvidgen import nn, ops
from pyvidgen._backend import BACKENDS, available_backends, backend, get_backend, set_backend
from pyvidgen.output_cache import (
    cache_all_cpu_tensors,
    empty_output_cache,
    output_cache_info,
    set_cache_all_cpu_tensors,
    set_output_cache_limit,
)

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "__version__",
    "available_backends",
    "backend",
    "cache_all_cpu_tensors",
    "empty_output_cache",
    "get_backend",
    "nn",
    "ops",
    "output_cache_info",
    "set_backend",
    "set_cache_all_cpu_tensors",
    "set_output_cache_limit",
]
