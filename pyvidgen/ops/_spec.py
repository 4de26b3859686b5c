"""The declaration of an op: everything the library needs to know about it, in one place.

An op module (``pyvidgen/ops/<op>.py``) builds one :class:`OpSpec` and hands it to
:func:`pyvidgen.ops._define.define`. From it come the custom ops ``pyvidgen::<op>`` and
``pyvidgen::<op>_backward`` (and the schemas of the C++ entry points ``pyvidgen_cpp::<op>_forward``
/ ``_backward``), backend dispatch, the fake functions, autograd, autocast, input checks, and for
the tools around the op: ``pyvidgen check``, the benchmark registry, the pytest-benchmark suite,
``benchmarks/gpu_check.py`` and the shared op tester of the test suite.

Implementations are found by name, so the declaration does not list them:

* reference: ``pyvidgen.kernels.reference.<op>`` functions ``<op>(*args)`` and
  ``<op>_backward(*grads, *args, needs_grad)``;
* triton: ``pyvidgen.kernels.triton.<op>`` launchers ``<op>_fwd(*args)`` and
  ``<op>_bwd(*grads, *args, needs_grad)``;
* cpp: ``torch.ops.pyvidgen_cpp.<op>_forward`` and ``<op>_backward`` (same arguments), registered
  by ``csrc/ops/<op>.cpp``.

``args`` are the op's arguments in schema order; ``grads`` one gradient per output; ``needs_grad``
one flag per tensor argument. A backward returns one gradient per tensor argument (None, or an empty
tensor, where not needed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

AUTOCAST_POLICIES = ("promote", "float32", "lower")


@dataclass(frozen=True)
class Variant:
    """A named configuration that samples, tests, checks and benchmarks cover.

    Attributes:
        name: short label, e.g. "reflection/normalized".
        options: values of the op's non-tensor arguments (the rest come from ``OpSpec.defaults``).
        inputs: keyword arguments of the sample builder that shape the tensors (e.g. the peephole kind).
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Samples:
    """How to draw the op's inputs, and at which sizes and magnitudes.

    Attributes:
        build: ``build(dims, generator, magnitude, **variant.inputs)`` -> one float64 CPU tensor (or
            None for an absent optional) per tensor argument, in schema order, drawn from ``generator``.
            ``magnitude`` scales the values to what the op sees in practice (1) or when training
            explodes (up to 3e38).
        variants: the configurations worth covering; the first is the default one.
        dims: small sizes for every backend (interpreted Triton included): 1s, primes, odd sizes.
        large_dims: more sizes for compiled backends: several work tiles, many channels, W >= 16.
        empty_dims: sizes with a zero-sized batch (or another empty dimension).
        check_dims: the size ``pyvidgen check`` and gpu_check's first check use.
        magnitudes: the values ``magnitude`` takes in property tests (the first is the typical one).
        property_ranges: an inclusive (low, high) per entry of ``dims`` for the hypothesis tests of the
            compiled backends (realistic: W >= 16 so the vector paths run, 3 channels as well as 64).
        gradcheck_dims: the size of float64 gradcheck and of interpreted opchecks; default the first of
            ``dims`` with every entry at most 3 (2 for interpreted Triton).
        options: ``options(dims)`` -> values of options that follow from the sizes (a DRAW glimpse size
            ``N``, an output size ``H, W`` bound by int options); they override ``OpSpec.defaults`` and the
            variant's options, since the tensors drawn at ``dims`` must agree with them.
    """

    build: Callable[..., tuple[Tensor | None, ...]]
    variants: tuple[Variant, ...]
    dims: tuple[tuple[int, ...], ...]
    empty_dims: tuple[tuple[int, ...], ...]
    check_dims: tuple[int, ...]
    property_ranges: tuple[tuple[int, int], ...]
    large_dims: tuple[tuple[int, ...], ...] = ()
    magnitudes: tuple[float, ...] = (1.0,)
    gradcheck_dims: tuple[int, ...] | None = None
    options: Callable[[tuple[int, ...]], Mapping[str, Any]] | None = None

    def variant(self, name: str | None) -> Variant:
        """The variant called ``name`` (the first one for None)."""
        if name is None:
            return self.variants[0]
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise ValueError(f"no variant {name!r}; known: {', '.join(v.name for v in self.variants)}")


