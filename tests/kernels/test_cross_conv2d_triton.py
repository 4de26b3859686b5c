"""Triton cross convolution against the reference: the output, both gradients, and the launchers' limits.

Under ``TRITON_INTERPRET=1`` (set by tests/conftest.py without CUDA) the kernels run on CPU tensors, so every
shape here is tiny. The default tiles hold a whole tiny plane; :func:`small_tiles` shrinks them so that the same
tiny planes span several forward tiles, several kernel-gradient splits and several passes over a row of taps.
Inputs come from the op's sample builder and the tolerances from its declaration. The last test compiles the
kernels for sm_90 (PTX and ptxas, no GPU needed) in a separate process, where the interpreter is off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

import pyvidgen  # noqa: E402
from pyvidgen.kernels.reference import cross_conv2d as ref  # noqa: E402
from pyvidgen.kernels.triton import cross_conv2d as tri  # noqa: E402
from pyvidgen.ops import OPS, cross_conv2d  # noqa: E402

pytestmark = pytest.mark.triton

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
DECLARED = OPS["cross_conv2d"]
# (B, C, H, W, kh, kw): 1x1 kernel and image, kernels larger than the image, rectangular kernels (taller and
# wider), a row of taps wider than one 16-tap pass (17 x 13 on a 3 x 20 image), primes.
DIMS = (
    (2, 3, 5, 7, 3, 3),
    (1, 1, 1, 1, 1, 1),
    (1, 2, 3, 2, 5, 7),
    (3, 2, 6, 5, 1, 3),
    (2, 1, 4, 9, 5, 1),
    (1, 1, 3, 20, 17, 13),
)
GRADS = ("grad_x", "grad_kernels")


@pytest.fixture
def gen(request) -> torch.Generator:
    """A generator seeded per test (stable across runs, different between tests)."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 2 x 4 pixels, kernel-gradient steps of 2 taps x 4 pixels, a split per chunk: tiny planes take
    every boundary (tile edges inside the image, partial tiles, several splits, several passes per tap row)."""
    monkeypatch.setattr(tri, "_TILE_ELEMENTS", 8)
    monkeypatch.setattr(tri, "_MAX_BLOCK_W", 4)
    monkeypatch.setattr(tri, "_GRAD_TILE_ELEMENTS", 8)
    monkeypatch.setattr(tri, "_MAX_BLOCK_J", 2)
    monkeypatch.setattr(tri, "_MIN_CHUNKS_PER_SPLIT", 1)


def _sample(dims, dtype, gen, magnitude=1.0) -> tuple[torch.Tensor, torch.Tensor]:
    x, kernels = DECLARED.sample(dims, dtype=torch.float64, generator=gen, magnitude=magnitude)
    return x.to(dtype=dtype, device=DEVICE), kernels.to(dtype=dtype, device=DEVICE)


def _grad_out(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype=x.dtype, device=DEVICE)


def _check(x, kernels, grad_out) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output and gradients equal the reference's within the declared tolerance, NaN exactly where the
    reference has NaN; returns the kernels' results."""
    dtype = x.dtype
    args = (x, kernels)
    out = tri.cross_conv2d_fwd(x, kernels)
    assert out.dtype == dtype and out.shape == x.shape and out.is_contiguous()
    torch.testing.assert_close(
        out, ref.cross_conv2d(x, kernels), equal_nan=True, **DECLARED.tolerance("out", args, dtype)
    )
    grads = tri.cross_conv2d_bwd(grad_out, x, kernels, (True, True))
    expected = ref.cross_conv2d_backward(grad_out, x, kernels, (True, True))
    for name, got, want, arg in zip(GRADS, grads, expected, args, strict=True):
        assert got.dtype == dtype and got.shape == arg.shape and got.is_contiguous(), name
        tol = DECLARED.tolerance(name, args, dtype)
        torch.testing.assert_close(got, want, equal_nan=True, msg=lambda m, n=name: f"{n}: {m}", **tol)
    return out, *grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dims", DIMS, ids=lambda d: "x".join(map(str, d)))
def test_matches_reference(dims, dtype, gen):
    x, kernels = _sample(dims, dtype, gen)
    _check(x, kernels, _grad_out(x, gen))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dims", [(1, 1, 7, 9, 3, 5), (2, 1, 5, 5, 7, 3), (1, 1, 3, 2, 5, 5)], ids=str)
