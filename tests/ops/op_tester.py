"""The shared op tester: what every declared op is held to, whatever it computes.

An op's test module subclasses :class:`OpTester` and names its op (``op_name = "flow_warp"``); it then
gets, for every kernel backend on this machine (cpp; Triton, interpreted without a GPU) and every
variant of the op's declaration:

* forward and every gradient against the reference, float32 and float64, at the declaration's sizes
  (1s, primes, odd sizes; larger ones where the kernels are compiled), and each tensor argument's
  gradient on its own;
* channels_last and sliced inputs (outputs contiguous, or channels_last where the op keeps a channels_last
  anchor's layout), empty batches, NaN and infinities;
* the eager fast path against the registered op (bitwise);
* float64 ``gradcheck``; ``torch.library.opcheck`` of the op, its backward op and the C++ entry points
  on contiguous, channels_last and sliced inputs;
* determinism (bitwise repeatable, or a clear refusal where a kernel uses atomics) and thread-count
  invariance of the C++ kernels;
* ``torch.compile(fullgraph=True)`` forward and backward (aot_eager, and Inductor with dynamic shapes), on
  contiguous, channels_last and sliced inputs;
* half-precision inputs and ``torch.autocast`` (bfloat16, float16) with mixed-precision inputs;
* hypothesis property tests of the compiled backends in float32 at realistic sizes and magnitudes
  (up to 3e38: what a diverging training run feeds);
* the generic input errors (rank, shape, dtype, device, type), through the op and the C++ entry points.

The module keeps only the op's oracles and its own error messages. ``tests/ops/conftest.py`` parametrises,
from the declaration, ``variant`` (every variant), ``backend`` (the op's kernel backends available here)
and ``any_backend`` (the reference as well).
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

import pyvidgen
from pyvidgen._backend import triton_interpreted
from pyvidgen.ops import OPS
from pyvidgen.ops._define import DeclaredOp, eager_fast_path
from pyvidgen.ops._layout import parse as parse_layout
from pyvidgen.ops._spec import Variant
from pyvidgen.testing import as_outputs, check_autocast, check_backend, random_grad_outputs, run_backend
from tests.conftest import DEVICE, deterministic_algorithms, kernel_backends, on_one_and_more_threads

BACKENDS = kernel_backends()
LAYOUTS = ("channels_last", "sliced")


def interpreted(backend: str) -> bool:
    """Interpreted Triton runs programs one at a time in Python: it gets the small sizes only."""
    return backend == "triton" and triton_interpreted()


def assert_ok(result: dict[str, Any], context: str) -> None:
    """Fail with the parts that disagree (max error, count) when a check_backend result is not ok."""
    if result["ok"]:
        return
    bad = {
        name: {k: part.get(k) for k in ("max_abs_err", "bad", "numel", "shape", "expected_shape")}
        for name, part in result["parts"].items()
        if not part["ok"]
    }
    pytest.fail(f"{context}: dtype_ok={result['dtype_ok']}, disagreeing parts: {bad}")


def to_layout(t: Any, layout: str) -> Any:
    """``t`` with the same values in a channels_last or a sliced (strided, offset) layout; others unchanged."""
    if not isinstance(t, Tensor) or t.dim() != 4:
        return t
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    batch, channels, height, width = t.shape
    base = torch.zeros(batch, 2 * channels, height + 1, 2 * width, dtype=t.dtype, device=t.device)
    view = base[:, ::2, 1:, ::2]
    view.copy_(t)
    return view


def with_nonfinite(t: Any, generator: torch.Generator) -> Any:
    """A copy of ``t`` with about a tenth of its elements NaN, +inf or -inf."""
    if not isinstance(t, Tensor) or t.numel() == 0:
        return t
    pick = torch.randint(0, 30, t.shape, generator=generator).to(t.device)
    out = t.clone()
    out[pick == 0] = float("nan")
    out[pick == 1] = float("inf")
    out[pick == 2] = float("-inf")
    return out


def _grown_shape(op: DeclaredOp, name: str, shape: torch.Size) -> tuple[int, ...]:
    """``shape`` with one dimension one larger: the first that the anchor's layout fixes (a literal, or a symbol the
    anchor binds), so that the call must fail on the shape check; the last dimension if none is."""
    layouts = op.spec.layouts
    first = lambda text: parse_layout(text if isinstance(text, str) else text[0])  # noqa: E731
    anchored = {dim.symbol for dim in first(layouts[op.spec.anchor]).dims}
    dims = first(layouts[name]).dims
    axis = next((i for i, d in enumerate(dims) if d.symbol is None or d.symbol in anchored), len(shape) - 1)
    return tuple(size + (i == axis) for i, size in enumerate(shape))


def compiled_matches_eager(
    op: DeclaredOp,
    variant: Variant,
    sizes,
    rng: torch.Generator,
    layout: str = "contiguous",
    *,
    kernels: str | None = None,
    loss_atol: float = 1e-4,
    **compile_kwargs: Any,
) -> None:
    """``torch.compile(fullgraph=True, **compile_kwargs)`` of a loss over the op's outputs equals eager, value
    and every gradient, at each of ``sizes`` (one graph for all), on inputs in ``layout``; on the pyvidgen
    backend ``kernels`` if given."""

    def loss(*args: Any) -> Tensor:
        total = torch.zeros((), device=DEVICE)
        for out in as_outputs(op(*args)):
            total = total + (out.float() * out.float().sin()).sum()
        return total

    # The loss is one code object for every op and variant: start from an empty cache each time.
    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, **compile_kwargs)
    with pyvidgen.backend(kernels) if kernels is not None else contextlib.nullcontext():
        for dims in sizes:
            args = op.sample(dims, device=DEVICE, generator=rng, variant=variant)
            args = tuple(to_layout(a, layout).requires_grad_() if isinstance(a, Tensor) else a for a in args)
            tensors = [a for a in args if isinstance(a, Tensor)]
            expected = loss(*args)
            expected_grads = torch.autograd.grad(expected, tensors)
            actual = compiled(*args)
            actual_grads = torch.autograd.grad(actual, tensors)
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=loss_atol)
            for a, e in zip(actual_grads, expected_grads, strict=True):
                torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


class OpTester:
    """Base class of an op's tests; subclasses set :attr:`op_name`."""

    op_name: ClassVar[str]

    @pytest.fixture
    def op(self) -> DeclaredOp:
        return OPS[self.op_name]

    def sizes(self, op: DeclaredOp, backend: str) -> tuple[tuple[int, ...], ...]:
        samples = op.spec.samples
        return samples.dims if interpreted(backend) else samples.dims + samples.large_dims

    @staticmethod
    def tiny(op: DeclaredOp, backend: str = "cpp") -> tuple[int, ...]:
        """The declaration's gradcheck size, or the first size with every dimension at most 3 (2 interpreted)."""
        samples = op.spec.samples
        if samples.gradcheck_dims is not None:
            return samples.gradcheck_dims
        return tuple(min(d, 2 if interpreted(backend) else 3) for d in samples.dims[0])

    # ------------------------------------------------------------------------------------------- values
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_matches_reference(self, op, backend, dtype, variant, rng):
        for dims in self.sizes(op, backend):
            args = op.sample(dims, dtype=dtype, device=DEVICE, generator=rng, variant=variant)
            assert_ok(check_backend(op, backend, args, rng), f"{backend} {dtype} {dims}")

    def test_each_gradient_alone(self, op, backend, variant, rng):
        """Each tensor argument's gradient on its own (the backward computes only what is asked)."""
        args = op.sample(op.spec.samples.dims[0], dtype=torch.float64, device=DEVICE, generator=rng, variant=variant)
        grads = random_grad_outputs(op, args, rng)
        present = [args[p] is not None for p in op.tensor_positions]
        for k in (k for k, here in enumerate(present) if here):
            needs = [j == k for j in range(len(present))]
            actual = run_backend(op, backend, args, grads, needs)
            expected = run_backend(op, "reference", args, grads, needs)
            assert actual.keys() == expected.keys()
            for name in expected:
                torch.testing.assert_close(
                    actual[name], expected[name], equal_nan=True, **op.tolerance(name, args, torch.float64)
                )

    def test_each_output_alone_in_the_loss(self, op, backend, variant, rng):
        """An output that does not reach the loss gets no gradient (None), e.g. a ConvLSTM's last cell state."""
        args = op.sample(op.spec.samples.dims[0], dtype=torch.float64, device=DEVICE, generator=rng, variant=variant)
        grads = random_grad_outputs(op, args, rng)
        for used in range(len(op.output_names)):
            results = []
            for backend_name in ("reference", backend):
                leaves = [a.detach().clone().requires_grad_() if isinstance(a, Tensor) else a for a in args]
                with pyvidgen.backend(backend_name):
                    outputs = as_outputs(op(*leaves))
                results.append(
                    torch.autograd.grad(outputs[used], [t for t in leaves if isinstance(t, Tensor)], grads[used])
                )
            for actual, expected in zip(results[1], results[0], strict=True):
                torch.testing.assert_close(actual, expected, **op.tolerance("grad", args, torch.float64))

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_layouts(self, op, backend, layout, variant, rng):
        """channels_last and sliced inputs give the contiguous inputs' results, in contiguous outputs, except the
        feature maps an op keeps channels_last (OpSpec.channels_last): those outputs and gradients are then
        channels_last-contiguous."""
        samples = op.spec.samples
        for dims in samples.dims[:1] if interpreted(backend) else samples.dims[:1] + samples.large_dims[:1]:
            args = op.sample(dims, dtype=torch.float32, device=DEVICE, generator=rng, variant=variant)
            strided = tuple(to_layout(a, layout) for a in args)
            grads = random_grad_outputs(op, args, rng)
            actual = run_backend(op, backend, strided, tuple(to_layout(g, layout) for g in grads))
            expected = run_backend(op, "reference", args, grads)
            for name in expected:
                torch.testing.assert_close(actual[name], expected[name], **op.tolerance(name, args, torch.float32))
            keeps = op.channels_last(strided[op.anchor_position])
            # The samples' first sizes have several channels: a channels_last call must keep the layout.
            assert keeps == (layout == "channels_last" and bool(op.spec.channels_last))
            for name in expected:
                kept = keeps and name.removeprefix("grad_") in op.spec.channels_last
                memory_format = torch.channels_last if kept else torch.contiguous_format
                assert actual[name].is_contiguous(memory_format=memory_format), (name, actual[name].stride())

    def test_empty(self, op, backend, variant, rng):
        for dims in op.spec.samples.empty_dims:
            args = op.sample(dims, device=DEVICE, generator=rng, variant=variant)
            result = check_backend(op, backend, args, rng)
            assert_ok(result, f"{dims}")
            shapes = op.output_shapes(args)
            actual = run_backend(op, backend, args, random_grad_outputs(op, args, rng))
            assert [tuple(actual[name].shape) for name in op.output_names] == [tuple(s) for s in shapes]

    @pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy
    def test_nonfinite_inputs(self, op, backend, variant, rng):
        """NaN and infinities in every input: the reference's NaN pattern and values, never a crash."""
        args = op.sample(op.spec.samples.dims[0], dtype=torch.float64, device=DEVICE, generator=rng, variant=variant)
        for position in op.tensor_positions:
            broken = list(args)
            broken[position] = with_nonfinite(args[position], rng)
            assert_ok(check_backend(op, backend, broken, rng), f"non-finite {op.arguments[position].name}")

    # ------------------------------------------------------------------------------------------- autograd
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_eager_fast_path_equals_the_registered_op(self, op, any_backend, dtype, variant, rng):
        """Eager calls skip the dispatcher: the same outputs and gradients, bitwise, as ``pyvidgen::<op>``'s."""
        backend = any_backend
        args = op.sample(self.tiny(op, backend), dtype=dtype, device=DEVICE, generator=rng, variant=variant)
        grads = random_grad_outputs(op, args, rng)
        results, nodes = [], []
        for fast in (True, False):
            with eager_fast_path(fast), pyvidgen.backend(backend):
                leaves = [a.detach().clone().requires_grad_() if isinstance(a, Tensor) else a for a in args]
                nodes.append(type(as_outputs(op(*leaves))[0].grad_fn).__name__)
                results.append(run_backend(op, backend, args, grads))
        assert nodes == [f"pyvidgen_{op.name}Backward", f"GeneratedBackwardFor_pyvidgen_{op.name}_defaultBackward"]
        assert results[0].keys() == results[1].keys()
        for name in results[0]:
            torch.testing.assert_close(results[0][name], results[1][name], rtol=0, atol=0, equal_nan=True, msg=name)

    def test_gradcheck_float64(self, op, backend, variant, rng):
        args = op.sample(self.tiny(op, backend), dtype=torch.float64, device=DEVICE, generator=rng, variant=variant)
        positions = [p for p in op.tensor_positions if args[p] is not None]

        def call(*tensors: Tensor) -> Any:
            full = list(args)
            for p, t in zip(positions, tensors, strict=True):
                full[p] = t
            return op(*full)

        leaves = tuple(args[p].detach().requires_grad_() for p in positions)
        with pyvidgen.backend(backend):
            assert torch.autograd.gradcheck(call, leaves, eps=1e-6, atol=1e-5)

    @pytest.mark.parametrize("layout", ("contiguous", *LAYOUTS))
    def test_opcheck(self, op, any_backend, layout, variant, rng):
        """opcheck of the op (autograd included), its backward op and, for cpp, the C++ entry points."""
        backend = any_backend
        dims = self.tiny(op, backend) if interpreted(backend) else op.spec.samples.dims[0]
        args = tuple(to_layout(a, layout) for a in op.sample(dims, device=DEVICE, generator=rng, variant=variant))
        grads = tuple(to_layout(g, layout) for g in random_grad_outputs(op, args, rng))
        present = [args[p] is not None for p in op.tensor_positions]
        with pyvidgen.backend(backend):
            leaves = tuple(a.detach().requires_grad_() if isinstance(a, Tensor) else a for a in args)
            torch.library.opcheck(op.forward_op, leaves)
            torch.library.opcheck(op.backward_op, (*grads, *args, present))
            torch.library.opcheck(op.backward_op, (*grads, *args, [p and k == 0 for k, p in enumerate(present)]))
        if backend == "cpp":
            torch.library.opcheck(getattr(torch.ops.pyvidgen_cpp, f"{op.name}_forward").default, args)
            torch.library.opcheck(
                getattr(torch.ops.pyvidgen_cpp, f"{op.name}_backward").default, (*grads, *args, present)
            )

    def test_deterministic(self, op, backend, variant, rng):
        samples = op.spec.samples
        dims = samples.dims[0] if interpreted(backend) else (samples.large_dims or samples.dims)[0]
        args = op.sample(dims, device=DEVICE, generator=rng, variant=variant)
        grads = random_grad_outputs(op, args, rng)
        with deterministic_algorithms():
            if backend == "triton" and op.spec.atomic_grads:
                with pytest.raises(RuntimeError, match="deterministic"):
                    run_backend(op, backend, args, grads)
                return
            first = run_backend(op, backend, args, grads)
            second = run_backend(op, backend, args, grads)
        for name in first:
            assert torch.equal(first[name].nan_to_num(), second[name].nan_to_num()), name

    def test_cpp_result_independent_of_thread_count(self, op, variant, rng):
        if "cpp" not in BACKENDS or "cpp" not in op.spec.backends:
            pytest.skip("the C++ extension is not built")
        for dims in op.spec.samples.large_dims:
            args = op.sample(dims, generator=rng, variant=variant)
            grads = random_grad_outputs(op, args, rng)
            single, multi = on_one_and_more_threads(lambda a=args, g=grads: run_backend(op, "cpp", a, g))
            for name in single:
                if op.spec.thread_invariant:
                    assert torch.equal(single[name], multi[name]), (name, dims)
                else:
                    torch.testing.assert_close(single[name], multi[name], **op.tolerance(name, args, torch.float32))

    # ------------------------------------------------------------------------------------------- compile
    def test_compile_fullgraph(self, op, variant, rng):
        """Dynamo traces the checked entry point and the fakes; aot_eager runs the registered kernels."""
        compiled_matches_eager(op, variant, op.spec.samples.dims[:2], rng, backend="aot_eager")

    @pytest.mark.slow
    def test_compile_inductor_dynamic(self, op, rng):
        """Inductor with dynamic shapes, forward and backward: two sizes through one graph."""
        samples = op.spec.samples
        compiled_matches_eager(op, samples.variants[0], (samples.dims[0], samples.large_dims[0]), rng, dynamic=True)

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_compile_fullgraph_strided(self, op, layout, rng):
        """channels_last and sliced inputs through Dynamo and the fakes: the fakes' strides are the kernels'
        (a channels_last anchor keeps the layout where the op declares it), or the compiled graph's would differ."""
        samples = op.spec.samples
        compiled_matches_eager(op, samples.variants[0], samples.dims[:1], rng, layout, backend="aot_eager")

    @pytest.mark.slow
    def test_compile_inductor_dynamic_channels_last(self, op, rng):
        """Inductor with dynamic shapes on channels_last inputs, forward and backward: two sizes, one graph."""
        if not op.spec.channels_last:
            pytest.skip("contiguous outputs for any input layout: test_compile_fullgraph_strided covers the fakes")
        samples = op.spec.samples
        compiled_matches_eager(
            op, samples.variants[0], (samples.dims[0], samples.large_dims[0]), rng, "channels_last", dynamic=True
        )

    # ------------------------------------------------------------------------------------------- precision
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_half_inputs(self, op, backend, dtype, variant, rng):
        """Half inputs compute in float32: within the half type's rounding of the float64 reference."""
        args = op.sample(op.spec.samples.dims[0], dtype=dtype, device=DEVICE, generator=rng, variant=variant)
        assert_ok(check_backend(op, backend, args, rng, reference_dtype=torch.float64), f"{backend} {dtype}")

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_autocast(self, op, any_backend, dtype, variant, rng):
        """Mixed-precision inputs under torch.autocast: cast by the op's policy, float32 math inside."""
        backend = any_backend
        args = op.sample(op.spec.samples.dims[0], device=DEVICE, generator=rng, variant=variant)
        assert_ok(check_autocast(op, backend, args, DEVICE, dtype, rng), f"{backend} autocast {dtype}")

    # ------------------------------------------------------------------------------------------- properties
    @pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's numpy at 3e38
    def test_property_float32_realistic(self, op, backend):
        """Compiled kernels in float32 at sizes where their vector paths run, at every magnitude up to 3e38."""
        samples = op.spec.samples
        if interpreted(backend):
            # The interpreter: the same magnitudes and layouts at the smallest sizes, and few examples.
            ranges, examples = tuple((lo, min(hi, lo + 1)) for lo, hi in samples.property_ranges), 8
        else:
            ranges, examples = samples.property_ranges, 40

        @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            dims=st.tuples(*(st.integers(lo, hi) for lo, hi in ranges)),
            magnitude=st.sampled_from(samples.magnitudes),
            variant=st.sampled_from(samples.variants),
            seed=st.integers(0, 2**31 - 1),
        )
        def check(dims, magnitude, variant, seed):
            rng = torch.Generator().manual_seed(seed)
            args = op.sample(
                dims, dtype=torch.float32, device=DEVICE, generator=rng, variant=variant, magnitude=magnitude
            )
            assert_ok(check_backend(op, backend, args, rng), f"{backend} {dims} magnitude={magnitude} {variant.name}")

        check()

    # ------------------------------------------------------------------------------------------- errors
    def test_generic_input_errors(self, op, rng):
        """Every tensor argument: not a tensor, wrong rank, a dimension off by one, integer dtype,
        another dtype or device than the anchor; each error names the argument."""
        args = op.sample(op.spec.samples.dims[0], generator=rng)
        anchor = op.spec.anchor
        for position, name in zip(op.tensor_positions, op.tensor_names, strict=True):
            t = args[position]
            if t is None:
                continue

            def call(value: Any, p: int = position) -> None:
                bad = list(args)
                bad[p] = value
                op(*bad)

            with pytest.raises(TypeError, match=rf"{op.name}: {name} must be a torch.Tensor"):
                call(t.tolist())
            with pytest.raises(ValueError, match=rf"{op.name}: {name} must be a {t.dim()}-D tensor"):
                call(t[None])
            with pytest.raises(TypeError, match=rf"{name} must have a floating-point dtype, got torch.int64"):
                call(t.long())
            if t.dim() > 0 and name != anchor:
                grown = torch.zeros(_grown_shape(op, name, t.shape), dtype=t.dtype)
                with pytest.raises(ValueError, match=rf"{name} must have shape .* to match {anchor} .*got"):
                    call(grown)
                with pytest.raises(
                    TypeError, match=rf"{name} has dtype torch.float64 but {anchor} has dtype torch.float32"
                ):
                    call(t.double())
                with pytest.raises(RuntimeError, match=rf"{name} is on meta but {anchor} is on cpu"):
                    call(t.to("meta"))

    def test_cpp_entry_points_check_their_inputs(self, op, rng):
        """A direct call of the C++ entry point (no Python checks in front) raises, never reads out of bounds."""
        if "cpp" not in BACKENDS or "cpp" not in op.spec.backends:
            pytest.skip("the C++ extension is not built")
        forward = getattr(torch.ops.pyvidgen_cpp, f"{op.name}_forward").default
        args = op.sample(op.spec.samples.dims[0], generator=rng)
        for position, name in zip(op.tensor_positions, op.tensor_names, strict=True):
            t = args[position]
            if t is None:
                continue
            for bad, error in ((t[None], ValueError), (t.half(), TypeError)):
                broken = list(args)
                broken[position] = bad
                with pytest.raises(error, match=rf"{op.name}: .*{name}|{op.name}: the cpp backend supports"):
                    forward(*broken)
            if t.dim() > 0 and name != op.spec.anchor:
                broken = list(args)
                broken[position] = torch.zeros(_grown_shape(op, name, t.shape))
                with pytest.raises(ValueError, match=rf"{op.name}: {name} must have shape"):
                    forward(*broken)
