"""When a call takes the eager fast path (the op's bodies under an autograd.Function of its own) and when it must
reach the registered ``pyvidgen::<op>`` instead; what the fast path gives profiles and second derivatives.

The op tester holds every op's fast path to the registered op's results bitwise; here one op stands for all
(the gating is the same code for every declared op).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import pyvidgen
from pyvidgen.ops import OPS, flow_warp
from pyvidgen.ops._define import eager_fast_path

OP = OPS["flow_warp"]


def _inputs(requires_grad: bool = True) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 6, generator=generator).requires_grad_(requires_grad)
    flow = torch.randn(2, 2, 5, 6, generator=generator).requires_grad_(requires_grad)
    return x, flow


def _decision(x: Tensor, flow: Tensor) -> bool:
    return OP.takes_fast_path(OP.check_arguments((x, flow, *OP.options().values())))


def test_plain_eager_calls_take_the_fast_path():
    x, flow = _inputs()
    assert _decision(x, flow)
    assert _decision(torch.nn.Parameter(x.detach()), flow)
    out = flow_warp(x, flow)
    assert type(out.grad_fn).__name__ == "pyvidgen_flow_warpBackward"
    with eager_fast_path(False):
        assert not _decision(x, flow)
        assert type(flow_warp(x, flow).grad_fn).__name__ == "GeneratedBackwardFor_pyvidgen_flow_warp_defaultBackward"


def test_no_autograd_record_when_nothing_needs_a_gradient():
    x, flow = _inputs(requires_grad=False)
    assert flow_warp(x, flow).grad_fn is None
    x, flow = _inputs()
    with torch.no_grad():
        out = flow_warp(x, flow)
    assert out.grad_fn is None and not out.requires_grad
    with torch.inference_mode():
        assert flow_warp(x, flow).grad_fn is None


class _Recording(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


class _FunctionRecording(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def test_dispatch_and_torch_function_modes_see_the_registered_op():
    x, flow = _inputs()
    with _Recording() as mode:
        assert not _decision(x, flow)
        flow_warp(x, flow)
    assert "pyvidgen.flow_warp.default" in mode.seen
    with _FunctionRecording() as function_mode:
        assert not _decision(x, flow)
        flow_warp(x, flow)
    assert any("pyvidgen.flow_warp" in name for name in function_mode.seen)


def test_fake_tensors_functorch_autocast_and_subclasses_take_the_registered_op():
    x, flow = _inputs()
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as fake:
        fx, fflow = fake.from_tensor(x), fake.from_tensor(flow)
        assert not _decision(fx, fflow)
        assert flow_warp(fx, fflow).shape == x.shape
    decisions = []

    def record(x1: Tensor) -> Tensor:
        decisions.append(_decision(x1, flow.detach()))
        return x1

    torch.func.vmap(record)(x.detach().unsqueeze(0))
    torch.func.grad(lambda x1: (decisions.append(_decision(x1, flow.detach())), x1.sum())[1])(x.detach())
    assert decisions == [False, False]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _decision(x, flow)

    class Marked(Tensor):
        pass

    assert not _decision(x.detach().as_subclass(Marked), flow)


def test_compiled_graphs_hold_the_registered_op():
    x, flow = _inputs()
    compiled = torch.compile(lambda a, b: flow_warp(a, b) * 2, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, flow), flow_warp(x, flow) * 2, rtol=0, atol=0)


def test_profiles_name_the_op_and_its_backward():
    x, flow = _inputs()
    with torch.profiler.profile() as prof:
        flow_warp(x, flow).sum().backward()
    keys = {event.key for event in prof.key_averages()}
    assert "pyvidgen::flow_warp" in keys and "pyvidgen_flow_warpBackward" in keys
    with torch.profiler.profile() as prof, torch.no_grad():
        flow_warp(x, flow)
    assert "pyvidgen::flow_warp" in {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_a_second_derivative_through_the_backward_fails_loudly(backend, fast):
    if backend == "cpp" and "cpp" not in pyvidgen.available_backends():
        pytest.skip("the C++ extension is not built")
    x, flow = _inputs()
    with pyvidgen.backend(backend), eager_fast_path(fast):
        (grad_x,) = torch.autograd.grad(flow_warp(x, flow).square().sum(), x, create_graph=True)
    assert grad_x.requires_grad
    with pytest.raises(RuntimeError, match="pyvidgen.flow_warp: its backward is not differentiable"):
        grad_x.sum().backward()
    # Without create_graph the gradients are plain tensors.
    (grad_x,) = torch.autograd.grad(flow_warp(x, flow).sum(), x)
    assert not grad_x.requires_grad


class _UndefinedGradient(torch.autograd.Function):
    """Passes its input through; its backward sends no gradient (None) back to it."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:  # noqa: ANN001
        return t.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> None:  # noqa: ANN001
        return None


@pytest.mark.parametrize("fast", [True, False])
def test_an_undefined_output_gradient_counts_as_zeros(fast):
    x, flow = _inputs()
    with eager_fast_path(fast):
        out = flow_warp(x, flow)
        grad_x, grad_flow = torch.autograd.grad(_UndefinedGradient.apply(out).sum() + x.sum(), [x, flow])
    assert torch.equal(grad_x, torch.ones_like(x)) and torch.equal(grad_flow, torch.zeros_like(flow))
