// CPU masked convolution. Specification: kernels/reference/masked_conv2d.py.
//
// The taps below the centre row are hidden, so they are never computed: the convolution runs over
// kernel rows 0 .. k / 2 only, on the input padded by dilation * (k / 2) above and at the sides (none
// below), which gives the "same" output size with no wasted rows. The centre row's hidden right half
// is multiplied by exact zeros: computing the centre row's left part as a second convolution measured
// slower (one more oneDNN call and pass over the output) than spending those few taps.
//
// In float32, oneDNN runs in channels-last (NHWC): its NCHW kernels for these row convolutions measured
// up to 2x slower than its NHWC ones on a 2-core Zen 5, its NCHW backward-data slowest of all. The
// input is transposed into a padded NHWC buffer, and the results back, by a tiled copy (layout_copy.h)
// into buffers from the output cache. The gradient of x is a forward convolution of the gradient (padded
// below and at the sides) with the visible rows flipped and their channels swapped, which measured
// faster than oneDNN's backward-data. A channels_last x (a channels_last model's feature map) skips the
// transposes: its padding is a row-by-row copy, a 1x1 kernel's none, and the output and x's gradient are
// returned channels_last, as conv2d returns them. At 16x64x32x32, fwd+bwd against the dense masked convolution,
// alternating call by call with every tensor on the output cache (so that neither side pays page faults):
// 7x7 mask A 1.6x, 3x3 mask B 1.1-1.2x. With torch's allocator, where the dense convolution's fresh
// buffers fault in, 1.7-1.8x and 1.5-1.7x (this path in NCHW measured 1.3-1.4x and 0.8-1.0x there).
#include "ops/cpu/masked_conv2d_kernel.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <tuple>

#include "ops/checks.h"
#include "ops/cpu/layout_copy.h"
#include "ops/outputs.h"