def test_many_tiles_and_splits(small_tiles, dims, dtype, gen):
    """2 x 4 tiles over 7 x 9 and 5 x 5 planes (partial tiles on both edges), one kernel-gradient split per 4
    pixels summed in order, rows of 3 to 5 taps in passes of 2: the same values as the reference."""
    x, kernels = _sample(dims, dtype, gen)
    _check(x, kernels, _grad_out(x, gen))


@pytest.mark.parametrize("magnitude", [0.0, 1e3, 1e30])
def test_magnitudes(magnitude, gen):
    """All-zero images and images of 1e30 (float32 products of 1e30 stay finite): the reference's values."""
    x, kernels = _sample((2, 2, 5, 6, 3, 5), torch.float32, gen, magnitude)
    _check(x, kernels, _grad_out(x, gen))


@pytest.mark.parametrize("position", range(3), ids=["x", "kernels", "grad_out"])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy
def test_nonfinite_inputs(small_tiles, position, gen):
    """NaN and infinities in one input: NaN and infinities exactly where the reference has them."""
    x, kernels = _sample((1, 2, 5, 6, 3, 5), torch.float64, gen)
    tensors = [x, kernels, _grad_out(x, gen)]
    t = tensors[position].clone()
    pick = torch.randint(0, 8, t.shape, generator=gen)
    t[pick == 0] = float("nan")
    t[pick == 1] = float("inf")
    t[pick == 2] = float("-inf")
    tensors[position] = t
    _check(tensors[0], tensors[1], tensors[2])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy
def test_padding_multiplies_like_the_reference():
    """An infinite tap times the zero padding is NaN in the output (the padding is multiplied), but not in the
    input gradient (a transposed convolution takes no product beyond the border); an infinite grad_out at a
    corner makes NaN of every kernel-gradient tap that reads the padding from there."""
    x = torch.ones(1, 1, 4, 5, dtype=torch.float64, device=DEVICE)
    kernels = torch.ones(1, 1, 3, 3, dtype=torch.float64, device=DEVICE)
    kernels[0, 0, 0, 0] = float("inf")
    grad_out = torch.ones_like(x)
    out, grad_x, _ = _check(x, kernels, grad_out)
    assert out[0, 0, 0].isnan().all() and out[0, 0, :, 0].isnan().all() and not out[0, 0, 1:, 1:].isnan().any()
    assert not grad_x.isnan().any()
    grad_out[0, 0, 0, 0] = float("inf")
    _, _, grad_kernels = _check(x, torch.ones_like(kernels), grad_out)
    assert grad_kernels[0, 0, 0].isnan().all() and grad_kernels[0, 0, :, 0].isnan().all()
    assert (grad_kernels[0, 0, 1:, 1:] == float("inf")).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype, gen):
    """Half inputs are upcast inside the kernels: close to the float32 reference on the same rounded values."""
    x, kernels = _sample((2, 3, 5, 7, 3, 5), dtype, gen)
    grad_out = _grad_out(x, gen)
    got = (tri.cross_conv2d_fwd(x, kernels), *tri.cross_conv2d_bwd(grad_out, x, kernels, (True, True)))
    want = (
        ref.cross_conv2d(x.float(), kernels.float()),
        *ref.cross_conv2d_backward(grad_out.float(), x.float(), kernels.float(), (True, True)),
    )
    for name, g, w in zip(("out", *GRADS), got, want, strict=True):
        assert g.dtype == dtype, name
        tol = DECLARED.tolerance(name, (x, kernels), dtype)
        torch.testing.assert_close(g.float(), w, msg=lambda m, n=name: f"{n}: {m}", **tol)


@pytest.mark.parametrize("dims", [(0, 3, 4, 5, 3, 3), (2, 0, 4, 5, 3, 3), (2, 3, 0, 5, 3, 3), (1, 2, 4, 0, 1, 3)])
def test_empty(dims, gen):
    """No samples, no channels, no pixels: empty outputs, and zero kernel gradients for the empty sums."""
    x, kernels = _sample(dims, torch.float32, gen)
    out, grad_x, grad_kernels = _check(x, kernels, _grad_out(x, gen))
    assert out.shape == x.shape and grad_x.shape == x.shape
    assert grad_kernels.shape == kernels.shape and not grad_kernels.any()