@dataclass(frozen=True)
class Shape:
    """One benchmarked problem size.

    Attributes:
        dims: the sample builder's ``dims`` (their meaning is the benchmark's ``shape_doc``).
        quick: part of the ``--quick`` subset.
        target: a shape that a performance target of the op is stated at.
        variant: the variant timed at this shape (default: the benchmark's).
        magnitude: the sample builder's ``magnitude`` (default: the first of ``Samples.magnitudes``); for
            flow_warp the flow's reach in pixels, which decides how scattered the taps are.
        tags: extra fields of the rows timed at this shape (a sweep point's side, channels, elements); not
            part of the shape's identity.
    """

    dims: tuple[int, ...]
    quick: bool = False
    target: bool = False
    variant: str | None = None
    magnitude: float | None = None
    tags: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        label = "x".join(str(d) for d in self.dims)
        if self.variant:
            label += f"/{self.variant}"
        # Points that differ only in magnitude (flow_warp's sweep) must not share a label: rows group by it.
        return label if self.magnitude is None else f"{label}/m={self.magnitude:g}"


@dataclass(frozen=True)
class Target:
    """A performance goal: ``provider`` at least ``min_speedup`` times faster than ``baseline``.

    Checked at the op's ``target`` shapes in ``mode`` (and reported, never enforced); with ``shape``, only at
    the target shape of that label.
    """

    provider: str
    baseline: str
    min_speedup: float
    mode: str = "fwd+bwd"
    shape: str | None = None


@dataclass(frozen=True)
class CopyGoal:
    """A memory-bound op's goal: its kernels reach ``fraction`` of the machine's copy bandwidth.

    The bandwidth is that of ``dst.copy_(src)`` on buffers well beyond the last-level cache (measured once per
    ``pyvidgen bench`` run); the op's is its compulsory traffic (``Bench.bytes_moved``) over its median time.
    Checked (reported, never enforced) at the shapes labelled ``shapes``, in ``mode``, for ``providers``.
    """

    fraction: float
    shapes: tuple[str, ...]
    mode: str = "fwd+bwd"
    providers: tuple[str, ...] = ("cpp", "triton")


# The side ladder of ``pyvidgen bench --sweep``: square frames from the 32² of small video models to the 512² of
# high-resolution ones.
SWEEP_SIDES = (32, 64, 128, 256, 512)
# Elements (B * C * H * W) of the image-sized tensor at every sweep point. 2^21 floats (8 MiB) keep the smallest
# side at hundreds of images and the largest single images in tens of MiB, so the whole sweep stays a few minutes
# on two cores; only a point whose one image is already larger (32 channels at 512²: 2^23) exceeds it, with B = 1.
SWEEP_ELEMENTS = 2**21


