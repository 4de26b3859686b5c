"""Benchmark registry: which ops are benchmarked, at which shapes, against which providers.

Every op declared with a :class:`~pyvidgen.ops._spec.Bench` entry is registered here, from its
declaration: shapes, targets, baselines and inputs (the op's sample builder) are the op's own.

A *provider* is one way of computing an op, timed side by side with the others:

* ``eager``: the reference implementation (:mod:`pyvidgen.kernels.reference`) called directly;
  autograd gives its backward.
* ``compiled``: ``torch.compile`` of that same function (static shapes, warmed up before timing so
  compile time is excluded; the default inductor backend).
* ``<baseline>`` / ``<baseline>_compiled``: other ways users write the op today, eager and compiled
  (flow_warp: ``grid_sample``, the ``F.grid_sample`` formulation).
* ``cpp``: the public op under ``pyvidgen.backend("cpp")`` (CPU only).
* ``triton``: the public op under ``pyvidgen.backend("triton")``; CUDA only, never interpreted.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pyvidgen._backend import available_backends, backend, triton_interpreted
from pyvidgen.ops import OPS
from pyvidgen.ops._define import DeclaredOp
from pyvidgen.ops._spec import Bench, Shape, Target

__all__ = ["MODES", "REGISTRY", "OpBench", "Shape", "Target", "Unavailable", "get", "provider", "select_shapes"]

MODES = ("forward", "fwd+bwd")
_MODE_ALIASES = {"forward": "forward", "fwd": "forward", "fwd+bwd": "fwd+bwd", "forward+backward": "fwd+bwd"}


class Unavailable(Exception):
    """A provider cannot run here; the message says why (shown as the skip reason)."""


def default_bytes(inputs: Sequence[Tensor], outputs: Sequence[Tensor], mode: str) -> int:
    """Compulsory memory traffic of one call, for effective GB/s.

    Forward: every input read once plus every output written once. Forward+backward adds the
    backward pass: the output gradients read, the inputs read again (they are saved for backward)
    and one gradient per input written. Re-reads that caches absorb (bilinear taps, stencil
    neighbours) and the intermediates of unfused implementations are not counted, so the same
    byte count divides every provider's time: GB/s compares providers as the times do, and says how
    close the fastest gets to the machine's bandwidth.
    """
    read_inputs = sum(t.nbytes for t in inputs)
    written = sum(t.nbytes for t in outputs)
    forward = read_inputs + written
    if mode == "forward":
        return forward
    return forward + written + read_inputs + read_inputs


@dataclass(frozen=True)
class OpBench:
    """Registry entry of one op: its declaration and benchmark entry.

    Arguments are the op's own (schema order: tensors, then options, of the benchmarked variant);
    every tensor argument is differentiable in fwd+bwd mode.
    """

    declared: DeclaredOp
    bench: Bench

    @property
    def name(self) -> str:
        return self.declared.name

    @property
    def shapes(self) -> tuple[Shape, ...]:
        return self.bench.shapes

    @property
    def shape_doc(self) -> str:
        return self.bench.shape_doc

    @property
    def targets(self) -> tuple[Target, ...]:
        return self.bench.targets

    def options(self, variant: str | None = None, dims: Sequence[int] | None = None) -> dict[str, Any]:
        """The options of ``variant`` (default: the benchmarked one), at size ``dims`` when given."""
        return self.declared.options(variant or self.bench.variant, dims)

    def make_inputs(
        self,
        dims: Sequence[int],
        device: torch.device,
        dtype: torch.dtype,
        gen: torch.Generator,
        variant: str | None = None,
        magnitude: float | None = None,
    ) -> tuple:
        """The op's arguments at size ``dims`` (``variant``, default the benchmarked one; ``magnitude``, default
        the op's typical one)."""
        return self.declared.sample(
            dims, dtype=dtype, device=device, generator=gen, variant=variant or self.bench.variant, magnitude=magnitude
        )

    def reference(self, *args: Any) -> Any:
        return self.declared.reference(*args)

    def op(self, *args: Any) -> Any:
        return self.declared(*args)

    def bytes_moved(self, inputs: Sequence[Tensor], outputs: Sequence[Tensor], mode: str) -> int | None:
        counter = self.bench.bytes_moved
        if counter is None:
            return None
        return (default_bytes if counter == "default" else counter)(inputs, outputs, mode)

    def providers(self) -> list[str]:
        """Provider names in table order: the baselines first, then pyvidgen's backends."""
        names = ["eager", "compiled"]
        for base in self.bench.baselines:
            names += [base, f"{base}_compiled"]
        return names + [name for name in ("cpp", "triton") if name in self.declared.spec.backends]

    def comparisons(self) -> list[str]:
        """Providers that every row gets a speedup against."""
        return [name for name in self.providers() if name not in ("cpp", "triton")]


# Every declared op that has a benchmark entry, in declaration order.
REGISTRY: dict[str, OpBench] = {name: OpBench(op, op.spec.bench) for name, op in OPS.items() if op.spec.bench}


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
        return Provider(name, entry.op, functools.partial(backend, name))
    compiled = name.endswith("compiled")
    base = name.removesuffix("_compiled") if name != "compiled" else "eager"
    fn = entry.reference if base == "eager" else entry.bench.baselines[base]
    if compiled:
        # Static shapes: each benchmarked shape gets the code specialised for it, as a user
        # compiling a model of fixed size would.
        fn = torch.compile(fn, dynamic=False)
    return Provider(name, fn, contextlib.nullcontext, compiled)
