"""Benchmark registry: which ops are benchmarked, at which shapes, against which providers.

A *provider* is one way of computing an op, timed side by side with the others:

* ``eager``: the reference implementation (:mod:`pyvidgen.kernels.reference`) called directly;
  autograd gives its backward.
* ``compiled``: ``torch.compile`` of that same function (static shapes, warmed up before timing so
  compile time is excluded; the default inductor backend).
* ``<baseline>`` / ``<baseline>_compiled``: other ways users write the op today, eager and compiled
  (flow_warp: ``grid_sample``, the ``F.grid_sample`` formulation).
* ``cpp``: the public op under ``pyvidgen.backend("cpp")`` (CPU only).
* ``triton``: the public op under ``pyvidgen.backend("triton")``; CUDA only, never interpreted.

Adding an op is one :func:`register` call with an :class:`OpBench` entry (plus its input builder),
and a five-line ``benchmarks/test_bench_<op>.py`` that names it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pyvidgen import ops
from pyvidgen._backend import available_backends, backend, triton_interpreted
from pyvidgen.kernels.reference import conv_lstm_gates as ref_conv_lstm_gates
from pyvidgen.kernels.reference import flow_smoothness as ref_flow_smoothness
from pyvidgen.kernels.reference import flow_warp as ref_flow_warp
from pyvidgen.kernels.reference import multiplicative_unit as ref_multiplicative_unit

MODES = ("forward", "fwd+bwd")
_MODE_ALIASES = {"forward": "forward", "fwd": "forward", "fwd+bwd": "fwd+bwd", "forward+backward": "fwd+bwd"}

InputBuilder = Callable[[tuple[int, ...], torch.device, torch.dtype, torch.Generator], tuple[Tensor, ...]]


class Unavailable(Exception):
    """A provider cannot run here; the message says why (shown as the skip reason)."""


@dataclass(frozen=True)
class Shape:
    """One benchmarked problem size.

    Attributes:
        dims: the size of the op's main input (its meaning is the op's ``shape_doc``).
        quick: part of the ``--quick`` subset.
        target: a shape that a performance target of the op is stated at.
    """

    dims: tuple[int, ...]
    quick: bool = False
    target: bool = False

    @property
    def label(self) -> str:
        return "x".join(str(d) for d in self.dims)


@dataclass(frozen=True)
class Target:
    """A performance goal: ``provider`` at least ``min_speedup`` times faster than ``baseline``.

    Checked at the op's ``target`` shapes in ``mode`` (and reported, never enforced).
    """

    provider: str
    baseline: str
    min_speedup: float
    mode: str = "fwd+bwd"


def default_bytes(inputs: Sequence[Tensor], output: Tensor, mode: str) -> int:
    """Compulsory memory traffic of one call, for effective GB/s.

    Forward: every input read once plus the output written once. Forward+backward adds the
    backward pass: the output gradient read, the inputs read again (they are saved for backward)
    and one gradient per input written. Re-reads that caches absorb (bilinear taps, stencil
    neighbours) and the intermediates of unfused implementations are not counted, so the same
    byte count divides every provider's time: GB/s compares providers as the times do, and says how
    close the fastest gets to the machine's bandwidth.
    """
    read_inputs = sum(t.nbytes for t in inputs)
    forward = read_inputs + output.nbytes
    if mode == "forward":
        return forward
    return forward + output.nbytes + read_inputs + read_inputs


@dataclass(frozen=True)
class OpBench:
    """Registry entry of one op.

    Attributes:
        name: the op's name (``pyvidgen.ops.<name>``).
        reference: the reference function, called as ``reference(*inputs, **kwargs)``.
        op: the public op, called the same way.
        make_inputs: ``(dims, device, dtype, generator) -> tensors``: the positional inputs, all of
            them differentiable (fwd+bwd gives every one a gradient).
        shapes: benchmarked sizes.
        shape_doc: what ``Shape.dims`` is, e.g. "x (B, C, H, W)".
        kwargs: fixed keyword arguments of every call (non-tensor options).
        baselines: other eager formulations, each also benchmarked compiled as ``<name>_compiled``.
        targets: performance goals reported next to the table.
        bytes_moved: ``(inputs, output, mode) -> bytes`` for GB/s, or None where GB/s does not apply
            (compute-bound ops).
    """

    name: str
    reference: Callable[..., Tensor]
    op: Callable[..., Tensor]
    make_inputs: InputBuilder
    shapes: tuple[Shape, ...]
    shape_doc: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    baselines: Mapping[str, Callable[..., Tensor]] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    bytes_moved: Callable[[Sequence[Tensor], Tensor, str], int] | None = default_bytes

    def providers(self) -> list[str]:
        """Provider names in table order: the baselines first, then pyvidgen's backends."""
        names = ["eager", "compiled"]
        for base in self.baselines:
            names += [base, f"{base}_compiled"]
        return names + ["cpp", "triton"]

    def comparisons(self) -> list[str]:
        """Providers that every row gets a speedup against."""
        return [name for name in self.providers() if name not in ("cpp", "triton")]


