"""Convolutional LSTM (Shi et al. 2015) as used by Patraucean et al. 2015 and Video Pixel Networks.

The gate pre-activations are ``input_conv(x_t) + hidden_conv(h_{t-1})`` (channel blocks i, f, g, o);
:func:`pyvidgen.ops.conv_lstm_gates` turns them into ``(h_t, c_t)`` in one fused call. Following
Patraucean et al., the input and hidden convolutions may have different kernel sizes, only the
input convolution has a bias, the forget-gate bias starts at ``forget_bias`` and peepholes are off
by default.

:class:`ConvLSTM` runs each layer's input convolution for all time steps in one ``conv2d`` call on
(B*T, C, H, W), so the time loop only does the small hidden convolution and the fused gate update.
With a zero initial state the first step's hidden convolution is skipped (it would add zeros).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pyvidgen.ops import conv_lstm_gates
from pyvidgen.ops._checks import check_choice

State = tuple[Tensor, Tensor]
PEEPHOLE_SHAPES = ("channel", "pixel")


def _odd_kernel(owner: str, name: str, size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(k, int) and k > 0 and k % 2 == 1 for k in pair):
        raise ValueError(
            f"{owner}: {name} must be a positive odd int or a pair of them (for 'same' padding), got {size!r}"
        )
    return pair  # type: ignore[return-value]


def _check_input(owner: str, name: str, x: object, ndim: int, layout: str, channel_dim: int, channels: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{owner}: {name} must be a {ndim}-D tensor {layout}, got shape {tuple(x.shape)}")
    if x.shape[channel_dim] != channels:
        raise ValueError(
            f"{owner}: {name} must have {channels} channels (in_channels) in dim {channel_dim} of {layout}, "
            f"got {x.shape[channel_dim]} in shape {tuple(x.shape)}"
        )


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell: ``gates = input_conv(x) + hidden_conv(h)``, then the fused LSTM update.

    Args:
        in_channels: channels of the input x.
        hidden_channels: channels C of the hidden and cell states.
        kernel_size: odd kernel size of the input convolution (int or (kh, kw)).
        hidden_kernel_size: odd kernel size of the hidden convolution; ``kernel_size`` when None.
        peephole: learn peephole weights (w_ci, w_cf, w_co), initialised to zero.
        forget_bias: initial bias of the forget gate (the f block of ``input_conv.bias``); the other
            gate biases start at zero. Ignored when ``bias`` is False.
        bias: whether the input convolution has a bias (the hidden convolution never has one).
        peephole_shape: "channel": one weight per channel, (3, C, 1, 1); "pixel": one per channel and
            pixel, (3, C, H, W), which needs ``peephole_size``.
        peephole_size: (H, W) of the inputs, for ``peephole_shape="pixel"``.

    Attributes:
        input_conv: ``nn.Conv2d(in_channels, 4C, kernel_size)``, "same" padding.
        hidden_conv: ``nn.Conv2d(C, 4C, hidden_kernel_size, bias=False)``, "same" padding.
        peephole: the (3, C, 1, 1) or (3, C, H, W) parameter, or None.

    Shape:
        - x: (B, in_channels, H, W)
        - state: None (zeros) or (h, c), each (B, C, H, W)
        - output: (h, c), each (B, C, H, W)
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | Sequence[int],
        hidden_kernel_size: int | Sequence[int] | None = None,
        peephole: bool = False,
        forget_bias: float = 1.0,
        bias: bool = True,
        peephole_shape: str = "channel",
        peephole_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if in_channels < 1 or hidden_channels < 1:
            raise ValueError(
                f"{name}: in_channels and hidden_channels must be >= 1, got {in_channels}, {hidden_channels}"
            )
        kernel = _odd_kernel(name, "kernel_size", kernel_size)
        hidden_kernel = _odd_kernel(
            name, "hidden_kernel_size", kernel if hidden_kernel_size is None else hidden_kernel_size
        )
        check_choice(name, "peephole_shape", peephole_shape, PEEPHOLE_SHAPES)
        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        self.kernel_size, self.hidden_kernel_size = kernel, hidden_kernel
        self.forget_bias, self.peephole_shape = float(forget_bias), peephole_shape
        gates = 4 * hidden_channels
        self.input_conv = nn.Conv2d(in_channels, gates, kernel, padding=(kernel[0] // 2, kernel[1] // 2), bias=bias)
        self.hidden_conv = nn.Conv2d(
            hidden_channels, gates, hidden_kernel, padding=(hidden_kernel[0] // 2, hidden_kernel[1] // 2), bias=False
        )
        if self.input_conv.bias is not None:
            with torch.no_grad():
                self.input_conv.bias.zero_()
                self.input_conv.bias[hidden_channels : 2 * hidden_channels].fill_(self.forget_bias)
        if not peephole:
            self.register_parameter("peephole", None)
        elif peephole_shape == "channel":
            self.peephole = nn.Parameter(torch.zeros(3, hidden_channels, 1, 1))
        else:
            if peephole_size is None or len(peephole_size) != 2 or min(peephole_size) < 1:
                raise ValueError(f"{name}: peephole_shape='pixel' needs peephole_size=(H, W), got {peephole_size!r}")
            self.peephole = nn.Parameter(torch.zeros(3, hidden_channels, *peephole_size))

    def init_state(
        self,
        batch: int,
        height: int,
        width: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """Zero (h, c), each (batch, C, height, width); device and dtype default to the parameters'."""
        weight = self.hidden_conv.weight
        shape = (batch, self.hidden_channels, height, width)
        kwargs = {"device": device or weight.device, "dtype": dtype or weight.dtype}
        return torch.zeros(shape, **kwargs), torch.zeros(shape, **kwargs)

    def input_gates(self, x: Tensor) -> Tensor:
        """The input convolution: (N, in_channels, H, W) -> (N, 4C, H, W).

        N may be B*T: a layer runs it once over every time step of a sequence.
        """
        _check_input(type(self).__name__, "x", x, 4, "(N, C_in, H, W)", 1, self.in_channels)
        return self.input_conv(x)

    def step(self, input_gates: Tensor, state: State | None = None) -> State:
        """One time step from precomputed input gates.

        Args:
            input_gates: (B, 4C, H, W), ``input_gates(x_t)``.
            state: (h, c), each (B, C, H, W); None means zeros (the hidden convolution is then skipped).

        Returns:
            (h, c_next), each (B, C, H, W).
        """
        if state is None:
            batch, _, height, width = input_gates.shape
            c = input_gates.new_zeros(batch, self.hidden_channels, height, width)
            gates = input_gates
        else:
            h, c = self._check_state(state, input_gates)
            # In place on the fresh conv output (conv2d's backward does not need its output).
            gates = self.hidden_conv(h).add_(input_gates)
        return conv_lstm_gates(gates, c, self.peephole)

    @property
    def joint_kernel(self) -> bool:
        """Whether input and hidden convolutions have one kernel size, so they can run as one conv."""
        return self.kernel_size == self.hidden_kernel_size

    def joint_weight(self) -> Tensor:
        """(4C, in_channels + C, kh, kw): the input and hidden kernels side by side (needs ``joint_kernel``).

        ``conv(cat[x, h], joint_weight) = input_conv(x) + hidden_conv(h)`` in one convolution call,
        which on a CPU is faster than two convolutions (or one over all time steps) of the same work.
        """
        return torch.cat((self.input_conv.weight, self.hidden_conv.weight), dim=1)

    def joint_step(self, x: Tensor, state: State | None, weight: Tensor) -> State:
        """One time step with the joint convolution: ``weight`` from :meth:`joint_weight` (built once per sequence).

        Args:
            x: (B, in_channels, H, W).
            state: (h, c) or None (zeros: only the input part of the convolution runs).
            weight: (4C, in_channels + C, kh, kw).

        Returns:
            (h, c_next), each (B, C, H, W).
        """
        if state is None:
            return self.step(self.input_conv(x), None)
        h, c = self._check_state(state, x)
        gates = F.conv2d(torch.cat((x, h), dim=1), weight, self.input_conv.bias, padding=self.input_conv.padding)
        return conv_lstm_gates(gates, c, self.peephole)

    def forward(self, x: Tensor, state: State | None = None) -> State:
        """Args: x (B, in_channels, H, W); state None or (h, c), each (B, C, H, W). Returns (h, c)."""
        _check_input(type(self).__name__, "x", x, 4, "(B, C_in, H, W)", 1, self.in_channels)
        return self.step(self.input_conv(x), state)

    def _check_state(self, state: State, input_gates: Tensor) -> State:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"{type(self).__name__}: state must be None or a pair (h, c), got {type(state).__name__}")
        batch, _, height, width = input_gates.shape
        expected = (batch, self.hidden_channels, height, width)
        for name, t in zip(("h", "c"), state, strict=True):
            if not isinstance(t, Tensor) or tuple(t.shape) != expected:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(
                    f"{type(self).__name__}: state {name} must have shape (B, C, H, W) = {expected}, got {got}"
                )
        return state[0], state[1]

    def extra_repr(self) -> str:
        peephole = None if self.peephole is None else tuple(self.peephole.shape)
        return f"forget_bias={self.forget_bias}, peephole={peephole}"


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _per_layer(name: str, value: object, num_layers: int) -> list:
    """One entry per layer: a sequence lists them, anything else is repeated."""
    if _is_sequence(value):
        if len(value) != num_layers:
            raise ValueError(f"ConvLSTM: {name} has {len(value)} entries but num_layers is {num_layers}")
        return list(value)
    return [value] * num_layers