namespace pyvidgen::cpu {
namespace {

// floor(c * groups / channels): the colour group of channel c.
inline int64_t group_of(int64_t c, int64_t channels, int64_t groups) { return c * groups / channels; }

// dst[co, ci, r, s] = visible ? src[co, ci, r, s] : 0 for the k / 2 + 1 top rows; src has `src_rows` rows.
// The rows above the centre are wholly visible (a block copy); in the centre row the left taps are, the
// centre tap by colour group, the right taps never.
template <typename T>
void copy_visible(const T* src, int64_t src_rows, T* dst, int64_t cout, int64_t cin, int64_t k, bool type_a,
                  int64_t groups) {
  const int64_t centre = k / 2, rows = centre + 1;
  at::parallel_for(0, cout, 16, [&](int64_t begin, int64_t end) {
    for (int64_t co = begin; co < end; ++co) {
      const int64_t g_out = group_of(co, cout, groups);
      for (int64_t ci = 0; ci < cin; ++ci) {
        const T* s_tap = src + (co * cin + ci) * src_rows * k;
        T* d_tap = dst + (co * cin + ci) * rows * k;
        std::copy(s_tap, s_tap + centre * k + centre, d_tap);
        const int64_t g_in = group_of(ci, cin, groups);
        const bool centre_visible = type_a ? g_in < g_out : g_in <= g_out;
        d_tap[centre * k + centre] = centre_visible ? s_tap[centre * k + centre] : T(0);
        std::fill(d_tap + centre * k + centre + 1, d_tap + rows * k, T(0));
      }
    }
  });
}

// x (B, C, H, W) padded by `reach` above, left and right (none below: those rows are never read).
at::Tensor pad_above(const at::Tensor& x, int64_t reach) { return at::constant_pad_nd(x, {reach, reach, reach, 0}); }

// x (B, C, H, W), any strides, padded by `top` rows above, `bottom` below and `side` columns at each side
// into a channels-last view of a buffer from the output cache: the border is zeroed, x copied in. Without
// padding, a channels_last-contiguous x is its own result (no copy).
at::Tensor pad_channels_last(const at::Tensor& x, int64_t top, int64_t bottom, int64_t side) {
  if (top == 0 && bottom == 0 && side == 0 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) return x;
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const at::Tensor padded =
      outputs::empty({batch, top + height + bottom, width + 2 * side, channels}, x.options()).permute({0, 3, 1, 2});
  if (top > 0) padded.narrow(2, 0, top).zero_();
  if (bottom > 0) padded.narrow(2, top + height, bottom).zero_();
  const at::Tensor body = padded.narrow(2, top, height);
  if (side > 0) {
    body.narrow(3, 0, side).zero_();
    body.narrow(3, side + width, side).zero_();
  }
  copy_between_layouts(x, body.narrow(3, side, width));
  return padded;
}

// A contiguous (B, C, H, W) copy of t (a channels-last result) from the output cache.
at::Tensor contiguous_copy(const at::Tensor& t) {
  at::Tensor out = outputs::empty(t.sizes(), t.options());
  copy_between_layouts(t, out);
  return out;
}

// Whether to run in channels-last (see the top of the file): float32 only (oneDNN has no float64
// kernels; reduced precision keeps ATen's choice). A channels_last x always does: there is nothing to
// transpose. An NCHW x not for the smallest calls, where the transposes and padding outweigh the gain
// (a 1x64x32x32 layer fwd+bwd measured 0.96x, 4x64x32x32 1.09x).
bool use_channels_last(const at::Tensor& x, int64_t cout, bool keeps_layout) {
  constexpr int64_t kMinValues = int64_t{1} << 18;  // in x and the output together
  const int64_t pixels = x.size(0) * x.size(2) * x.size(3);
  return x.scalar_type() == at::kFloat && (keeps_layout || pixels * (x.size(1) + cout) >= kMinValues);
}

// A result of the channels-last path in the caller's layout: as it is for a channels_last x, else an NCHW copy.
at::Tensor in_layout(const at::Tensor& result, bool keeps_layout) {
  return keeps_layout ? result.contiguous(at::MemoryFormat::ChannelsLast) : contiguous_copy(result);
}

}  // namespace

at::Tensor masked_visible_rows(const at::Tensor& weight_in, bool type_a, int64_t color_groups) {
  // `weight` has k columns and k rows (a kernel) or k / 2 + 1 rows (a gradient of the visible rows).
  const at::Tensor weight = weight_in.contiguous();
  const int64_t cout = weight.size(0), cin = weight.size(1), src_rows = weight.size(2), k = weight.size(3);
  at::Tensor rows = at::empty({cout, cin, k / 2 + 1, k}, weight.options());
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "masked_visible_rows", [&] {
    copy_visible(weight.const_data_ptr<scalar_t>(), src_rows, rows.mutable_data_ptr<scalar_t>(), cout, cin, k,
                 type_a, color_groups);
  });
  return rows;
}

at::Tensor masked_conv2d_forward_kernel(const at::Tensor& x, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, bool type_a, int64_t color_groups,
                                        int64_t dilation) {
  const int64_t k = weight.size(2), reach = dilation * (k / 2);
  const at::Tensor rows = masked_visible_rows(weight, type_a, color_groups);
  const bool keeps_layout = checks::keeps_channels_last(x);
  if (use_channels_last(x, weight.size(0), keeps_layout)) {
    return in_layout(at::convolution(pad_channels_last(x, reach, 0, reach),
                                     rows.contiguous(at::MemoryFormat::ChannelsLast), bias, {1, 1}, {0, 0},
                                     {dilation, dilation}, false, {0, 0}, 1),
                     keeps_layout);
  }
  return at::convolution(pad_above(x.contiguous(), reach), rows, bias, {1, 1}, {0, 0}, {dilation, dilation}, false,
                         {0, 0}, 1)
      .contiguous(checks::feature_map_format(keeps_layout));
}

