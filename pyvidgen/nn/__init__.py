"""``torch.nn`` modules built on :mod:`pyvidgen.ops`."""

from pyvidgen.nn.flow import FlowWarp, HuberPenalty

__all__ = ["FlowWarp", "HuberPenalty"]
