"""Triton DRAW read and write attention against the reference: outputs and all six gradients.

Under ``TRITON_INTERPRET=1`` (set by tests/conftest.py without CUDA) the kernels run on CPU tensors,
so every shape here is tiny. The sizes sit at the kernels' tile boundaries: tiles are powers of two of
at least 16, so 1, primes, 16, 17 and N larger than the image all take padded rows or columns.
Inputs come from the ops' own sample builders (realistic and extreme attention parameters) and the
tolerances from their declarations.
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch

pytest.importorskip("triton")

from pyvidgen.kernels.reference import draw_read as ref_read  # noqa: E402
from pyvidgen.kernels.reference import draw_write as ref_write  # noqa: E402
from pyvidgen.kernels.triton import draw_read as tri_read  # noqa: E402
from pyvidgen.kernels.triton import draw_write as tri_write  # noqa: E402
from pyvidgen.ops import OPS  # noqa: E402

pytestmark = pytest.mark.triton

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
PARAMS = ("gx", "gy", "delta", "sigma2", "gamma")
# (B, C, H, W, N): one pixel, N = 1, N above the image, C = 1 and 3, sizes just above a power of two
# (17: a 32-wide tile with 15 padded lanes) and N = 16 / 17 on both sides of the 16-filter tile.
DIMS = ((2, 3, 5, 7, 3), (1, 1, 1, 1, 1), (3, 1, 4, 1, 2), (1, 3, 17, 9, 16), (2, 1, 9, 17, 17))


class Op:
    """One of the two ops: its launchers, its reference and how its arguments split."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.declared = OPS[name]
        triton_module, reference = (tri_read, ref_read) if name == "draw_read" else (tri_write, ref_write)
        self.fwd = getattr(triton_module, f"{name}_fwd")
        self.bwd = getattr(triton_module, f"{name}_bwd")
        self.ref = getattr(reference, name)
        self.ref_bwd = getattr(reference, f"{name}_backward")
        self.first = "x" if name == "draw_read" else "w"

    def sample(self, dims, dtype, gen, magnitude=1.0, variant=None) -> tuple:
        args = self.declared.sample(dims, dtype=torch.float64, generator=gen, magnitude=magnitude, variant=variant)
        return tuple(a.to(dtype=dtype, device=DEVICE) if isinstance(a, torch.Tensor) else a for a in args)

    def grad_names(self) -> tuple[str, ...]:
        return (f"grad_{self.first}", *(f"grad_{p}" for p in PARAMS))


OPERATORS = (Op("draw_read"), Op("draw_write"))


@pytest.fixture(params=OPERATORS, ids=lambda op: op.name)
def op(request) -> Op:
    return request.param


@pytest.fixture
def gen(request) -> torch.Generator:
    """A generator seeded per test (stable across runs, different between tests)."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def _grad_out(op: Op, args: tuple, gen: torch.Generator) -> torch.Tensor:
    shape = op.declared.output_shapes(args)[0]
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float64).to(dtype=args[0].dtype, device=DEVICE)


def _check(op: Op, args: tuple, gen: torch.Generator, tol_dtype: torch.dtype | None = None) -> tuple:
    """Output and gradients equal the reference's within the declaration's tolerance, NaN exactly where
    the reference has NaN (the forward, then one backward pass); returns the kernels' results."""
    dtype = args[0].dtype
    tol_dtype = tol_dtype or dtype
    out = op.fwd(*args)
    assert out.dtype == dtype and out.is_contiguous()
    torch.testing.assert_close(out, op.ref(*args), equal_nan=True, **op.declared.tolerance("out", args, tol_dtype))
    grad_out = _grad_out(op, args, gen)
    grads = op.bwd(grad_out, *args, (True,) * 6)
    expected = op.ref_bwd(grad_out, *args, (True,) * 6)
    for name, got, want, arg in zip(op.grad_names(), grads, expected, args, strict=False):
        assert got.dtype == arg.dtype and got.shape == arg.shape, name
        tol = op.declared.tolerance(name, args, tol_dtype)
        torch.testing.assert_close(got, want.to(dtype), equal_nan=True, msg=lambda m, n=name: f"{n}: {m}", **tol)
    return out, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dims", DIMS, ids=lambda d: "x".join(map(str, d)))
def test_matches_reference(op, dims, dtype, gen):
    _check(op, op.sample(dims, dtype, gen), gen)


def test_largest_supported_sizes(op, gen):
    """64-pixel planes (64 x 33: a 64-wide tile either way) and 32 filters: the launchers' limits."""
    _check(op, op.sample((1, 1, 64, 33, 32), torch.float32, gen), gen)


