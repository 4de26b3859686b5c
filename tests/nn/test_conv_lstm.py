"""pyvidgen.nn.ConvLSTMCell and ConvLSTM against a plain-PyTorch ConvLSTM written out here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import pyvidgen
from pyvidgen._backend import _load_cpp
from pyvidgen.bench.conv_lstm_baseline import NaiveConvLSTM
from pyvidgen.bench.layers import time_conv_lstm_layer
from pyvidgen.nn import ConvLSTM, ConvLSTMCell


def _cpp_has_conv_lstm() -> bool:
    return pyvidgen.available_backends("cpu")["cpp"] == "" and hasattr(_load_cpp()[0], "conv_lstm_gates_forward")


BACKENDS = ["reference", "auto"] + (["cpp"] if _cpp_has_conv_lstm() else [])


def plain_cell(cell: ConvLSTMCell, x, h, c):
    """One ConvLSTM step written out: conv of x plus conv of h, gates by hand (order i, f, g, o)."""
    kx, kh = cell.input_conv.weight.shape[-2:], cell.hidden_conv.weight.shape[-2:]
    gates = F.conv2d(x, cell.input_conv.weight, cell.input_conv.bias, padding=(kx[0] // 2, kx[1] // 2))
    gates = gates + F.conv2d(h, cell.hidden_conv.weight, None, padding=(kh[0] // 2, kh[1] // 2))
    n = cell.hidden_channels
    gi, gf, gg, go = gates[:, :n], gates[:, n : 2 * n], gates[:, 2 * n : 3 * n], gates[:, 3 * n :]
    p = cell.peephole
    if p is not None:
        gi, gf = gi + p[0] * c, gf + p[1] * c
    i, f, g = 1 / (1 + torch.exp(-gi)), 1 / (1 + torch.exp(-gf)), torch.tanh(gg)
    c_next = f * c + i * g
    if p is not None:
        go = go + p[2] * c_next
    return 1 / (1 + torch.exp(-go)) * torch.tanh(c_next), c_next


def plain_run(cell: ConvLSTMCell, frames: list, state=None, reverse=False):
    """Loop ``plain_cell`` over frames (B, C, H, W); returns per-step h (in time order) and the final state."""
    batch, _, height, width = frames[0].shape
    if state is None:
        zeros = frames[0].new_zeros(batch, cell.hidden_channels, height, width)
        state = (zeros, zeros)
    hs = [None] * len(frames)
    order = range(len(frames) - 1, -1, -1) if reverse else range(len(frames))
    for t in order:
        state = plain_cell(cell, frames[t], *state)
        hs[t] = state[0]
    return hs, state


def plain_conv_lstm(model: ConvLSTM, x, state=None):
    """The whole stacked (bi)directional ConvLSTM from ``plain_cell``; batch-first x (B, T, C, H, W)."""
    frames = list(x.unbind(1))
    finals = []
    for layer in range(model.num_layers):
        outs = []
        for d in range(model.num_directions):
            index = layer * model.num_directions + d
            hs, final = plain_run(model.cells[index], frames, None if state is None else state[index], reverse=d == 1)
            outs.append(hs)
            finals.append(final)
        frames = [torch.cat(parts, dim=1) for parts in zip(*outs, strict=True)]
    return torch.stack(frames, dim=1), finals


def randomise(module: torch.nn.Module, gen: torch.Generator, scale: float = 0.3) -> torch.nn.Module:
    """Random values for every parameter, peepholes included (they start at zero)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return module


def rand(gen, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=gen, dtype=dtype)


@pytest.mark.parametrize("peephole", [None, "channel", "pixel"])
@pytest.mark.parametrize("with_state", [False, True])
def test_cell_equals_plain_convlstm(peephole, with_state, rng):
    cell = ConvLSTMCell(
        3,
        5,
        3,
        hidden_kernel_size=(5, 1),
        peephole=peephole is not None,
        peephole_shape=peephole or "channel",
        peephole_size=(7, 6),
    ).double()
    randomise(cell, rng)
    x = rand(rng, 2, 3, 7, 6, dtype=torch.float64)
    state = (
        (rand(rng, 2, 5, 7, 6, dtype=torch.float64), rand(rng, 2, 5, 7, 6, dtype=torch.float64)) if with_state else None
    )
    h, c = cell(x, state)
    zeros = torch.zeros(2, 5, 7, 6, dtype=torch.float64)
    h_ref, c_ref = plain_cell(cell, x, *(state or (zeros, zeros)))
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)
    # step() on precomputed input gates is the same as forward().
    h2, c2 = cell.step(cell.input_gates(x), state)
    torch.testing.assert_close((h2, c2), (h, c))