REGISTRY: dict[str, OpBench] = {}


def register(entry: OpBench) -> OpBench:
    """Add ``entry`` to :data:`REGISTRY` (by name; registering again replaces it)."""
    REGISTRY[entry.name] = entry
    return entry


def get(name: str) -> OpBench:
    """The registry entry of ``name``; ValueError naming the known ops otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"no benchmark registered for op {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def canonical_mode(mode: str) -> str:
    """The canonical name of ``mode``: "forward" or "fwd+bwd" (also accepts "fwd" and "forward+backward")."""
    if mode not in _MODE_ALIASES:
        raise ValueError(f"unknown mode {mode!r}; expected forward or fwd+bwd")
    return _MODE_ALIASES[mode]


def select_shapes(entry: OpBench, quick: bool) -> list[Shape]:
    """The shapes of one run: the quick subset or all of them."""
    return [s for s in entry.shapes if s.quick or not quick]


@dataclass(frozen=True)
class Provider:
    """A runnable provider: call ``fn(*inputs)`` inside ``context()``."""

    name: str
    fn: Callable[..., Tensor]
    context: Callable[[], contextlib.AbstractContextManager]
    compiled: bool = False


def _backend_reason(backend: str, device: torch.device) -> str:
    if backend == "triton":
        if triton_interpreted():
            # Interpreted kernels run one program at a time in Python: their times mean nothing.
            return "interpreted Triton (TRITON_INTERPRET=1) is never benchmarked"
        if device.type != "cuda":
            return f"the triton backend is benchmarked on CUDA only, got {device}"
    return available_backends(device)[backend]


def provider(entry: OpBench, name: str, device: torch.device | str) -> Provider:
    """Build provider ``name`` of ``entry`` for ``device``.

    Raises:
        Unavailable: the provider cannot run here (the message is the reason).
        ValueError: ``name`` is not a provider of this op.
    """
    device = torch.device(device)
    if name not in entry.providers():
        raise ValueError(f"{entry.name}: unknown provider {name!r}; expected one of {', '.join(entry.providers())}")
    if name in ("cpp", "triton"):
        why = _backend_reason(name, device)
        if why:
            raise Unavailable(why)
        return Provider(name, functools.partial(entry.op, **entry.kwargs), functools.partial(backend, name))
    compiled = name.endswith("compiled")
    base = name.removesuffix("_compiled") if name != "compiled" else "eager"
    fn = entry.reference if base == "eager" else entry.baselines[base]
    if compiled:
        # Static shapes: each benchmarked shape gets the code specialised for it, as a user
        # compiling a model of fixed size would.
        fn = torch.compile(fn, dynamic=False)
    return Provider(name, functools.partial(fn, **entry.kwargs), contextlib.nullcontext, compiled)


def _randn(shape: Sequence[int], gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
    # Drawn on the CPU so that a seed gives the same numbers on every device.
    return torch.randn(tuple(shape), generator=gen).to(device=device, dtype=dtype)


def _flow_warp_inputs(
    dims: tuple[int, ...], device: torch.device, dtype: torch.dtype, gen: torch.Generator
) -> tuple[Tensor, ...]:
    batch, _, height, width = dims
    x = _randn(dims, gen, device, dtype)
    # Displacements of a few pixels, as between neighbouring video frames: near the edges some
    # taps leave the image, so the padding path is exercised too.
    flow = _randn((batch, 2, height, width), gen, device, dtype) * 2.0
    return x, flow


def _flow_smoothness_inputs(
    dims: tuple[int, ...], device: torch.device, dtype: torch.dtype, gen: torch.Generator
) -> tuple[Tensor, ...]:
    # Differences of order one around delta = 1: both Huber branches are taken.
    return (_randn(dims, gen, device, dtype),)


register(
    OpBench(
        name="flow_warp",
        reference=ref_flow_warp.flow_warp,
        op=ops.flow_warp,
        make_inputs=_flow_warp_inputs,
        shape_doc="x (B, C, H, W); flow (B, 2, H, W)",
        shapes=(
            Shape((16, 64, 64, 64), quick=True, target=True),
            Shape((4, 32, 128, 128)),
            Shape((16, 3, 64, 64), quick=True),
            Shape((1, 64, 32, 32), quick=True),
        ),
        kwargs={"padding_mode": "zeros", "normalized": False},
        baselines={"grid_sample": ref_flow_warp.flow_warp_grid_sample},
        # The goal for the CPU kernel, stated against the F.grid_sample formulation.
        targets=(
            Target("cpp", "grid_sample", 3.0),
            Target("cpp", "grid_sample_compiled", 1.0),
        ),
    )
)

register(
    OpBench(
        name="flow_smoothness",
        reference=ref_flow_smoothness.flow_smoothness,
        op=ops.flow_smoothness,
        make_inputs=_flow_smoothness_inputs,
        shape_doc="flow (B, 2, H, W)",
        shapes=(Shape((16, 2, 64, 64), quick=True, target=True), Shape((4, 2, 256, 256))),
        kwargs={"delta": 1.0},
    )
)


def _conv_lstm_gates_inputs(
    dims: tuple[int, ...], device: torch.device, dtype: torch.dtype, gen: torch.Generator
) -> tuple[Tensor, ...]:
    batch, channels, height, width = dims
    # Pre-activations of a few units either side of 0: the sigmoids and tanhs are neither linear nor saturated.
    gates = _randn((batch, 4 * channels, height, width), gen, device, dtype) * 2.0
    return gates, _randn(dims, gen, device, dtype)


def _conv_lstm_step_reference(gates: Tensor, c: Tensor) -> Tensor:
    """The reference step with both outputs folded into one tensor (see :func:`_conv_lstm_step`)."""
    h, c_next = ref_conv_lstm_gates.conv_lstm_gates(gates, c)
    return h + c_next


def _conv_lstm_step(gates: Tensor, c: Tensor) -> Tensor:
    """``h + c_next`` of the op: the runner times ops of one output, and inside an unrolled ConvLSTM both
    outputs receive a gradient (h from the layer above, c_next from the next step), which the sum
    reproduces. Every provider pays for the same extra add."""
    h, c_next = ops.conv_lstm_gates(gates, c)
    return h + c_next


def _conv_lstm_bytes(inputs: Sequence[Tensor], output: Tensor, mode: str) -> int:
    """Traffic of the fused step (the folding add is not counted): forward reads gates and c and writes h and
    c_next; backward reads grad_h, grad_c_next, gates and c and writes grad_gates and grad_c."""
    gates, c = inputs
    forward = gates.nbytes + 3 * c.nbytes
    if mode == "forward":
        return forward
    return forward + 2 * c.nbytes + 2 * (gates.nbytes + c.nbytes)


def _multiplicative_unit_inputs(
    dims: tuple[int, ...], device: torch.device, dtype: torch.dtype, gen: torch.Generator
) -> tuple[Tensor, ...]:
    batch, channels, height, width = dims
    pre = _randn((batch, 4 * channels, height, width), gen, device, dtype) * 2.0
    return pre, _randn(dims, gen, device, dtype)


# The CPU kernel's goals for both gate ops: elementwise ops bound by exp/tanh, where fusion saves the
# intermediates and the backward's recomputation saves storing the activations.
_GATE_TARGETS = (Target("cpp", "eager", 3.0), Target("cpp", "compiled", 1.0))

register(
    OpBench(
        name="conv_lstm_gates",
        reference=_conv_lstm_step_reference,
        op=_conv_lstm_step,
        make_inputs=_conv_lstm_gates_inputs,
        shape_doc="c (B, C, H, W); gates (B, 4C, H, W); no peepholes (as Patraucean et al.)",
        shapes=(
            Shape((16, 64, 32, 32), quick=True, target=True),
            Shape((4, 256, 16, 16)),
            # The spatio-temporal autoencoder's memory (Patraucean et al.): 45 channels.
            Shape((16, 45, 32, 32), quick=True),
        ),
        targets=_GATE_TARGETS,
        bytes_moved=_conv_lstm_bytes,
    )
)

register(
    OpBench(
        name="multiplicative_unit",
        reference=ref_multiplicative_unit.multiplicative_unit,
        op=ops.multiplicative_unit,
        make_inputs=_multiplicative_unit_inputs,
        shape_doc="h (B, C, H, W); pre (B, 4C, H, W)",
        shapes=(Shape((16, 128, 32, 32), quick=True, target=True), Shape((4, 256, 16, 16))),
        targets=_GATE_TARGETS,
    )
)