class ConvLSTM(nn.Module):
    """Stacked (optionally bidirectional) ConvLSTM over a sequence of feature maps.

    Args:
        in_channels: channels of the input frames.
        hidden_channels: hidden channels, one int for every layer or one per layer.
        kernel_size: odd input-convolution kernel size: an int for every layer, or a sequence with
            one entry per layer, each an int or an (kh, kw) pair (so ``(3, 5)`` means two layers).
        num_layers: number of stacked layers; when None, the length of the sequence arguments
            (which must agree), else 1.
        hidden_kernel_size: hidden-convolution kernel size (None = the layer's ``kernel_size``),
            one for every layer or one per layer.
        peephole: learn per-channel peephole weights (initialised to zero).
        forget_bias: initial forget-gate bias.
        bias: whether the input convolutions have a bias.
        batch_first: inputs and outputs are (B, T, C, H, W) rather than (T, B, C, H, W).
        bidirectional: add a backward direction per layer; its outputs are concatenated with the
            forward ones on the channel axis, and layer l+1 reads both.
        peephole_shape, peephole_size: as in :class:`ConvLSTMCell`.

    Attributes:
        cells: ``nn.ModuleList`` of :class:`ConvLSTMCell`, index ``layer * num_directions + direction``
            (direction 0 forward, 1 backward), the order of ``nn.LSTM``'s states.

    Shape:
        - x: (B, T, C_in, H, W) if batch_first else (T, B, C_in, H, W)
        - state: None (zeros) or a list of ``num_layers * num_directions`` pairs (h, c), each
          (B, C_l, H, W), in the order of ``cells``
        - outputs: the last layer's hidden states, (B, T, D*C_last, H, W) if batch_first else
          (T, B, D*C_last, H, W), D = 2 if bidirectional else 1 (forward channels first)
        - final_states: a list like ``state``: for each layer and direction, (h, c) after the last step
          that direction processed (t = T-1 forward, t = 0 backward)
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int | Sequence[int],
        kernel_size: int | Sequence[int | Sequence[int]],
        num_layers: int | None = None,
        hidden_kernel_size: int | Sequence[int | Sequence[int] | None] | None = None,
        peephole: bool = False,
        forget_bias: float = 1.0,
        bias: bool = True,
        batch_first: bool = True,
        bidirectional: bool = False,
        peephole_shape: str = "channel",
        peephole_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        per_layer = {
            "hidden_channels": hidden_channels,
            "kernel_size": kernel_size,
            "hidden_kernel_size": hidden_kernel_size,
        }
        if num_layers is None:
            lengths = {len(v) for v in per_layer.values() if _is_sequence(v)}
            if len(lengths) > 1:
                given = ", ".join(f"{k} has {len(v)}" for k, v in per_layer.items() if _is_sequence(v))
                raise ValueError(f"ConvLSTM: per-layer arguments disagree on the number of layers: {given}")
            num_layers = lengths.pop() if lengths else 1
        if num_layers < 1:
            raise ValueError(f"ConvLSTM: num_layers must be >= 1, got {num_layers}")
        channels, kernels, hidden_kernels = (_per_layer(k, v, num_layers) for k, v in per_layer.items())
        self.in_channels, self.hidden_channels = in_channels, channels
        self.num_layers, self.batch_first, self.bidirectional = num_layers, batch_first, bidirectional
        self.num_directions = 2 if bidirectional else 1
        cells = []
        layer_in = in_channels
        for layer in range(num_layers):
            for _ in range(self.num_directions):
                cells.append(
                    ConvLSTMCell(
                        layer_in,
                        channels[layer],
                        kernels[layer],
                        hidden_kernels[layer],
                        peephole=peephole,
                        forget_bias=forget_bias,
                        bias=bias,
                        peephole_shape=peephole_shape,
                        peephole_size=peephole_size,
                    )
                )
            layer_in = channels[layer] * self.num_directions
        self.cells = nn.ModuleList(cells)

    def forward(self, x: Tensor, state: Sequence[State] | None = None) -> tuple[Tensor, list[State]]:
        """Run the sequence through every layer.

        Args:
            x: (B, T, C_in, H, W) if batch_first else (T, B, C_in, H, W).
            state: None (zeros), or ``num_layers * num_directions`` pairs (h, c), each (B, C_l, H, W).

        Returns:
            (outputs, final_states): see the class docstring.
        """
        layout = "(B, T, C_in, H, W)" if self.batch_first else "(T, B, C_in, H, W)"
        _check_input("ConvLSTM", "x", x, 5, layout, 2, self.in_channels)
        if state is not None and len(state) != len(self.cells):
            raise ValueError(
                f"ConvLSTM: state must hold num_layers * num_directions = {len(self.cells)} pairs (h, c), "
                f"got {len(state)}"
            )
        time_dim = 1 if self.batch_first else 0
        steps = x.shape[time_dim]
        if steps == 0:
            raise ValueError(f"ConvLSTM: x must have at least one time step, got shape {tuple(x.shape)}")
        finals: list[State] = []
        seq = x
        for layer in range(self.num_layers):
            lead = seq.shape[:2]
            flat = seq.reshape(lead[0] * lead[1], *seq.shape[2:])
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                cell = self.cells[index]
                hs: list[Tensor] = [None] * steps  # type: ignore[list-item]
                cell_state = None if state is None else state[index]
                order = range(steps) if direction == 0 else range(steps - 1, -1, -1)
                # unbind, not x[:, t]: the backward of T selects would zero-fill and accumulate a
                # full-size gradient per step (O(T^2) traffic); unbind's is one stack.
                if cell.joint_kernel:
                    # Equal kernels: one convolution of cat[x_t, h] per step (measured faster on CPU
                    # than a separate input convolution, even one batched over all steps).
                    frames, weight = seq.unbind(time_dim), cell.joint_weight()
                    for t in order:
                        cell_state = cell.joint_step(frames[t], cell_state, weight)
                        hs[t] = cell_state[0]
                else:
                    # Different kernel sizes: the input convolution runs once over all B*T frames.
                    gates = cell.input_conv(flat).unflatten(0, lead).unbind(time_dim)
                    for t in order:
                        cell_state = cell.step(gates[t], cell_state)
                        hs[t] = cell_state[0]
                finals.append(cell_state)
                outputs.append(torch.stack(hs, dim=time_dim))
            seq = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
        return seq, finals

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, hidden_channels={self.hidden_channels}, num_layers={self.num_layers}, "
            f"batch_first={self.batch_first}, bidirectional={self.bidirectional}"
        )