std::array<at::Tensor, 3> masked_conv2d_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x,
                                                        const at::Tensor& weight, bool has_bias, bool type_a,
                                                        int64_t color_groups, int64_t dilation,
                                                        std::array<bool, 3> needs_grad) {
  const int64_t cout = weight.size(0), k = weight.size(2), reach = dilation * (k / 2);
  const at::Tensor rows = masked_visible_rows(weight, type_a, color_groups);
  const std::vector<int64_t> bias_sizes{cout};
  const at::OptionalIntArrayRef bias_arg = has_bias ? at::OptionalIntArrayRef(bias_sizes) : std::nullopt;
  at::Tensor grad_rows, grad_bias;
  std::array<at::Tensor, 3> grads;
  const bool keeps_layout = checks::keeps_channels_last(x);
  if (use_channels_last(x, cout, keeps_layout)) {
    const int64_t height = x.size(2), width = x.size(3);
    at::Tensor grad;  // grad_out in channels-last, dense: oneDNN copies a strided one with ATen's slow copy
    if (needs_grad[0]) {
      // The gradient of x: grad_out padded below and at the sides, convolved with the visible rows flipped
      // and their channels swapped.
      const at::Tensor grad_padded = pad_channels_last(grad_out, 0, reach, reach);
      const at::Tensor flipped = rows.flip({2, 3}).transpose(0, 1).contiguous(at::MemoryFormat::ChannelsLast);
      grads[0] = in_layout(at::convolution(grad_padded, flipped, std::nullopt, {1, 1}, {0, 0}, {dilation, dilation},
                                           false, {0, 0}, 1),
                           keeps_layout);
      grad = grad_padded.narrow(2, 0, height).narrow(3, reach, width);
    }
    // The bias gradient as a plain sum of grad_out: oneDNN's channels-last weight gradient computes it
    // in a slower extra pass (4.6% of a 3x3 layer's time in a profile), and a call that wants only the
    // bias gradient then skips the convolution.
    if (needs_grad[2] && has_bias) grad_bias = grad_out.sum({0, 2, 3});
    if (needs_grad[1]) {
      // A channels_last grad_out (a channels_last call's) is already what oneDNN wants.
      const bool dense = grad_out.is_contiguous(at::MemoryFormat::ChannelsLast);
      grad = pad_channels_last(grad.defined() && !dense ? grad : grad_out, 0, 0, 0);
      grad_rows = std::get<1>(at::convolution_backward(
          grad, pad_channels_last(x, reach, 0, reach), rows.contiguous(at::MemoryFormat::ChannelsLast), std::nullopt,
          {1, 1}, {0, 0}, {dilation, dilation}, false, {0, 0}, 1, {false, true, false}));
    }
  } else {
    at::Tensor grad_padded;
    std::tie(grad_padded, grad_rows, grad_bias) = at::convolution_backward(
        grad_out.contiguous(), pad_above(x.contiguous(), reach), rows, bias_arg, {1, 1}, {0, 0}, {dilation, dilation},
        false, {0, 0}, 1, {needs_grad[0], needs_grad[1], needs_grad[2] && has_bias});
    if (needs_grad[0]) {
      grads[0] = grad_padded.slice(2, reach)
                     .slice(3, reach, reach + x.size(3))
                     .contiguous(checks::feature_map_format(keeps_layout));
    }
  }
  if (needs_grad[1]) {
    // Hidden taps get exact zeros: the rows below the centre were never part of the convolution, and
    // the hidden taps of the centre row are masked out of the dense row gradient.
    grads[1] = at::zeros_like(weight, at::MemoryFormat::Contiguous);
    const at::Tensor masked = masked_visible_rows(grad_rows, type_a, color_groups);  // grad_rows has k / 2 + 1 rows
    grads[1].narrow(2, 0, k / 2 + 1).copy_(masked);
  }
  if (needs_grad[2] && has_bias) grads[2] = grad_bias;
  return grads;
}

}  // namespace pyvidgen::cpu