def test_needs_grad(gen):
    """Unneeded gradients come back as None; the others are the full pass's."""
    x, kernels = _sample((2, 2, 4, 5, 3, 3), torch.float64, gen)
    grad_out = _grad_out(x, gen)
    grad_x, grad_kernels = tri.cross_conv2d_bwd(grad_out, x, kernels, (True, True))
    only_x = tri.cross_conv2d_bwd(grad_out, x, kernels, (True, False))
    only_kernels = tri.cross_conv2d_bwd(grad_out, x, kernels, (False, True))
    assert only_x[1] is None and torch.equal(only_x[0], grad_x)
    assert only_kernels[0] is None and torch.equal(only_kernels[1], grad_kernels)
    assert tri.cross_conv2d_bwd(grad_out, x, kernels, (False, False)) == (None, None)


@pytest.mark.parametrize("split", [False, True], ids=["one program per plane", "several splits"])
def test_deterministic(monkeypatch, split, gen):
    """The kernel gradient is summed in a fixed order, whether a plane is one program or several splits:
    bitwise repeatable."""
    if split:
        monkeypatch.setattr(tri, "_GRAD_TILE_ELEMENTS", 16)
        monkeypatch.setattr(tri, "_MIN_CHUNKS_PER_SPLIT", 1)
    x, kernels = _sample((1, 2, 5, 6, 3, 3), torch.float32, gen)
    grad_out = _grad_out(x, gen)
    first = tri.cross_conv2d_bwd(grad_out, x, kernels, (True, True))
    second = tri.cross_conv2d_bwd(grad_out, x, kernels, (True, True))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_through_the_op(layout, gen):
    """``pyvidgen.cross_conv2d`` on the triton backend, with non-contiguous inputs (the op hands the launchers
    contiguous copies): autograd's gradients are the reference backend's."""
    x, kernels = _sample((2, 3, 5, 6, 3, 5), torch.float64, gen)
    grad_out = _grad_out(x, gen)
    if layout == "channels_last":
        x_in = x.contiguous(memory_format=torch.channels_last)
        kernels_in = kernels.contiguous(memory_format=torch.channels_last)
    else:
        x_in = torch.zeros(2, 6, 6, 12, dtype=x.dtype, device=DEVICE)[:, ::2, 1:, ::2]
        x_in.copy_(x)
        kernels_in = torch.zeros(2, 3, 3, 10, dtype=x.dtype, device=DEVICE)[..., ::2]
        kernels_in.copy_(kernels)
    assert not x_in.is_contiguous() and not kernels_in.is_contiguous()
    results = {}
    for backend in ("triton", "reference"):
        leaves = (x_in.detach().requires_grad_(), kernels_in.detach().requires_grad_())
        with pyvidgen.backend(backend):
            out = cross_conv2d(*leaves)
            grads = torch.autograd.grad(out, leaves, grad_out)
        assert out.is_contiguous()
        results[backend] = (out, *grads)
    for name, got, want in zip(("out", *GRADS), results["triton"], results["reference"], strict=True):
        tol = DECLARED.tolerance(name, (x, kernels), torch.float64)
        torch.testing.assert_close(got, want, msg=lambda m, n=name: f"{n}: {m}", **tol)


def test_launcher_errors(gen):
    x, kernels = _sample((2, 3, 4, 5, 3, 3), torch.float32, gen)
    with pytest.raises(ValueError, match="contiguous tensors"):
        tri.cross_conv2d_fwd(x.transpose(-1, -2), kernels)
    with pytest.raises(ValueError, match="contiguous tensors"):
        tri.cross_conv2d_fwd(x, kernels.double())
    with pytest.raises(ValueError, match=r"expected x \(B, C, H, W\) and kernels \(B, C, kh, kw\)"):
        tri.cross_conv2d_fwd(x, kernels[:, :2].contiguous())
    with pytest.raises(ValueError, match=r"expected x \(B, C, H, W\)"):
        tri.cross_conv2d_fwd(x[0], kernels)
    with pytest.raises(ValueError, match="kernel sizes must be odd, got kh=3, kw=2"):
        tri.cross_conv2d_fwd(x, kernels[..., :2].contiguous())
    with pytest.raises(ValueError, match="float16/bfloat16/float32/float64"):
        tri.cross_conv2d_fwd(x.int(), kernels.int())
    grad_out = _grad_out(x, gen)
    with pytest.raises(ValueError, match=r"grad_out must be a contiguous \(2, 3, 4, 5\) tensor"):
        tri.cross_conv2d_bwd(grad_out[..., :-1], x, kernels, (True, True))
    with pytest.raises(ValueError, match="grad_out must be a contiguous"):
        tri.cross_conv2d_bwd(grad_out.double(), x, kernels, (True, True))