def test_cell_initialisation():
    cell = ConvLSTMCell(3, 4, 3, hidden_kernel_size=5, forget_bias=2.5, peephole=True)
    assert cell.hidden_conv.bias is None
    assert cell.hidden_conv.kernel_size == (5, 5) and cell.input_conv.kernel_size == (3, 3)
    assert cell.hidden_conv.padding == (2, 2) and cell.input_conv.padding == (1, 1)
    bias = cell.input_conv.bias.detach()
    assert torch.equal(bias[4:8], torch.full((4,), 2.5))
    assert torch.equal(bias[:4], torch.zeros(4)) and torch.equal(bias[8:], torch.zeros(8))
    assert cell.peephole.shape == (3, 4, 1, 1) and not cell.peephole.any()
    pixel = ConvLSTMCell(3, 4, 3, peephole=True, peephole_shape="pixel", peephole_size=(5, 6))
    assert pixel.peephole.shape == (3, 4, 5, 6) and not pixel.peephole.any()
    plain = ConvLSTMCell(3, 4, 3, bias=False)
    assert plain.input_conv.bias is None and plain.peephole is None
    assert {n for n, _ in plain.named_parameters()} == {"input_conv.weight", "hidden_conv.weight"}
    h, c = plain.init_state(2, 5, 6, dtype=torch.float64)
    assert h.shape == c.shape == (2, 4, 5, 6) and h.dtype == torch.float64 and not h.any() and not c.any()


def test_cell_zero_state_is_none_state(rng):
    cell = ConvLSTMCell(2, 3, 3)
    x = rand(rng, 2, 2, 5, 5)
    torch.testing.assert_close(cell(x), cell(x, cell.init_state(2, 5, 5)))


def test_layer_equals_looping_the_cell(rng):
    model = randomise(ConvLSTM(3, 4, 3, hidden_kernel_size=5, peephole=True), rng)
    x = rand(rng, 2, 5, 3, 6, 7)
    out, finals = model(x)
    state = None
    for t in range(5):
        state = model.cells[0](x[:, t], state)
        torch.testing.assert_close(out[:, t], state[0])
    torch.testing.assert_close(finals[0], state)


def test_multilayer_different_channels_and_kernels(rng):
    model = ConvLSTM(2, [4, 3, 5], [3, 1, 5], hidden_kernel_size=[5, 3, (1, 3)]).double()
    assert model.num_layers == 3 and len(model.cells) == 3
    assert [c.hidden_channels for c in model.cells] == [4, 3, 5]
    assert [c.in_channels for c in model.cells] == [2, 4, 3]
    assert [c.hidden_kernel_size for c in model.cells] == [(5, 5), (3, 3), (1, 3)]
    randomise(model, rng)
    x = rand(rng, 2, 4, 2, 6, 5, dtype=torch.float64)
    out, finals = model(x)
    out_ref, finals_ref = plain_conv_lstm(model, x)
    assert out.shape == (2, 4, 5, 6, 5)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(finals, finals_ref)
    assert ConvLSTM(2, 4, 3, num_layers=2).num_layers == 2


def test_batch_first_false_is_the_transpose(rng):
    first = randomise(ConvLSTM(3, [4, 2], 3, bidirectional=True), rng)
    second = ConvLSTM(3, [4, 2], 3, bidirectional=True, batch_first=False)
    second.load_state_dict(first.state_dict())
    x = rand(rng, 3, 4, 3, 5, 5)
    out, finals = first(x)
    out_t, finals_t = second(x.transpose(0, 1))
    assert out_t.shape == (4, 3, 4, 5, 5)
    torch.testing.assert_close(out_t, out.transpose(0, 1))
    torch.testing.assert_close(finals_t, finals)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_initial_state_is_respected(bidirectional, rng):
    model = randomise(ConvLSTM(2, [3, 4], [3, 5], bidirectional=bidirectional), rng).double()
    x = rand(rng, 2, 3, 2, 5, 6, dtype=torch.float64)
    state = [
        (
            rand(rng, 2, c.hidden_channels, 5, 6, dtype=torch.float64),
            rand(rng, 2, c.hidden_channels, 5, 6, dtype=torch.float64),
        )
        for c in model.cells
    ]
    out, finals = model(x, state)
    out_ref, finals_ref = plain_conv_lstm(model, x, state)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(finals, finals_ref)
    assert not torch.allclose(out, model(x)[0])


