"""``torch.nn`` modules built on :mod:`pyvidgen.ops`."""

from pyvidgen.nn.conv_lstm import ConvLSTM, ConvLSTMCell
from pyvidgen.nn.cross_conv import CrossConv2d
from pyvidgen.nn.draw_attention import DrawAttention, DrawNoAttention, GlimpseParams, glimpse_params
from pyvidgen.nn.flow import FlowWarp, HuberPenalty
from pyvidgen.nn.masked import MaskedConv2d
from pyvidgen.nn.multiplicative import MultiplicativeUnit, ResidualMultiplicativeBlock

__all__ = [
    "ConvLSTM",
    "ConvLSTMCell",
    "CrossConv2d",
    "DrawAttention",
    "DrawNoAttention",
    "FlowWarp",
    "GlimpseParams",
    "HuberPenalty",
    "MaskedConv2d",
    "MultiplicativeUnit",
    "ResidualMultiplicativeBlock",
    "glimpse_params",
]
