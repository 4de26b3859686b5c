"""Visual Dynamics' cross convolution layer (Xue et al. 2016): feature maps convolved with per-sample kernels.

The cross convolutional network decodes, from a motion code z, one set of depthwise kernels per sample and per
scale of an image pyramid, and convolves each sample's feature maps at that scale with them. This module applies
:func:`pyvidgen.ops.cross_conv2d` (one op call per scale, the whole batch at once) to a list of feature maps.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from pyvidgen.ops import cross_conv2d


def _describe(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


class CrossConv2d(nn.Module):
    """Cross convolution of feature maps with per-sample depthwise kernels, scale by scale.

    The layer has no parameters: the kernels are an input (in the paper, the kernel decoder's output).
    ``out[s][b, c] = features[s][b, c] (*) kernels[s][b, c]`` (a cross-correlation, as ``F.conv2d``) with zero
    "same" padding, so every output has its input's shape.

    Shape:
        - features: (B, C_s, H_s, W_s), or a list/tuple of such tensors (one per scale; sizes may differ)
        - kernels: (B, C_s, kh_s, kw_s) per scale (odd kh_s, kw_s), a tensor or a list/tuple matching ``features``
        - output: a tensor (B, C_s, H_s, W_s) for a tensor input, else a list of them, one per scale

    Example:
        >>> layer = CrossConv2d()
        >>> out = layer([torch.rand(2, 4, 8, 8), torch.rand(2, 4, 16, 16)], [torch.rand(2, 4, 5, 5)] * 2)
        >>> [tuple(o.shape) for o in out]
        [(2, 4, 8, 8), (2, 4, 16, 16)]
    """

    def forward(self, features: Tensor | Sequence[Tensor], kernels: Tensor | Sequence[Tensor]) -> Tensor | list[Tensor]:
        """Convolve each scale's features with that scale's kernels (see the class docstring for shapes)."""
        if isinstance(features, Tensor):
            if not isinstance(kernels, Tensor):
                raise ValueError(
                    f"CrossConv2d: features is one tensor, so kernels must be one too, got {_describe(kernels)}"
                )
            return cross_conv2d(features, kernels)
        if not isinstance(features, (list, tuple)) or not isinstance(kernels, (list, tuple)):
            raise ValueError(
                "CrossConv2d: features and kernels must both be tensors or both lists of tensors, got "
                f"{_describe(features)} and {_describe(kernels)}"
            )
        if len(features) != len(kernels):
            raise ValueError(
                f"CrossConv2d: {len(features)} feature maps but {len(kernels)} kernel tensors (one per scale)"
            )
        return [cross_conv2d(x, k) for x, k in zip(features, kernels, strict=True)]
