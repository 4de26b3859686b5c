"""Public functional ops: ``torch.library`` custom ops in the ``pyvidgen`` namespace with autograd.

Each op runs on the backend in force (see :func:`pyvidgen.set_backend`).
"""

from pyvidgen.ops.conv_lstm_gates import conv_lstm_gates
from pyvidgen.ops.flow_smoothness import flow_smoothness, flow_smoothness_grad
from pyvidgen.ops.flow_warp import PADDING_MODES, flow_warp
from pyvidgen.ops.multiplicative_unit import multiplicative_unit

__all__ = [
    "PADDING_MODES",
    "conv_lstm_gates",
    "flow_smoothness",
    "flow_smoothness_grad",
    "flow_warp",
    "multiplicative_unit",
]
