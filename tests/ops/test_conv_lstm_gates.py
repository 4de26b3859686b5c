"""pyvidgen.ops.conv_lstm_gates: every kernel backend against the reference, plus the op's contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import pyvidgen
from pyvidgen._backend import cpp_module
from pyvidgen.ops import conv_lstm_gates
from tests.conftest import DEVICE, deterministic_algorithms, kernel_backends, on_one_and_more_threads

BACKENDS = kernel_backends()
PEEPHOLES = (None, "pixel", "channel")
# Sizes 1, primes, non-powers of two; interpreted Triton gets these small ones only.
SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (3, 1, 2, 3), (2, 5, 1, 1), (1, 2, 1, 9), (2, 2, 7, 1)]
# cpp also gets: planes longer than one work tile (2048 pixels) with ragged tails, many channels,
# and few (channel, tile) items per batch, which splits the batch for the peephole gradient.
LARGE_SHAPES = [(4, 19, 17, 23), (2, 3, 50, 47), (1, 64, 16, 16), (40, 2, 3, 3)]
TOLERANCE = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-12, "rtol": 1e-12}}


def _shapes_for(backend):
    return SHAPES + ([] if backend == "triton" else LARGE_SHAPES)


def _peephole(kind, channels, height, width, dtype, rng):
    if kind is None:
        return None
    shape = (3, channels, height, width) if kind == "pixel" else (3, channels, 1, 1)
    return torch.randn(shape, generator=rng, dtype=torch.float64).to(DEVICE, dtype)


def _inputs(shape, dtype, rng, peephole=None, scale=2.0):
    batch, channels, height, width = shape
    gates = (torch.randn(batch, 4 * channels, height, width, generator=rng, dtype=torch.float64) * scale).to(
        DEVICE, dtype
    )
    c = (torch.randn(shape, generator=rng, dtype=torch.float64) * 1.5).to(DEVICE, dtype)
    return gates, c, _peephole(peephole, channels, height, width, dtype, rng)


def _run(backend, gates, c, peephole, grad_h, grad_c_next):
    """Forward and every gradient on one backend; a None output gradient leaves that output out of the loss."""
    gates = gates.detach().requires_grad_()
    c = c.detach().requires_grad_()
    peephole = peephole.detach().requires_grad_() if peephole is not None else None
    leaves = [t for t in (gates, c, peephole) if t is not None]
    with pyvidgen.backend(backend):
        h, c_next = conv_lstm_gates(gates, c, peephole)
        outputs = [o for o, g in ((h, grad_h), (c_next, grad_c_next)) if g is not None]
        grads = [g for g in (grad_h, grad_c_next) if g is not None]
        computed = torch.autograd.grad(outputs, leaves, grads)
    return (h.detach(), c_next.detach(), *computed)


NAMES = ("h", "c_next", "grad_gates", "grad_c", "grad_peephole")


def _assert_matches_reference(backend, gates, c, peephole, dtype, grad_h=None, grad_c_next=None, both=True):
    if both:
        grad_h = torch.randn_like(c) if grad_h is None else grad_h
        grad_c_next = torch.randn_like(c) if grad_c_next is None else grad_c_next
    expected = _run("reference", gates, c, peephole, grad_h, grad_c_next)
    actual = _run(backend, gates, c, peephole, grad_h, grad_c_next)
    assert len(actual) == len(expected)
    for name, a, e in zip(NAMES, actual, expected, strict=False):
        torch.testing.assert_close(a, e, equal_nan=True, **TOLERANCE[dtype], msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_matches_reference_random(backend, dtype, peephole, rng):
    for shape in _shapes_for(backend):
        gates, c, weights = _inputs(shape, dtype, rng, peephole)
        _assert_matches_reference(backend, gates, c, weights, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("peephole", PEEPHOLES)
@pytest.mark.parametrize("used", ["h", "c_next"])
def test_only_one_output_in_the_loss(backend, peephole, used, rng):
    """The last step of a sequence uses h only: the unused output's gradient arrives as None."""
    for shape in [(2, 3, 5, 7), (1, 1, 1, 1)]:
        gates, c, weights = _inputs(shape, torch.float64, rng, peephole)
        grad = torch.randn_like(c)
        grads = {"grad_h": grad} if used == "h" else {"grad_c_next": grad}
        _assert_matches_reference(backend, gates, c, weights, torch.float64, both=False, **grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_saturated_gates(backend, peephole, rng):
    """Pre-activations of tens: sigmoids and tanhs at 0 and ±1 (the exp range limits of fast kernels)."""
    gates, c, weights = _inputs((2, 3, 6, 5), torch.float32, rng, peephole, scale=40.0)
    gates[0, :, 0, 0] = torch.tensor([100.0, -100.0, 88.5, -88.5, 87.0, -87.0, 1e4, -1e4, 9.5, -9.5, 0.0, -0.0])
    _assert_matches_reference(backend, gates, c, weights, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("peephole", [None, "pixel"])
def test_non_contiguous_inputs(backend, peephole, rng):
    # gates from a permuted (channels-last) tensor, c from a strided slice, peephole transposed.
    gates = (torch.randn(2, 5, 7, 12, generator=rng, dtype=torch.float64) * 2).to(DEVICE).permute(0, 3, 1, 2)
    c = torch.randn(2, 6, 10, 7, generator=rng, dtype=torch.float64).to(DEVICE)[:, ::2, ::2]
    weights = None
    if peephole == "pixel":
        weights = torch.randn(3, 3, 7, 5, generator=rng, dtype=torch.float64).to(DEVICE).transpose(2, 3)
        assert not weights.is_contiguous()
    assert gates.shape == (2, 12, 5, 7) and c.shape == (2, 3, 5, 7)
    assert not gates.is_contiguous() and not c.is_contiguous()
    _assert_matches_reference(backend, gates, c, weights, torch.float64)
    # Non-contiguous output gradients too.
    grad_h = torch.randn(2, 7, 5, 3, dtype=torch.float64, device=DEVICE).permute(0, 3, 2, 1)
    _assert_matches_reference(backend, gates, c, weights, torch.float64, grad_h=grad_h)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_nan_propagates(backend, peephole, rng):
    gates, c, weights = _inputs((2, 2, 4, 4), torch.float64, rng, peephole)
    gates[0, 0, 1, 1] = float("nan")  # i of channel 0
    gates[1, 2 * 2 + 1, 2, 3] = float("nan")  # g of channel 1
    c[1, 0, 3, 0] = float("nan")
    with pyvidgen.backend(backend):
        h, c_next = conv_lstm_gates(gates, c, weights)
    assert h[0, 0, 1, 1].isnan() and c_next[0, 0, 1, 1].isnan()
    assert h[1, 1, 2, 3].isnan() and c_next[1, 1, 2, 3].isnan()
    assert h[1, 0, 3, 0].isnan() and c_next[1, 0, 3, 0].isnan()
    assert h.isnan().sum() == 3 and c_next.isnan().sum() == 3
    _assert_matches_reference(backend, gates, c, weights, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_empty_batch_and_channels(backend, peephole):
    for shape in [(0, 3, 4, 5), (2, 0, 4, 5), (0, 1, 1, 1)]:
        batch, channels, height, width = shape
        gates = torch.randn(batch, 4 * channels, height, width, device=DEVICE, requires_grad=True)
        c = torch.randn(shape, device=DEVICE, requires_grad=True)
        weights = None
        if peephole is not None:
            pshape = (3, channels, height, width) if peephole == "pixel" else (3, channels, 1, 1)
            weights = torch.randn(pshape, device=DEVICE, requires_grad=True)
        with pyvidgen.backend(backend):
            h, c_next = conv_lstm_gates(gates, c, weights)
            (h.sum() + c_next.sum()).backward()
        assert h.shape == shape and c_next.shape == shape
        assert gates.grad.shape == gates.shape and c.grad.shape == c.shape
        if weights is not None:
            # A sum over an empty batch: zero, not uninitialised memory.
            assert weights.grad.shape == weights.shape and (weights.grad == 0).all()


@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_gradcheck_float64(peephole, rng):
    backend = "cpp" if "cpp" in BACKENDS else "reference"
    gates, c, weights = _inputs((2, 3, 4, 5), torch.float64, rng, peephole)
    leaves = [t.requires_grad_() for t in (gates, c, weights) if t is not None]
    with pyvidgen.backend(backend):
        assert torch.autograd.gradcheck(lambda *args: conv_lstm_gates(*args), tuple(leaves))


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_opcheck(backend, rng):
    gates, c, _ = _inputs((2, 3, 5, 4), torch.float32, rng)
    gates.requires_grad_()
    c.requires_grad_()
    forward = torch.ops.pyvidgen.conv_lstm_gates.default
    backward = torch.ops.pyvidgen.conv_lstm_gates_backward.default
    with pyvidgen.backend(backend):
        torch.library.opcheck(forward, (gates, c, None))
        for pshape in [(3, 3, 5, 4), (3, 3, 1, 1)]:
            weights = torch.randn(pshape, generator=rng).to(DEVICE).requires_grad_()
            torch.library.opcheck(forward, (gates, c, weights))
        # The backward op is not itself differentiable: check it on plain tensors.
        grad_h, grad_c_next = torch.randn_like(c), torch.randn_like(c)
        plain = (grad_h.detach(), grad_c_next.detach(), gates.detach(), c.detach())
        torch.library.opcheck(backward, (*plain, None))
        for pshape in [(3, 3, 5, 4), (3, 3, 1, 1)]:
            torch.library.opcheck(backward, (*plain, torch.randn(pshape, generator=rng).to(DEVICE)))


def _conv_lstm_step(x, h, c, weight, bias, peephole):
    """One ConvLSTM step as a model writes it: one convolution of [x, h] gives the gates."""
    gates = F.conv2d(torch.cat((x, h), dim=1), weight, bias, padding=1)
    return conv_lstm_gates(gates, c, peephole)


@pytest.mark.parametrize("peephole", [None, "channel"])
def test_torch_compile_fullgraph(peephole, rng):
    batch, cin, hidden, height, width = 2, 3, 4, 6, 5
    x = torch.randn(batch, cin, height, width, generator=rng).to(DEVICE)
    h0 = torch.randn(batch, hidden, height, width, generator=rng).to(DEVICE)
    c0 = torch.randn(batch, hidden, height, width, generator=rng).to(DEVICE)
    weight = (torch.randn(4 * hidden, cin + hidden, 3, 3, generator=rng) * 0.2).to(DEVICE).requires_grad_()
    bias = torch.zeros(4 * hidden, device=DEVICE, requires_grad=True)
    weights = _peephole(peephole, hidden, height, width, torch.float32, rng)
    params = [weight, bias] + ([weights.requires_grad_()] if weights is not None else [])

    def two_steps(x, h, c, weight, bias, peephole):
        h, c = _conv_lstm_step(x, h, c, weight, bias, peephole)
        h, c = _conv_lstm_step(x, h, c, weight, bias, peephole)
        return h.square().mean() + c.mean()

    compiled = torch.compile(two_steps, fullgraph=True, backend="aot_eager")
    loss = compiled(x, h0, c0, weight, bias, weights)
    grads = torch.autograd.grad(loss, params)
    expected_loss = two_steps(x, h0, c0, weight, bias, weights)
    expected = torch.autograd.grad(expected_loss, params)
    torch.testing.assert_close(loss, expected_loss)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_deterministic(backend, peephole, rng):
    gates, c, weights = _inputs((5, 3, 9, 7), torch.float32, rng, peephole)
    grads = (torch.randn_like(c), torch.randn_like(c))
    with deterministic_algorithms():
        first = _run(backend, gates, c, weights, *grads)
        second = _run(backend, gates, c, weights, *grads)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
@pytest.mark.parametrize("peephole", PEEPHOLES)
def test_cpp_result_independent_of_thread_count(peephole, rng):
    # (40, 2, 3, 3) splits the batch into chunks for the peephole gradient; (3, 40, 50, 47) has two
    # tiles per plane and enough items for both threads without splitting.
    for shape in [(40, 2, 3, 3), (3, 40, 50, 47)]:
        gates, c, weights = _inputs(shape, torch.float32, rng, peephole)
        grads = (torch.randn_like(c), torch.randn_like(c))
        single, multi = on_one_and_more_threads(lambda: _run("cpp", gates, c, weights, *grads))  # noqa: B023
        for a, b in zip(single, multi, strict=True):
            assert torch.equal(a, b)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(0, 4),
    channels=st.integers(1, 5),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    peephole=st.sampled_from(PEEPHOLES),
    scale=st.sampled_from([0.1, 2.0, 20.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_matches_reference(batch, channels, height, width, peephole, scale, seed):
    backend = BACKENDS[0] if BACKENDS else "reference"
    rng = torch.Generator().manual_seed(seed)
    gates, c, weights = _inputs((batch, channels, height, width), torch.float64, rng, peephole, scale=scale)
    _assert_matches_reference(backend, gates, c, weights, torch.float64)


def test_without_peephole_gradient_is_none(rng):
    gates, c, _ = _inputs((1, 2, 3, 3), torch.float64, rng)
    grads = torch.ops.pyvidgen.conv_lstm_gates_backward(torch.ones_like(c), torch.ones_like(c), gates, c, None)
    assert grads[2].numel() == 0  # custom ops return tensors: empty stands for "no peephole"
    if "cpp" in BACKENDS:
        assert cpp_module().conv_lstm_gates_backward(c, c, gates, c, None)[2] is None


def _bad(gates_shape, c_shape, peephole_shape=None):
    peephole = torch.zeros(peephole_shape) if peephole_shape is not None else None
    return torch.zeros(gates_shape), torch.zeros(c_shape), peephole


BAD_SHAPES = [
    ((1, 8, 4), (1, 2, 4, 5), None, r"gates must be a 4-D tensor \(B, 4C, H, W\), got shape \(1, 8, 4\)"),
    ((1, 8, 4, 5), (2, 4, 5), None, r"c must be a 4-D tensor \(B, C, H, W\), got shape \(2, 4, 5\)"),
    ((1, 6, 4, 5), (1, 2, 4, 5), None, r"gates must have shape \(B, 4C, H, W\) = \(1, 8, 4, 5\) to match c"),
    ((2, 8, 4, 5), (1, 2, 4, 5), None, r"gates must have shape .* = \(1, 8, 4, 5\) .*got \(2, 8, 4, 5\)"),
    ((1, 8, 5, 4), (1, 2, 4, 5), None, r"gates must have shape .*got \(1, 8, 5, 4\)"),
    ((1, 8, 4, 5), (1, 2, 4, 5), (2, 2, 4, 5), r"peephole must have shape \(3, C, H, W\) = \(3, 2, 4, 5\) or"),
    ((1, 8, 4, 5), (1, 2, 4, 5), (3, 2, 4, 1), r"\(3, C, 1, 1\) = \(3, 2, 1, 1\), got \(3, 2, 4, 1\)"),
    ((1, 8, 4, 5), (1, 2, 4, 5), (3, 1, 1, 1), r"peephole must have shape .*got \(3, 1, 1, 1\)"),
    ((1, 8, 4, 5), (1, 2, 4, 5), (3, 2, 4), r"peephole must be a 4-D tensor \(3, C, H, W\) or \(3, C, 1, 1\)"),
]


@pytest.mark.parametrize(("gates_shape", "c_shape", "peephole_shape", "pattern"), BAD_SHAPES)
def test_bad_shapes(gates_shape, c_shape, peephole_shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        conv_lstm_gates(*_bad(gates_shape, c_shape, peephole_shape))


def test_bad_dtypes_and_devices():
    gates, c = torch.zeros(1, 8, 4, 5), torch.zeros(1, 2, 4, 5)
    with pytest.raises(TypeError, match=r"gates has dtype torch.float64 but c has dtype torch.float32"):
        conv_lstm_gates(gates.double(), c)
    with pytest.raises(TypeError, match=r"peephole has dtype torch.float64 but c has dtype torch.float32"):
        conv_lstm_gates(gates, c, torch.zeros(3, 2, 1, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"c must have a floating-point dtype, got torch.int64"):
        conv_lstm_gates(gates, c.long())
    with pytest.raises(TypeError, match=r"gates must be a torch.Tensor \(B, 4C, H, W\), got list"):
        conv_lstm_gates([[1.0]], c)
    with pytest.raises(TypeError, match=r"peephole must be a torch.Tensor"):
        conv_lstm_gates(gates, c, 0.5)
    with pytest.raises(RuntimeError, match=r"gates is on meta but c is on cpu"):
        conv_lstm_gates(gates.to("meta"), c)
    with pytest.raises(RuntimeError, match=r"peephole is on meta but c is on cpu"):
        conv_lstm_gates(gates, c, torch.zeros(3, 2, 4, 5, device="meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to mix devices")
def test_cpu_cuda_mix():
    with pytest.raises(RuntimeError, match=r"gates is on cuda:0 but c is on cpu"):
        conv_lstm_gates(torch.zeros(1, 8, 4, 5, device="cuda"), torch.zeros(1, 2, 4, 5))


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built")
def test_cpp_entry_points_check_their_inputs():
    """A direct call into _C (no Python checks in front) raises instead of reading out of bounds."""
    module = cpp_module()
    gates, c = torch.zeros(1, 8, 4, 5), torch.zeros(1, 2, 4, 5)
    forward, backward = module.conv_lstm_gates_forward, module.conv_lstm_gates_backward
    with pytest.raises(ValueError, match=r"gates must be 4-D \(B, 4C, H, W\), got \[1, 8, 4\]"):
        forward(torch.zeros(1, 8, 4), c, None)
    with pytest.raises(ValueError, match=r"c must be 4-D \(B, C, H, W\), got \[1, 2, 4\]"):
        forward(gates, torch.zeros(1, 2, 4), None)
    with pytest.raises(ValueError, match=r"gates must have shape \(B, 4C, H, W\) = \[1, 8, 4, 5\] to match c"):
        forward(torch.zeros(1, 7, 4, 5), c, None)
    with pytest.raises(ValueError, match=r"peephole must have shape \(3, C, H, W\) = \[3, 2, 4, 5\]"):
        forward(gates, c, torch.zeros(3, 2, 1, 5))
    with pytest.raises(TypeError, match=r"gates has dtype Double but c has dtype Float"):
        forward(gates.double(), c, None)
    with pytest.raises(TypeError, match=r"peephole has dtype Double but c has dtype Float"):
        forward(gates, c, torch.zeros(3, 2, 1, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"supports float32 and float64, got Half"):
        forward(gates.half(), c.half(), None)
    with pytest.raises(RuntimeError, match=r"needs CPU tensors, got gates on meta"):
        forward(gates.to("meta"), c, None)
    with pytest.raises(ValueError, match=r"grad_h must have the shape of c \[1, 2, 4, 5\], got \[1, 2, 4, 4\]"):
        backward(torch.zeros(1, 2, 4, 4), c, gates, c, None)
    with pytest.raises(TypeError, match=r"grad_c_next has dtype Double but c has dtype Float"):
        backward(c, c.double(), gates, c, None)