def test_size_limits():
    """Any odd kernel size runs (rows of taps wider than one pass take several); planes and kernels whose int32
    offsets would overflow are refused with the limit, before any launch (meta tensors: no memory)."""
    x = torch.empty(1, 1, 2**16, 2**15, device="meta")
    with pytest.raises(ValueError, match=r"cross_conv2d: the Triton kernels need H \* W plus a tile < 2\^31"):
        tri.cross_conv2d_fwd(x, torch.empty(1, 1, 3, 3, device="meta"))
    huge_kernels = torch.empty(1, 1, 2**16 + 1, 2**15 + 1, device="meta")
    with pytest.raises(ValueError, match=r"cross_conv2d: the Triton kernels need kh \* kw < 2\^31"):
        tri.cross_conv2d_bwd(torch.empty(1, 1, 3, 3, device="meta"), torch.empty(1, 1, 3, 3, device="meta"),
                             huge_kernels, (True, True))  # fmt: skip


_COMPILE_SCRIPT = textwrap.dedent(
    """
    import json, re, subprocess, sys, tempfile
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource
    from pyvidgen.kernels.triton import cross_conv2d as tri

    ptxas = get_ptxas(90).path
    taps = {"src_ptr": "*{t}", "k_ptr": "*{t}", "out_ptr": "*{t}", "H": "i32", "W": "i32", "KH": "i32", "KW": "i32",
            "tiles_w": "i32", "tiles_per_plane": "i32", "FLIP": "constexpr", "USE_F64": "constexpr",
            "BLOCK_H": "constexpr", "BLOCK_W": "constexpr"}
    grad = {"g_ptr": "*{t}", "x_ptr": "*{t}", "partial_ptr": "*fp32", "H": "i32", "W": "i32", "KH": "i32",
            "KW": "i32", "splits": "i32", "split_pixels": "i32", "USE_F64": "constexpr", "BLOCK_M": "constexpr",
            "BLOCK_J": "constexpr"}
    cases = []
    for t in ("fp32", "fp16", "bf16"):
        for flip in (False, True):
            for bh, bw in ((16, 64), (128, 8)):
                cases.append((f"taps {t} flip={flip} {bh}x{bw}", tri._cross_conv2d_taps_kernel, taps, t,
                              {"FLIP": flip, "USE_F64": False, "BLOCK_H": bh, "BLOCK_W": bw}))
        for bm, bj in ((128, 16), (256, 8), (2048, 1)):
            cases.append((f"grad_kernels {t} {bm}x{bj}", tri._cross_conv2d_grad_kernels_kernel, grad, t,
                          {"USE_F64": False, "BLOCK_M": bm, "BLOCK_J": bj}))
    report = {}
    for name, fn, signature, t, constants in cases:
        signature = {k: v.format(t=t) for k, v in signature.items()}
        src = ASTSource(fn=fn, signature=signature, constexprs=constants)
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
        with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
            f.write(compiled.asm["ptx"])
            f.flush()
            # Triton's PTX targets sm_90a (the Hopper-specific instruction set).
            command = [ptxas, "-arch=sm_90a", "-v", f.name, "-o", "/dev/null"]
            run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"ptxas failed on {name}: {run.stderr}")
        info = run.stderr
        registers = int(re.search(r"Used (\\d+) registers", info).group(1))
        spills = re.search(r"(\\d+) bytes spill stores, (\\d+) bytes spill loads", info)
        report[name] = {"registers": registers, "spill_stores": int(spills[1]), "spill_loads": int(spills[2])}
    json.dump(report, sys.stdout)
    """
)


def test_compiles_for_sm_90():
    """Every kernel in float32, float16 and bfloat16, at the tiles the launchers pick, compiles to PTX and
    through ptxas for sm_90 without spilling (in a separate process: the interpreter is off there)."""
    pytest.importorskip("triton.backends.nvidia.compiler")
    from triton.backends.nvidia.compiler import get_ptxas

    try:
        if not Path(get_ptxas(90).path).exists():
            pytest.skip("triton ships no ptxas here")
    except Exception as exc:  # noqa: BLE001 -- no CUDA toolchain at all
        pytest.skip(f"no ptxas: {exc}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    run = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout)
    assert len(report) == 21
    for name, usage in report.items():
        assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, (name, usage)
        assert usage["registers"] <= 128, (name, usage)