def sweep_batch(elements: int, channels: int, side: int) -> int:
    """The batch that fills the element budget at ``channels`` x ``side``²: ``max(1, elements // (C H W))``."""
    return max(1, elements // (channels * side * side))


def square_sweep(*extra: int) -> Callable[[int, int, int], tuple[int, ...]]:
    """The usual ``Bench.sweep``: dims ``(B, C, side, side, *extra)`` with B from :func:`sweep_batch`."""

    def dims(side: int, channels: int, elements: int) -> tuple[int, ...]:
        return (sweep_batch(elements, channels, side), channels, side, side, *extra)

    return dims


@dataclass(frozen=True)
class Bench:
    """How the op is benchmarked.

    Attributes:
        shapes: benchmarked sizes.
        shape_doc: what ``Shape.dims`` is, e.g. "x (B, C, H, W); flow (B, 2, H, W)".
        variant: the variant timed (default: the first).
        targets: performance goals reported next to the table.
        baselines: other eager formulations users write today, each also timed compiled.
        bytes_moved: ``(inputs, outputs, mode) -> bytes`` for GB/s; None where GB/s does not apply;
            the default counts every input and output once per pass.
        sweep: ``(side, channels, elements) -> dims`` of ``pyvidgen bench --sweep``: the op's dims at an H = W =
            ``side`` image of ``channels`` channels whose (B, C, H, W) tensor holds about ``elements`` values
            (:data:`SWEEP_ELEMENTS` unless asked otherwise); None: not swept.
        sweep_channels: the channel counts swept (3 and 32 where the op leaves them free).
        sweep_sides: the sides swept (a shorter ladder where the largest sides say nothing or take too long).
        sweep_magnitudes: sample magnitudes swept at every (side, channels) point (flow_warp: the flow's reach in
            pixels); empty: the default magnitude only.
        memory_bound: the op's time is bound by memory traffic: its rows are reported as a fraction of the
            machine's copy bandwidth ("% copy").
        copy_goal: the fraction of the copy bandwidth the op's kernels should reach, where stated.
    """

    shapes: tuple[Shape, ...]
    shape_doc: str
    variant: str | None = None
    targets: tuple[Target, ...] = ()
    baselines: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    bytes_moved: Callable[[Sequence[Tensor], Sequence[Tensor], str], int] | None | str = "default"
    sweep: Callable[[int, int, int], tuple[int, ...]] | None = None
    sweep_channels: tuple[int, ...] = (3, 32)
    sweep_sides: tuple[int, ...] = SWEEP_SIDES
    sweep_magnitudes: tuple[float, ...] = ()
    memory_bound: bool = False
    copy_goal: CopyGoal | None = None


@dataclass(frozen=True)
class OpSpec:
    """One op's declaration.

    Attributes:
        name: the op's name: ``pyvidgen.ops.<name>``, ``pyvidgen::<name>``, the kernel modules' names.
        args: the schema's arguments, e.g. "Tensor x, Tensor flow, str padding_mode, bool normalized";
            tensors first by convention, ``Tensor?`` for optional ones.
        layouts: each tensor argument's layout, or a tuple of accepted layouts.
        outputs: each output's name and layout (outputs take the anchor's dtype and device).
        anchor: the tensor argument whose dtype and device the others must share and whose shape
            binds the layout symbols first.
        samples: how tests, checks and benchmarks draw inputs.
        defaults: the options' values where a variant does not set them.
        choices: allowed values of string options.
        check: op-specific validation beyond layouts and choices, called with the arguments in
            schema order; raises ValueError/TypeError naming the argument.
        backends: the implementations this op has.
        atomic_grads: tensor arguments whose Triton gradient is accumulated with atomics (not
            deterministic): in deterministic mode ``auto`` avoids Triton when one is needed.
        autocast: under ``torch.autocast``: "promote" (cast to the widest input dtype, as torch does
            for ``grid_sample``), "float32" (as for losses and sums) or "lower" (to the autocast
            dtype, as for ``lstm_cell``). The kernels compute in float32 whatever they are given.
        float32_outputs: outputs that stay float32 for half inputs (sums that would overflow float16).
        error_growth: ``(output name, args) -> {"terms": n, "scale": s}`` for
            :func:`pyvidgen.tolerance.tolerance`: how many rounded terms an output sums and any exact
            factor applied after the sum; outputs not named are elementwise (n = 1).
        bench: the benchmark entry, or None.
        thread_invariant: whether the C++ backend gives bitwise the same result for any thread count (False
            where it delegates a reduction to a vendor library, oneDNN, that splits it by thread; the results
            then agree within the tolerance).
        channels_last: the feature maps (B, C, H, W) among the tensor arguments and outputs that keep a
            channels_last anchor's layout, as ``conv2d`` does: when the anchor is channels_last-contiguous (and
            not also contiguous, as C = 1 tensors are), these outputs and these arguments' gradients are
            channels_last-contiguous; otherwise, and for everything not named, contiguous. Empty: every output
            is contiguous.
        channels_last_backends: the backends whose implementations take the ``channels_last`` arguments in
            that layout as they are (channels_last-contiguous, never transposed); the others get contiguous
            copies, and their outputs are converted.
    """

    name: str
    args: str
    layouts: Mapping[str, str | tuple[str, ...]]
    outputs: Mapping[str, str]
    anchor: str
    samples: Samples
    defaults: Mapping[str, Any] = field(default_factory=dict)
    choices: Mapping[str, Sequence[str]] = field(default_factory=dict)
    check: Callable[..., None] | None = None
    backends: tuple[str, ...] = ("reference", "cpp", "triton")
    atomic_grads: tuple[str, ...] = ()
    autocast: str = "promote"
    float32_outputs: tuple[str, ...] = ()
    error_growth: Callable[[str, tuple[Any, ...]], Mapping[str, float]] | None = None
    bench: Bench | None = None
    thread_invariant: bool = True
    channels_last: tuple[str, ...] = ()
    channels_last_backends: tuple[str, ...] = ()