def test_bidirectional_backward_direction_runs_the_reversed_sequence(rng):
    model = randomise(ConvLSTM(2, 3, 3, bidirectional=True), rng)
    x = rand(rng, 2, 5, 2, 4, 6)
    out, finals = model(x)
    assert out.shape == (2, 5, 6, 4, 6) and len(finals) == 2
    forward = ConvLSTM(2, 3, 3)
    forward.cells[0].load_state_dict(model.cells[0].state_dict())
    backward = ConvLSTM(2, 3, 3)
    backward.cells[0].load_state_dict(model.cells[1].state_dict())
    out_f, finals_f = forward(x)
    out_b, finals_b = backward(x.flip(1))
    torch.testing.assert_close(out[:, :, :3], out_f)
    torch.testing.assert_close(out[:, :, 3:], out_b.flip(1))
    torch.testing.assert_close(finals[0], finals_f[0])
    torch.testing.assert_close(finals[1], finals_b[0])
    # Two bidirectional layers against the written-out version.
    deep = randomise(ConvLSTM(2, [3, 2], [3, 1], bidirectional=True, peephole=True), rng)
    torch.testing.assert_close(deep(x), plain_conv_lstm(deep, x))


def _flat_call(model: torch.nn.Module, names: list[str]):
    def call(x, *params):
        out, finals = functional_call(model, dict(zip(names, params, strict=True)), (x,))
        return out, finals[-1][1]

    return call


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "auto"])
def test_gradcheck_all_parameters(backend, rng):
    torch.manual_seed(0)
    tiny = randomise(ConvLSTM(1, 1, 3, hidden_kernel_size=1, peephole=True), rng).double()
    deep = randomise(
        ConvLSTM(2, [2, 1], [3, 1], hidden_kernel_size=[1, 3], peephole=True, bidirectional=True), rng
    ).double()
    with pyvidgen.backend(backend):
        for model, x, fast in ((tiny, rand(rng, 1, 2, 1, 3, 3), False), (deep, rand(rng, 1, 2, 2, 4, 3), True)):
            x = x.double().requires_grad_()
            names, params = zip(*model.named_parameters(), strict=True)
            inputs = (x, *(p.detach().clone().requires_grad_() for p in params))
            assert torch.autograd.gradcheck(_flat_call(model, list(names)), inputs, fast_mode=fast)
        # Every parameter gets a nonzero gradient.
        out, finals = deep(rand(rng, 2, 3, 2, 4, 3, dtype=torch.float64))
        grads = torch.autograd.grad(out.square().sum() + finals[0][1].sum(), list(deep.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)


def test_same_outputs_and_gradients_across_backends(rng):
    model = randomise(ConvLSTM(3, [4, 3], [3, 5], peephole=True, bidirectional=True), rng)
    x = rand(rng, 2, 4, 3, 6, 5).requires_grad_()
    upstream = rand(rng, 2, 4, 6, 6, 5)
    results = {}
    for name in BACKENDS:
        with pyvidgen.backend(name):
            out, finals = model(x)
            grads = torch.autograd.grad(out, [x, *model.parameters()], upstream)
        results[name] = (out, finals, grads)
    base = results["reference"]
    for name, got in results.items():
        torch.testing.assert_close(got[0], base[0], rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(got[1], base[1], rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(got[2], base[2], rtol=1e-4, atol=1e-4, msg=name)


def test_compiles_fullgraph(rng):
    model = randomise(ConvLSTM(2, 3, 3, peephole=True), rng)
    x = rand(rng, 2, 3, 2, 5, 5).requires_grad_()

    def loss(x):
        out, finals = model(x)
        return out.square().mean() + finals[0][1].mean()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    value = compiled(x)
    grads = torch.autograd.grad(value, [x, *model.parameters()])
    expected = torch.autograd.grad(loss(x), [x, *model.parameters()])
    torch.testing.assert_close(value, loss(x))
    torch.testing.assert_close(grads, expected)


def test_bad_arguments_raise_clear_errors(rng):
    with pytest.raises(ValueError, match=r"kernel_size must be a positive odd int.*got 4"):
        ConvLSTMCell(3, 4, 4)
    with pytest.raises(ValueError, match=r"hidden_kernel_size must be a positive odd int.*got \(3, 2\)"):
        ConvLSTMCell(3, 4, 3, hidden_kernel_size=(3, 2))
    with pytest.raises(ValueError, match=r"kernel_size must be a positive odd int.*got 2"):
        ConvLSTM(3, [4, 4], [3, 2])
    with pytest.raises(ValueError, match=r"peephole_size=\(H, W\)"):
        ConvLSTMCell(3, 4, 3, peephole=True, peephole_shape="pixel")
    with pytest.raises(ValueError, match=r"peephole_shape must be one of"):
        ConvLSTMCell(3, 4, 3, peephole=True, peephole_shape="row")
    with pytest.raises(ValueError, match=r"disagree on the number of layers: hidden_channels has 2, kernel_size has 3"):
        ConvLSTM(3, [4, 5], [3, 3, 3])
    with pytest.raises(ValueError, match=r"hidden_channels has 2 entries but num_layers is 3"):
        ConvLSTM(3, [4, 5], 3, num_layers=3)
    model = ConvLSTM(3, [4, 2], 3)
    with pytest.raises(ValueError, match=r"x must be a 5-D tensor \(B, T, C_in, H, W\), got shape \(2, 3, 8, 8\)"):
        model(rand(rng, 2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"x must have 3 channels \(in_channels\).*got 5 in shape \(2, 4, 5, 8, 8\)"):
        model(rand(rng, 2, 4, 5, 8, 8))
    with pytest.raises(ValueError, match=r"x must have 3 channels.*\(T, B, C_in, H, W\), got 4"):
        ConvLSTM(3, 4, 3, batch_first=False)(rand(rng, 2, 3, 4, 8, 8))
    with pytest.raises(ValueError, match=r"num_layers \* num_directions = 2 pairs \(h, c\), got 1"):
        model(rand(rng, 2, 4, 3, 8, 8), [model.cells[0].init_state(2, 8, 8)])
    bad = [model.cells[0].init_state(2, 8, 8), model.cells[1].init_state(2, 7, 8)]
    with pytest.raises(
        ValueError, match=r"state h must have shape \(B, C, H, W\) = \(2, 2, 8, 8\), got \(2, 2, 7, 8\)"
    ):
        model(rand(rng, 2, 4, 3, 8, 8), bad)
    with pytest.raises(ValueError, match=r"x must be a 4-D tensor"):
        model.cells[0](rand(rng, 2, 4, 3, 8, 8))
    with pytest.raises(ValueError, match=r"x must have 3 channels.*got 2"):
        model.cells[0](rand(rng, 2, 2, 8, 8))
    pixel = ConvLSTMCell(3, 4, 3, peephole=True, peephole_shape="pixel", peephole_size=(8, 8))
    with pytest.raises(ValueError, match=r"peephole must have shape"):
        pixel(rand(rng, 2, 3, 6, 6))


@pytest.mark.parametrize("batch_first", [True, False])
def test_naive_baseline_with_copied_weights_is_the_same_function(batch_first, rng):
    ours = randomise(ConvLSTM(3, [4, 5], [3, 5], batch_first=batch_first), rng)
    naive = NaiveConvLSTM(3, [4, 5], [3, 5], batch_first=batch_first).load_from(ours)
    x = rand(rng, 2, 3, 3, 6, 7)
    out, finals = ours(x)
    out_naive, finals_naive = naive(x)
    torch.testing.assert_close(out_naive, out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(finals_naive, finals, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"no peepholes and equal input and hidden kernel sizes"):
        NaiveConvLSTM(3, 4, 3).load_from(ConvLSTM(3, 4, 3, hidden_kernel_size=5))


def test_layer_timing_rows():
    rows = time_conv_lstm_layer(2, 2, 4, 6, modes=("forward", "fwd+bwd"), seconds=0.0, min_runs=1, rounds=1, warmup=0)
    assert [(r["mode"], r["provider"]) for r in rows] == [
        (m, p) for m in ("forward", "fwd+bwd") for p in ("pyvidgen", "naive", "pyvidgen_reference")
    ]
    assert all(r["ms"] > 0 and r["max_abs_diff"] < 1e-5 and r["speedup_vs_naive"] > 0 for r in rows)
    with pytest.raises(ValueError, match=r"unknown providers"):
        time_conv_lstm_layer(providers=("fast",))
