"""CrossConv2d: one op call per scale, each sample with its own kernels, errors for mismatched inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyvidgen.nn import CrossConv2d
from pyvidgen.ops import cross_conv2d


def _per_sample(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """The Torch7 demo's way: one depthwise convolution per sample."""
    pad = (kernels.shape[-2] // 2, kernels.shape[-1] // 2)
    return torch.cat(
        [F.conv2d(x[b : b + 1], kernels[b, :, None], padding=pad, groups=x.shape[1]) for b in range(len(x))]
    )


def test_a_tensor_in_gives_the_op_out(rng):
    x = torch.randn(3, 4, 9, 7, generator=rng)
    kernels = torch.randn(3, 4, 3, 5, generator=rng)
    out = CrossConv2d()(x, kernels)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, cross_conv2d(x, kernels))
    torch.testing.assert_close(out, _per_sample(x, kernels), rtol=1e-5, atol=1e-5)


def test_scales_of_different_sizes_each_get_their_kernels(rng):
    features = [torch.randn(2, 3, size, size, generator=rng, requires_grad=True) for size in (4, 8, 16)]
    kernels = [torch.randn(2, 3, k, k, generator=rng, requires_grad=True) for k in (1, 3, 5)]
    out = CrossConv2d()(tuple(features), kernels)
    assert isinstance(out, list) and [o.shape for o in out] == [f.shape for f in features]
    for o, x, k in zip(out, features, kernels, strict=True):
        torch.testing.assert_close(o, _per_sample(x, k), rtol=1e-5, atol=1e-5)
    sum(o.square().sum() for o in out).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in features + kernels)


def test_no_parameters_and_a_shift_kernel_moves_each_sample_its_own_way():
    layer = CrossConv2d()
    assert not list(layer.parameters())
    x = torch.zeros(2, 1, 5, 5)
    x[:, 0, 2, 2] = 1.0
    kernels = torch.zeros(2, 1, 3, 3)
    kernels[0, 0, 1, 0] = 1.0  # output (y, x) reads input (y, x - 1): content moves one pixel right
    kernels[1, 0, 0, 1] = 1.0  # reads (y - 1, x): content moves one pixel down
    out = layer(x, kernels)
    assert out[0, 0, 2, 3] == 1 and out[1, 0, 3, 2] == 1 and out.sum() == 2


def test_bad_inputs(rng):
    layer = CrossConv2d()
    x = torch.randn(2, 3, 8, 8, generator=rng)
    k = torch.randn(2, 3, 3, 3, generator=rng)
    with pytest.raises(ValueError, match="features is one tensor, so kernels must be one too"):
        layer(x, [k])
    with pytest.raises(ValueError, match="2 feature maps but 1 kernel tensors"):
        layer([x, x], [k])
    with pytest.raises(ValueError, match="both be tensors or both lists"):
        layer([x], k)
    with pytest.raises(ValueError, match="kernel size kh must be odd"):
        layer(x, torch.randn(2, 3, 2, 3))
