"""The ConvLSTM as popular PyTorch implementations write it: the baseline of the layer benchmark.

Per time step and layer: concatenate ``[x_t, h]`` on the channel axis, one convolution to the 4C
gate pre-activations, ``torch.split`` into i, f, g, o, then eager ``torch.sigmoid``/``torch.tanh``
and the cell update, with zero initial states. The parameterisation matches
:class:`pyvidgen.nn.ConvLSTM` without peepholes and with equal input and hidden kernel sizes (the
concatenated convolution's weight is ``cat([input_conv.weight, hidden_conv.weight], dim=1)``), so
:meth:`NaiveConvLSTM.load_from` makes both compute the same function.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pyvidgen.nn import ConvLSTM


class NaiveConvLSTMCell(nn.Module):
    """Gates from one convolution of ``cat([x, h])``, activations and update written out in eager ops.

    Shape:
        - x: (B, in_channels, H, W); state: (h, c), each (B, C, H, W)
        - output: (h, c), each (B, C, H, W)
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.conv = nn.Conv2d(
            in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2, bias=bias
        )

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = self.conv(torch.cat([x, h], dim=1))
        i, f, g, o = torch.split(gates, self.hidden_channels, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        return h, c


class NaiveConvLSTM(nn.Module):
    """Stacked unidirectional ConvLSTM looping over time and calling one cell per layer and step.

    Args:
        in_channels: input channels.
        hidden_channels: hidden channels, an int or one per layer.
        kernel_size: odd kernel size, an int or one per layer.
        num_layers: number of layers (inferred from the sequences when None, else 1).
        bias: gate biases.
        batch_first: (B, T, C, H, W) rather than (T, B, C, H, W).

    Shape:
        - x: (B, T, C_in, H, W) if batch_first else (T, B, C_in, H, W)
        - output: (outputs, final_states) as :class:`pyvidgen.nn.ConvLSTM` (unidirectional)
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int | Sequence[int],
        kernel_size: int | Sequence[int],
        num_layers: int | None = None,
        bias: bool = True,
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        if num_layers is None:
            num_layers = next((len(v) for v in (hidden_channels, kernel_size) if isinstance(v, Sequence)), 1)
        channels = list(hidden_channels) if isinstance(hidden_channels, Sequence) else [hidden_channels] * num_layers
        kernels = list(kernel_size) if isinstance(kernel_size, Sequence) else [kernel_size] * num_layers
        self.batch_first = batch_first
        ins = [in_channels, *channels[:-1]]
        self.cells = nn.ModuleList(
            NaiveConvLSTMCell(i, c, k, bias) for i, c, k in zip(ins, channels, kernels, strict=True)
        )

    @torch.no_grad()
    def load_from(self, model: ConvLSTM) -> NaiveConvLSTM:
        """Copy the weights of an equally shaped :class:`pyvidgen.nn.ConvLSTM` (no peepholes, unidirectional,
        equal input and hidden kernel sizes). Returns self."""
        if model.bidirectional or len(model.cells) != len(self.cells):
            raise ValueError("NaiveConvLSTM.load_from: needs a unidirectional ConvLSTM with as many layers")
        for naive, cell in zip(self.cells, model.cells, strict=True):
            if cell.peephole is not None or cell.kernel_size != cell.hidden_kernel_size:
                raise ValueError("NaiveConvLSTM.load_from: needs no peepholes and equal input and hidden kernel sizes")
            naive.conv.weight.copy_(torch.cat([cell.input_conv.weight, cell.hidden_conv.weight], dim=1))
            if naive.conv.bias is not None:
                naive.conv.bias.copy_(cell.input_conv.bias)
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        time_dim = 1 if self.batch_first else 0
        frames = list(x.unbind(time_dim))
        finals = []
        for cell in self.cells:
            batch, _, height, width = frames[0].shape
            zeros = frames[0].new_zeros(batch, cell.hidden_channels, height, width)
            state = (zeros, zeros)
            outputs = []
            for frame in frames:
                state = cell(frame, state)
                outputs.append(state[0])
            finals.append(state)
            frames = outputs
        return torch.stack(frames, dim=time_dim), finals