@pytest.mark.parametrize("dims", [(2, 3, 5, 7, 3), (1, 2, 4, 6, 4)])
def test_filters_on_pixels(op, dims, gen):
    """Integer centres and strides (0 stacks every filter on one pixel): exact Gaussians of 1 at centres."""
    _check(op, op.sample(dims, torch.float64, gen, variant="on pixels"), gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("magnitude", [0.0, 1e3, 1e30])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's numpy
def test_extreme_parameters(op, magnitude, dtype, gen):
    """Glimpses far outside the image, sigma2 of 1e-30 and 1e30, images of 1e30: the reference's values."""
    _check(op, op.sample((4, 2, 5, 6, 3), dtype, gen, magnitude=magnitude), gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's numpy: d * d = inf
def test_glimpse_outside_the_image(op, dtype, gen):
    """Every filter far outside the image: the 1e-8 floor gives zero filters, zero output, zero gradients."""
    args = list(op.sample((2, 2, 5, 6, 3), dtype, gen))
    args[1] = torch.full((2,), -1e30, dtype=dtype, device=DEVICE)  # gx: every column weight underflows
    args[4] = torch.full((2,), 1e-30, dtype=dtype, device=DEVICE)  # sigma2: and narrow
    out, grads = _check(op, tuple(args), gen)
    assert not out.any()
    for grad in grads:
        assert torch.isfinite(grad).all() and not grad.any()


@pytest.mark.parametrize("position", range(6), ids=lambda p: ("image", *PARAMS)[p])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_nonfinite_inputs(op, position, gen):
    """NaN and infinities in one input: NaN and infinities exactly where the reference has them."""
    args = list(op.sample((3, 2, 5, 7, 3), torch.float64, gen))
    t = args[position].clone()
    pick = torch.randint(0, 10, t.shape, generator=gen)
    t[pick == 0] = float("nan")
    t[pick == 1] = float("inf")
    t[pick == 2] = float("-inf")
    args[position] = t
    _check(op, tuple(args), gen)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(op, dtype, gen):
    """Half inputs are upcast inside the kernels: close to the float32 reference on the same rounded values."""
    args = op.sample((2, 3, 5, 7, 3), dtype, gen)
    upcast = tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args)
    grad_out = _grad_out(op, args, gen)
    got = (op.fwd(*args), *op.bwd(grad_out, *args, (True,) * 6))
    want = (op.ref(*upcast), *op.ref_bwd(grad_out.float(), *upcast, (True,) * 6))
    for name, g, w in zip(("out", *op.grad_names()), got, want, strict=True):
        assert g.dtype == dtype, name
        torch.testing.assert_close(
            g.float(), w, msg=lambda m, n=name: f"{n}: {m}", **op.declared.tolerance(name, args, dtype)
        )


@pytest.mark.parametrize("dims", [(0, 3, 4, 5, 3), (2, 0, 4, 5, 3)], ids=["no samples", "no channels"])
def test_empty(op, dims, gen):
    """An empty batch, or samples without channels (zero parameter gradients, as the reference's empty sums)."""
    _check(op, op.sample(dims, torch.float32, gen), gen)


def test_needs_grad(op, gen):
    """Unneeded gradients come back as None; the others are the full pass's."""
    args = op.sample((2, 2, 4, 5, 3), torch.float64, gen)
    grad_out = _grad_out(op, args, gen)
    everything = op.bwd(grad_out, *args, (True,) * 6)
    some = op.bwd(grad_out, *args, (False, True, False, False, True, False))
    for k, (a, b) in enumerate(zip(some, everything, strict=True)):
        assert (a is None) if k not in (1, 4) else torch.equal(a, b)
    # The gradients are the backward op's outputs, which may not share memory.
    assert len({g.untyped_storage().data_ptr() for g in everything}) == 6


def test_deterministic(op, gen):
    """The parameter gradients are reduced over channels in one program per sample: bitwise repeatable."""
    args = op.sample((3, 3, 6, 5, 4), torch.float32, gen)
    grad_out = _grad_out(op, args, gen)
    first = op.bwd(grad_out, *args, (True,) * 6)
    second = op.bwd(grad_out, *args, (True,) * 6)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_launcher_errors(op, gen):
    args = list(op.sample((2, 1, 4, 5, 3), torch.float32, gen))
    with pytest.raises(ValueError, match="contiguous"):
        op.fwd(args[0].transpose(-1, -2), *args[1:])
    with pytest.raises(ValueError, match="sigma2 must be a \\(2,\\) tensor"):
        op.fwd(*args[:4], args[4][:1], *args[5:])
    with pytest.raises(ValueError, match="gamma must be a \\(2,\\) tensor of torch.float32"):
        op.fwd(*args[:5], args[5].double(), *args[6:])
    grad_out = _grad_out(op, tuple(args), gen)
    with pytest.raises(ValueError, match="grad_out must be a contiguous"):
        op.bwd(grad_out[:, :, :-1], *args, (True,) * 6)


def test_size_limits(gen):
    """Sizes beyond the single-tile kernels are refused with the limit, before any launch."""
    read = OPERATORS[0]
    x, *params, n = read.sample((1, 1, 4, 5, 3), torch.float32, gen)
    big = torch.zeros(1, 1, 65, 4, device=DEVICE)
    with pytest.raises(ValueError, match="H, W <= 64, got H=65, W=4"):
        tri_read.draw_read_fwd(big, *params, n)
    with pytest.raises(ValueError, match="1 <= N <= 32 filters, got N=33"):
        tri_read.draw_read_fwd(x, *params, 33)
    with pytest.raises(ValueError, match="H, W <= 64, got H=4, W=200"):
        tri_write.draw_write_fwd(torch.zeros(1, 1, 3, 3, device=DEVICE), *params, 4, 200)
    with pytest.raises(ValueError, match="H and W must be >= 1"):
        tri_write.draw_write_fwd(torch.zeros(1, 1, 3, 3, device=DEVICE), *params, 0, 4)
