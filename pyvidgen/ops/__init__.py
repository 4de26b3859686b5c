"""Public functional ops: ``torch.library`` custom ops in the ``pyvidgen`` namespace with autograd.

Each op runs on the backend in force (see :func:`pyvidgen.set_backend`). Every op is declared once
(:mod:`pyvidgen.ops._spec`); :data:`OPS` maps each op's name to its :class:`~pyvidgen.ops._define.DeclaredOp`,
from which the tests, ``pyvidgen check``, the benchmarks and gpu_check take what they need.
"""

from pyvidgen.ops._define import OPS
from pyvidgen.ops.conv_lstm_gates import conv_lstm_gates
from pyvidgen.ops.cross_conv2d import cross_conv2d
from pyvidgen.ops.draw_read import draw_read
from pyvidgen.ops.draw_write import draw_write
from pyvidgen.ops.flow_smoothness import flow_smoothness, flow_smoothness_grad
from pyvidgen.ops.flow_warp import PADDING_MODES, flow_warp
from pyvidgen.ops.masked_conv2d import masked_conv2d
from pyvidgen.ops.multiplicative_unit import multiplicative_unit

__all__ = [
    "OPS",
    "PADDING_MODES",
    "conv_lstm_gates",
    "cross_conv2d",
    "draw_read",
    "draw_write",
    "flow_smoothness",
    "flow_smoothness_grad",
    "flow_warp",
    "masked_conv2d",
    "multiplicative_unit",
]
