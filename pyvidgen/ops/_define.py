"""Turning an :class:`~pyvidgen.ops._spec.OpSpec` into a working op, the same way for every op.

:func:`define` registers, from the declaration alone:

* ``pyvidgen::<op>`` and ``pyvidgen::<op>_backward`` (``torch.library.custom_op``), whose bodies pick
  the backend (:func:`pyvidgen._backend.resolve`) and call its implementation on contiguous inputs;
  half-precision inputs reach the reference and C++ implementations as float32 copies;
* their fake functions, from the output layouts: outputs are contiguous by construction, except the feature maps
  an op declares to keep a channels_last anchor's layout (``OpSpec.channels_last``), channels_last then;
* autograd: the forward saves its inputs, the backward op recomputes what it needs and computes only
  the gradients asked for;
* autocast kernels that cast the floating inputs by the op's policy;
* the schemas of the C++ entry points ``pyvidgen_cpp::<op>_forward`` / ``_backward`` (their kernels
  are registered by ``csrc/ops/<op>.cpp``) with the same fakes, so they pass ``opcheck`` as well.

The returned :class:`DeclaredOp` is the validated Python entry point of the op. In plain eager mode (no
torch.compile, no dispatch or torch-function mode, no functorch transform, no autocast, plain tensors) it runs
the same forward and backward bodies through a :class:`torch.autograd.Function` of its own instead of the
dispatcher's round trips through ``pyvidgen::<op>``, which cost more than a small glimpse's kernels; everywhere
else (and whenever :func:`eager_fast_path` is off) it calls the registered op.

:func:`substituted` lets a caller (the model benchmark's "usual" provider) run an op's calls through a plain-PyTorch
function instead, so that autograd and torch.compile see ordinary aten ops where the op would be.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import Parameter
from torch.utils._python_dispatch import _get_current_dispatch_mode

from pyvidgen._backend import cpp_module, resolve
from pyvidgen.ops import _layout
from pyvidgen.ops._checks import check_choice, deterministic
from pyvidgen.ops._spec import AUTOCAST_POLICIES, OpSpec, Variant
from pyvidgen.tolerance import tolerance as _tolerance

_HALF = (torch.float16, torch.bfloat16)
_OPTION_TYPES = ("str", "bool", "float", "int")
_AUTOCAST_KEYS = {"cpu": "AutocastCPU", "cuda": "AutocastCUDA"}

# The C++ entry points' namespace: schemas defined here, kernels registered by the extension.
_CPP_LIB = torch.library.Library("pyvidgen_cpp", "DEF")
# Autocast kernels of the pyvidgen ops (the ops themselves are defined by custom_op).
_LIB = torch.library.Library("pyvidgen", "FRAGMENT")

OPS: dict[str, DeclaredOp] = {}

# op name -> function that :meth:`DeclaredOp.__call__` runs instead of ``pyvidgen::<op>``; set only by
# :func:`substituted`. Empty (the normal case), it costs the call one truthiness test.
_SUBSTITUTES: dict[str, Callable[..., Any]] = {}

# Tensor types the eager fast path takes; any other (a subclass with its own dispatch) gets the registered op.
_PLAIN_TENSORS = (Tensor, Parameter)
# False: every call goes through the registered op (see :func:`eager_fast_path`).
_FAST_PATH = [True]


@contextlib.contextmanager
def eager_fast_path(enabled: bool) -> Iterator[None]:
    """Within the block, eager calls take the fast path (``True``, the default) or the registered op (``False``).

    Both run the same forward and backward bodies, so results are bitwise equal; the switch exists to compare
    them (tests, per-call overhead measurements). Process-wide, like :func:`substituted`.
    """
    saved = _FAST_PATH[0]
    _FAST_PATH[0] = bool(enabled)
    try:
        yield
    finally:
        _FAST_PATH[0] = saved


@contextlib.contextmanager
def substituted(mapping: Mapping[str, Callable[..., Any]]) -> Iterator[None]:
    """Within the block, calls of the named ops (through :class:`DeclaredOp`, i.e. the public functions and the
    nn modules) run ``mapping[name](*args)`` instead of ``pyvidgen::<name>``.

    ``args`` are the op's arguments in schema order after :meth:`DeclaredOp.check_arguments` (validated, cast by
    the autocast policy); the function returns what the op would (a tensor or a tuple of tensors) and gets its
    gradient from autograd. Blocks nest: an inner block's functions take precedence, and on exit (normal or by an
    exception) the outer block's are back. The substitution is process-wide (not per thread), and it does not
    reach code that calls an op's ``forward_op``/``backward_op`` directly (``flow_smoothness_grad``).

    Raises:
        ValueError: a name is not a declared op.
    """
    unknown = sorted(set(mapping) - set(OPS))
    if unknown:
        raise ValueError(f"substituted: {unknown} are not declared ops; expected some of {sorted(OPS)}")
    saved = dict(_SUBSTITUTES)
    _SUBSTITUTES.update(mapping)
    try:
        yield
    finally:
        _SUBSTITUTES.clear()
        _SUBSTITUTES.update(saved)


@dataclass(frozen=True)
class Argument:
    """One schema argument: ``kind`` is "Tensor", "Tensor?" or an option type (str, bool, float, int)."""

    name: str
    kind: str

    @property
    def is_tensor(self) -> bool:
        return self.kind.startswith("Tensor")


def _parse_arguments(text: str) -> tuple[Argument, ...]:
    arguments = []
    for part in text.split(","):
        kind, name = part.split()
        if kind not in ("Tensor", "Tensor?", *_OPTION_TYPES):
            raise ValueError(f"argument {name!r}: unsupported type {kind!r}")
        arguments.append(Argument(name, kind))
    return tuple(arguments)


def _returns(count: int) -> str:
    return "Tensor" if count == 1 else "(" + ", ".join(["Tensor"] * count) + ")"


def _as_tuple(value: Any) -> tuple:
    kind = type(value)
    return value if kind is tuple else tuple(value) if kind is list else (value,)


class DeclaredOp:
    """A declared op: call it with its arguments in schema order (tensors, then options)."""

    def __init__(self, spec: OpSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.arguments = _parse_arguments(spec.args)
        self.tensor_names = tuple(a.name for a in self.arguments if a.is_tensor)
        self.option_names = tuple(a.name for a in self.arguments if not a.is_tensor)
        self.tensor_positions = tuple(i for i, a in enumerate(self.arguments) if a.is_tensor)
        self._option_positions = tuple(i for i, a in enumerate(self.arguments) if not a.is_tensor)
        self._optional = {a.name for a in self.arguments if a.kind == "Tensor?"}
        self.anchor_position = self.tensor_positions[self.tensor_names.index(spec.anchor)]
        self.layouts = {
            name: tuple(_layout.parse(t) for t in (text if isinstance(text, tuple) else (text,)))
            for name, text in spec.layouts.items()
        }
        self.output_names = tuple(spec.outputs)
        self._output_layouts = tuple(_layout.parse(text) for text in spec.outputs.values())
        self._int_options = tuple((i, a.name) for i, a in enumerate(self.arguments) if a.kind == "int")
        self._atomic = tuple(name in spec.atomic_grads for name in self.tensor_names)
        self._ranks = {name: {layout.ndim for layout in layouts} for name, layouts in self.layouts.items()}
        self._choices = tuple(
            (self.arguments_index(name), name, tuple(allowed)) for name, allowed in spec.choices.items()
        )
        # Argument shapes already checked, so that a training loop's repeated calls skip the layout walk.
        self._checked_shapes: set[tuple] = set()
        self._validate()
        self._implementations: dict[tuple[str, str], Any] = {}
        self._modules: dict[str, Any] = {}
        self._cpp_entry = f"{self.name}_forward"
        # The backward op's tensors: one gradient per output, then the forward's tensor arguments.
        n_out = len(self.output_names)
        self._backward_tensor_positions = tuple(range(n_out)) + tuple(n_out + p for p in self.tensor_positions)
        # The feature maps that keep a channels_last anchor's layout (OpSpec.channels_last): forward argument
        # positions, backward argument positions (output gradients, then the forward's arguments), outputs.
        kept = set(spec.channels_last)
        self._channels_last_args = frozenset(p for p in self.tensor_positions if self.arguments[p].name in kept)
        self._channels_last_backward_args = frozenset(
            [k for k, name in enumerate(self.output_names) if name in kept]
            + [n_out + p for p in self._channels_last_args]
        )
        self._channels_last_outputs = tuple(name in kept for name in self.output_names)
        self._register()
        self.eager_function = self._make_eager_function()

    # ----------------------------------------------------------------------------------- registration
    def _validate(self) -> None:
        spec = self.spec
        missing = set(self.tensor_names) ^ set(self.layouts)
        if missing:
            raise ValueError(f"{self.name}: layouts must name every tensor argument exactly; check {sorted(missing)}")
        unknown = (set(spec.choices) | set(spec.defaults)) - set(self.option_names)
        unknown |= set(spec.atomic_grads) - set(self.tensor_names)
        if unknown:
            raise ValueError(f"{self.name}: {sorted(unknown)} are not arguments of {spec.args!r}")
        if spec.autocast not in AUTOCAST_POLICIES:
            raise ValueError(f"{self.name}: autocast must be one of {AUTOCAST_POLICIES}, got {spec.autocast!r}")
        if spec.anchor in self._optional or not set(spec.float32_outputs) <= set(self.output_names):
            raise ValueError(f"{self.name}: the anchor must be a required tensor; float32_outputs must be outputs")
        if spec.channels_last and (
            spec.anchor not in spec.channels_last
            or not set(spec.channels_last) <= set(self.tensor_names) | set(self.output_names)
            or not set(spec.channels_last_backends) <= set(spec.backends)
        ):
            raise ValueError(
                f"{self.name}: channels_last must name the anchor and only tensor arguments and outputs; "
                "channels_last_backends only backends of the op"
            )

    def _register(self) -> None:
        name, spec = self.name, self.spec
        grads = ", ".join(f"Tensor grad_{o}" for o in self.output_names)
        forward_schema = f"({spec.args}) -> {_returns(len(self.output_names))}"
        backward_schema = (
            f"({grads}, {spec.args}, bool[{len(self.tensor_names)}] needs_grad) -> {_returns(len(self.tensor_names))}"
        )
        forward = torch.library.custom_op(
            f"pyvidgen::{name}", self._forward_body, mutates_args=(), schema=forward_schema
        )
        backward = torch.library.custom_op(
            f"pyvidgen::{name}_backward", self._backward_body, mutates_args=(), schema=backward_schema
        )
        forward.register_fake(self._forward_fake)
        backward.register_fake(self._backward_fake)
        forward.register_autograd(self._autograd_backward, setup_context=self._setup_context)
        self.forward_op = getattr(torch.ops.pyvidgen, name).default
        self.backward_op = getattr(torch.ops.pyvidgen, f"{name}_backward").default
        for device_type, key in _AUTOCAST_KEYS.items():
            _LIB.impl(name, self._autocast_kernel(device_type, key), key, with_keyset=True)
        if "cpp" in spec.backends:
            _CPP_LIB.define(f"{name}_forward{forward_schema}")
            _CPP_LIB.define(f"{name}_backward{backward_schema}")
            torch.library.register_fake(f"pyvidgen_cpp::{name}_forward", self._forward_fake, lib=_CPP_LIB)
            torch.library.register_fake(f"pyvidgen_cpp::{name}_backward", self._backward_fake, lib=_CPP_LIB)

    # ----------------------------------------------------------------------------------- the call
    def __call__(self, *args: Any) -> Any:
        """Check the arguments (schema order), apply autocast, run ``pyvidgen::<op>`` (or the function
        :func:`substituted` set for this op); in plain eager mode, the same bodies without the dispatcher."""
        args = self.check_arguments(args)
        if _SUBSTITUTES and self.name in _SUBSTITUTES:
            return _SUBSTITUTES[self.name](*args)
        if self.takes_fast_path(args):
            return self._call_eager(args)
        return self.forward_op(*args)

    def takes_fast_path(self, args: Sequence[Any]) -> bool:
        """Whether a call on (checked) ``args`` runs the eager fast path rather than ``pyvidgen::<op>``.

        Only where nothing but autograd would see the op: torch.compile must find the op in its graph, dispatch
        modes (FakeTensorMode, opcheck, functionalisation) and torch-function modes must see the op's call,
        functorch transforms (vmap, grad) and tensor subclasses must reach it through the dispatcher, and the
        registered op's autocast kernel owns the casts under autocast.
        """
        if torch.compiler.is_compiling():  # first: under dynamo the rest is never traced
            return False
        if not _FAST_PATH[0] or _get_current_dispatch_mode() is not None:
            return False
        if torch._C._is_torch_function_mode_enabled() or torch._C._functorch.peek_interpreter_stack() is not None:
            return False
        anchor = args[self.anchor_position]
        device_type = anchor.device.type
        if device_type in _AUTOCAST_KEYS and torch.is_autocast_enabled(device_type):
            return False
        return all(args[p] is None or type(args[p]) in _PLAIN_TENSORS for p in self.tensor_positions)

    def _call_eager(self, args: tuple[Any, ...]) -> Any:
        needs_autograd = torch.is_grad_enabled() and any(
            args[p] is not None and args[p].requires_grad for p in self.tensor_positions
        )
        if torch._C._autograd._profiler_enabled():
            # Profiles name the op as the registered op's call would (its backward node: ``pyvidgen_<op>Backward``).
            with torch.profiler.record_function(f"pyvidgen::{self.name}"):
                return self.eager_function.apply(*args) if needs_autograd else self._forward_body(*args)
        return self.eager_function.apply(*args) if needs_autograd else self._forward_body(*args)

    def _make_eager_function(self) -> type[torch.autograd.Function]:
        """The eager fast path's autograd function: the registered op's forward body, context and backward."""
        op = self

        def forward(ctx: Any, *args: Any) -> Any:
            # An output that does not reach the loss keeps its None gradient: the backward makes the zeros it needs.
            ctx.set_materialize_grads(False)
            output = op._forward_body(*args)
            op._setup_context(ctx, args, output)
            return output

        members = {"forward": staticmethod(forward), "backward": staticmethod(op._autograd_backward)}
        return type(f"pyvidgen_{self.name}", (torch.autograd.Function,), members)

    def check_arguments(self, args: Sequence[Any]) -> tuple[Any, ...]:
        """Validate ``args`` (schema order) and return them cast by the autocast policy when autocast is on.

        Raises:
            TypeError: a tensor argument is not a tensor of a supported floating dtype, or dtypes differ.
            ValueError: a rank or shape does not fit the layouts, or an option is out of range.
            RuntimeError: tensors on different devices.
        """
        if len(args) != len(self.arguments):
            raise TypeError(
                f"{self.name}: expected {len(self.arguments)} arguments ({self.spec.args}), got {len(args)}"
            )
        for position, name in zip(self.tensor_positions, self.tensor_names, strict=True):
            t = args[position]
            if t is None and name in self._optional:
                continue
            # The common case in a few attribute reads; the full check (and its message) otherwise.
            if not (isinstance(t, Tensor) and t.dtype in _layout.SUPPORTED_DTYPES and t.dim() in self._ranks[name]):
                _layout.check_tensor(self.name, name, t, self.layouts[name])
        anchor = args[self.anchor_position]
        device_type = anchor.device.type
        if device_type in _AUTOCAST_KEYS and torch.is_autocast_enabled(device_type):
            args = self.autocast_arguments(args, device_type)
            anchor = args[self.anchor_position]
        for position, name in zip(self.tensor_positions, self.tensor_names, strict=True):
            t = args[position]
            if (
                t is not None
                and position != self.anchor_position
                and (t.device != anchor.device or t.dtype != anchor.dtype)
            ):
                _layout.check_same(self.name, name, t, self.spec.anchor, anchor)
        self._check_shapes(args)
        for position, name, allowed in self._choices:
            check_choice(self.name, name, args[position], allowed)
        if self.spec.check is not None:
            self.spec.check(*args)
        return tuple(args)

    def _check_shapes(self, args: Sequence[Any]) -> None:
        key = None
        if not torch.compiler.is_compiling():
            key = tuple(tuple(a.shape) if isinstance(a, Tensor) else a for a in args)
            if key in self._checked_shapes:
                return
        bindings = {name: args[i] for i, name in self._int_options}
        _layout.check_shapes(self.name, self._tensors(args), self.layouts, self.spec.anchor, bindings)
        if key is not None and len(self._checked_shapes) < 1024:
            self._checked_shapes.add(key)

    def arguments_index(self, name: str) -> int:
        """The schema position of argument ``name``."""
        return next(i for i, a in enumerate(self.arguments) if a.name == name)

    def _tensors(self, args: Sequence[Any]) -> dict[str, Tensor | None]:
        return {name: args[p] for p, name in zip(self.tensor_positions, self.tensor_names, strict=True)}

    def autocast_arguments(self, args: Sequence[Any], device_type: str) -> tuple[Any, ...]:
        """``args`` with the floating tensors on ``device_type`` cast by the op's autocast policy.

        float64 tensors are never cast (as in torch's autocast); "promote" casts to the widest dtype
        among the eligible tensors, "float32" to float32, "lower" to the autocast dtype.
        """
        eligible = [
            i
            for i in self.tensor_positions
            if isinstance(args[i], Tensor) and args[i].is_floating_point() and args[i].device.type == device_type
        ]
        if not eligible:
            return tuple(args)
        policy = self.spec.autocast
        if policy == "promote":
            target = args[eligible[0]].dtype
            for i in eligible[1:]:
                target = torch.promote_types(target, args[i].dtype)
        elif policy == "float32":
            target = torch.float32
        else:
            target = torch.get_autocast_dtype(device_type)
        cast = list(args)
        for i in eligible:
            if cast[i].dtype != target and (cast[i].dtype != torch.float64 or policy == "promote"):
                cast[i] = cast[i].to(target)
        return tuple(cast)

    def _autocast_kernel(self, device_type: str, key: str):  # noqa: ANN202 - a dispatcher kernel
        exclude = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

        def kernel(_keyset: Any, *args: Any) -> Any:
            with torch._C._ExcludeDispatchKeyGuard(exclude):
                return self.forward_op(*self.autocast_arguments(args, device_type))

        return kernel

    # ----------------------------------------------------------------------------------- dispatch
    def implementation(self, backend: str, phase: str) -> Any:
        """The function ``backend`` computes ``phase`` ("forward" or "backward") with."""
        if backend == "cpp":
            key = ("cpp", phase)
            if key not in self._implementations:
                cpp_module()  # loading the extension registers its kernels
                overload = getattr(torch.ops.pyvidgen_cpp, f"{self.name}_{phase}").default
                # The overload's C++ callable itself: one Python frame less on every call.
                self._implementations[key] = overload._op
            return self._implementations[key]
        module = self._modules.get(backend)
        if module is None:
            module = self._modules[backend] = importlib.import_module(f"pyvidgen.kernels.{backend}.{self.name}")
        # Looked up on every call (not kept): a patched launcher takes effect at once.
        if backend == "reference":
            return getattr(module, self.name if phase == "forward" else f"{self.name}_backward")
        return getattr(module, f"{self.name}_{'fwd' if phase == 'forward' else 'bwd'}")

    def resolve_backend(self, device: torch.device | str, needs_grad: Sequence[bool] | None = None) -> str:
        """The backend a call on ``device`` runs on (for a backward: computing the ``needs_grad`` gradients)."""
        atomics = needs_grad is not None and any(n and a for n, a in zip(needs_grad, self._atomic, strict=True))
        return resolve(
            self.name,
            device if type(device) is torch.device else torch.device(device),
            backends=self.spec.backends,
            atomics_ok=not (atomics and deterministic()),
            cpp_entry=self._cpp_entry,
        )

    def channels_last(self, anchor: Tensor) -> bool:
        """Whether a call with this anchor keeps the channels_last layout (see ``OpSpec.channels_last``): the
        op declares feature maps and the anchor is channels_last-contiguous, not also contiguous (as a C = 1 or
        1 x 1 image is; torch treats those as NCHW too)."""
        return (
            bool(self._channels_last_args)
            and anchor.dim() == 4
            and anchor.is_contiguous(memory_format=torch.channels_last)
            and not anchor.is_contiguous()
        )

    def _prepare(
        self,
        args: Sequence[Any],
        positions: Sequence[int],
        backend: str,
        anchor: Tensor,
        channels_last: frozenset[int] = frozenset(),
    ) -> list[Any]:
        """``args`` with the tensors at ``positions`` contiguous, those at ``channels_last`` channels_last-contiguous
        where the backend takes them so; the reference and C++ implementations compute half inputs as float32
        copies."""
        upcast = backend != "triton" and anchor.dtype in _HALF
        if backend not in self.spec.channels_last_backends:
            channels_last = frozenset()
        prepared = list(args)
        for p in positions:
            t = prepared[p]
            if t is not None:
                t = t.contiguous(memory_format=torch.channels_last) if p in channels_last else t.contiguous()
                prepared[p] = t.float() if upcast and t.dtype in _HALF else t
        return prepared

    def _memory_format(self, keeps_layout: bool, channels_last: bool) -> torch.memory_format:
        return torch.channels_last if keeps_layout and channels_last else torch.contiguous_format

    def output_dtype(self, name: str, dtype: torch.dtype) -> torch.dtype:
        """The dtype of output ``name`` for inputs of ``dtype``."""
        return torch.float32 if name in self.spec.float32_outputs and dtype in _HALF else dtype

    def _forward_body(self, *args: Any) -> Any:
        anchor = args[self.anchor_position]
        backend = self.resolve_backend(anchor.device)
        channels_last = self.channels_last(anchor)
        kept = self._channels_last_args if channels_last else frozenset()
        prepared = self._prepare(args, self.tensor_positions, backend, anchor, kept)
        outputs = _as_tuple(self.implementation(backend, "forward")(*prepared))
        result = []
        for name, out, keeps in zip(self.output_names, outputs, self._channels_last_outputs, strict=True):
            dtype = self.output_dtype(name, anchor.dtype)
            out = out if out.dtype == dtype else out.to(dtype)
            result.append(out.contiguous(memory_format=self._memory_format(keeps, channels_last)))
        return tuple(result) if len(result) > 1 else result[0]

    def _backward_body(self, *args: Any) -> Any:
        needs_grad = args[-1]
        op_args = args[len(self.output_names) : -1]
        anchor = op_args[self.anchor_position]
        backend = self.resolve_backend(anchor.device, needs_grad)
        channels_last = self.channels_last(anchor)
        kept = self._channels_last_backward_args if channels_last else frozenset()
        prepared = self._prepare(args[:-1], self._backward_tensor_positions, backend, anchor, kept)
        device_type = anchor.device.type
        if device_type in _AUTOCAST_KEYS and torch.is_autocast_enabled(device_type):
            # A backward run inside an autocast region (autograd.grad under torch.autocast) would have the
            # reference's matmuls lowered to the autocast dtype: the forward's inputs were already cast by the
            # op's policy, so the backward computes in their dtype, as the forward did.
            with torch.autocast(device_type, enabled=False):
                grads = _as_tuple(self.implementation(backend, "backward")(*prepared, needs_grad))
        else:
            grads = _as_tuple(self.implementation(backend, "backward")(*prepared, needs_grad))
        result = []
        for k, position in enumerate(self.tensor_positions):
            t = op_args[position]
            if needs_grad[k] and t is not None:
                grad = grads[k] if grads[k].dtype == t.dtype else grads[k].to(t.dtype)
                keeps = position in self._channels_last_args
                result.append(grad.contiguous(memory_format=self._memory_format(keeps, channels_last)))
            else:
                # Custom ops return tensors, never None: a gradient nobody needs comes back empty.
                result.append(anchor.new_empty(0, dtype=(t if t is not None else anchor).dtype))
        return tuple(result) if len(result) > 1 else result[0]

    # ----------------------------------------------------------------------------------- fakes
    def output_shapes(self, args: Sequence[Any], check: bool = False) -> list[tuple[Any, ...]]:
        """The outputs' shapes for ``args`` (real or fake tensors), from the layouts."""
        bindings = {name: args[i] for i, name in self._int_options}
        tensors = self._tensors(args)
        for name in (self.spec.anchor, *tensors):
            t = tensors[name]
            if t is not None:
                any(_layout.bind(layout, t.shape, bindings, check=check) for layout in self.layouts[name])
        return [_layout.expected_shape(layout, bindings) for layout in self._output_layouts]

    def _forward_fake(self, *args: Any) -> Any:
        anchor = args[self.anchor_position]
        channels_last = self.channels_last(anchor)
        outputs = tuple(
            torch.empty(
                shape,
                dtype=self.output_dtype(name, anchor.dtype),
                device=anchor.device,
                memory_format=self._memory_format(keeps, channels_last),
            )
            for name, shape, keeps in zip(
                self.output_names, self.output_shapes(args), self._channels_last_outputs, strict=True
            )
        )
        return outputs if len(outputs) > 1 else outputs[0]

    def _backward_fake(self, *args: Any) -> Any:
        needs_grad = args[-1]
        op_args = args[len(self.output_names) : -1]
        anchor = op_args[self.anchor_position]
        channels_last = self.channels_last(anchor)
        result = []
        for k, position in enumerate(self.tensor_positions):
            t = op_args[position]
            if needs_grad[k] and t is not None:
                # Contiguous whatever t's strides, or channels_last for a feature map that keeps the layout.
                keeps = position in self._channels_last_args
                memory_format = self._memory_format(keeps, channels_last)
                result.append(torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=memory_format))
            else:
                result.append(anchor.new_empty(0, dtype=(t if t is not None else anchor).dtype))
        return tuple(result) if len(result) > 1 else result[0]

    # ----------------------------------------------------------------------------------- autograd
    def _setup_context(self, ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.save_for_backward(*(inputs[p] for p in self.tensor_positions))
        ctx.options = tuple(inputs[p] for p in self._option_positions)
        ctx.output_meta = tuple((o.shape, o.dtype, o.device) for o in _as_tuple(output))

    def _autograd_backward(self, ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        if any(g is None for g in grads):
            # An output that does not reach the loss gets no gradient (e.g. the last step's cell state).
            grads = tuple(
                g if g is not None else torch.zeros(shape, dtype=dtype, device=device)
                for g, (shape, dtype, device) in zip(grads, ctx.output_meta, strict=True)
            )
        args = self.merge(ctx.saved_tensors, ctx.options)
        needs_input_grad = ctx.needs_input_grad
        needs_grad = [bool(needs_input_grad[p]) for p in self.tensor_positions]
        if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
            # Traced (compile, fake tensors, opcheck): the backward op must appear in the graph.
            computed = _as_tuple(self.backward_op(*grads, *args, needs_grad))
        else:
            # Eager: the op's own body, without a second trip through the dispatcher (a few microseconds
            # per step, which small shapes notice).
            second_order = torch.is_grad_enabled()  # create_graph=True
            with torch.no_grad():
                computed = _as_tuple(self._backward_body(*grads, *args, needs_grad))
            if second_order:
                computed = self._not_differentiable_again(computed, needs_grad)
        result: list[Tensor | None] = [None] * len(self.arguments)
        for k, position in enumerate(self.tensor_positions):
            if needs_grad[k]:
                result[position] = computed[k]
        return tuple(result)

    def _not_differentiable_again(self, computed: tuple[Tensor, ...], needs_grad: Sequence[bool]) -> tuple:
        """``computed`` (a backward run with create_graph=True) behind a node that raises when differentiated.

        The gradients depend on the saved inputs through a backward that has no derivative of its own, so a
        second derivative through them must fail loudly rather than treat them as constants.
        """
        present = [k for k, wanted in enumerate(needs_grad) if wanted]
        error = torch._C._functions.DelayedError(
            f"pyvidgen.{self.name}: its backward is not differentiable; a second derivative through it "
            "(torch.autograd.grad(..., create_graph=True), then backward) is not supported".encode(),
            len(present),
        )
        wrapped = _as_tuple(error(*(computed[k].detach().requires_grad_() for k in present)))
        result = list(computed)
        for k, g in zip(present, wrapped, strict=True):
            result[k] = g
        return tuple(result)

    # ----------------------------------------------------------------------------------- tools
    def merge(self, tensors: Sequence[Tensor | None], options: Sequence[Any]) -> tuple[Any, ...]:
        """Arguments in schema order from the tensor arguments and the options, each in order."""
        args: list[Any] = [None] * len(self.arguments)
        for p, t in zip(self.tensor_positions, tensors, strict=True):
            args[p] = t
        for p, value in zip(self._option_positions, options, strict=True):
            args[p] = value
        return tuple(args)

    def reference(self, *args: Any) -> Any:
        """The reference forward on ``args`` (schema order), differentiable by autograd, no op boundary."""
        return self.implementation("reference", "forward")(*args)

    def sample(
        self,
        dims: Sequence[int],
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        variant: Variant | str | None = None,
        magnitude: float | None = None,
    ) -> tuple[Any, ...]:
        """Sample arguments (schema order) of size ``dims``, drawn on the CPU from ``generator``."""
        samples = self.spec.samples
        chosen = variant if isinstance(variant, Variant) else samples.variant(variant)
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        magnitude = samples.magnitudes[0] if magnitude is None else magnitude
        drawn = samples.build(tuple(dims), generator, magnitude, **chosen.inputs)
        tensors = [t.to(device=device, dtype=dtype) if t is not None else None for t in drawn]
        options = self.options(chosen, dims)
        return self.merge(tensors, [options[name] for name in self.option_names])

    def options(self, variant: Variant | str | None = None, dims: Sequence[int] | None = None) -> dict[str, Any]:
        """The option values of ``variant`` (default: the first) for samples of size ``dims``."""
        samples = self.spec.samples
        chosen = variant if isinstance(variant, Variant) else samples.variant(variant)
        options = {**self.spec.defaults, **chosen.options}
        if dims is not None and samples.options is not None:
            # Sizes bound by int options (a glimpse size N) follow the drawn tensors' sizes.
            options.update(samples.options(tuple(dims)))
        return options

    def tolerance(self, output: str, args: Sequence[Any], dtype: torch.dtype) -> dict[str, float]:
        """atol/rtol for output (or ``grad_<argument>``) ``output`` of a call on ``args`` in ``dtype``."""
        growth = self.spec.error_growth(output, tuple(args)) if self.spec.error_growth else {}
        return _tolerance(dtype, **growth)


def define(spec: OpSpec) -> DeclaredOp:
    """Register the op ``spec`` declares (see the module docstring) and add it to :data:`OPS`."""
    if spec.name in OPS:
        raise ValueError(f"op {spec.name!r} is declared twice")
    op = DeclaredOp(spec)
    OPS[spec.name] = op
    return op
