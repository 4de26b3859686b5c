// Input checks of the C++ entry points, one error type per kind of mistake as in the Python ops:
// shapes raise ValueError, dtypes TypeError, devices RuntimeError. The Python layer checks first
// with the same messages; these keep a direct call (torch.ops.pyvidgen_cpp.*) from ever reaching a
// kernel with shapes it would read out of bounds.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>

namespace pyvidgen::checks {

// `t` is a CPU tensor of rank `dims`; `layout` names the dimensions, e.g. "(B, C, H, W)".
inline void rank(const char* op, const char* name, const at::Tensor& t, int64_t dims, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == dims, op, ": ", name, " must be a ", dims, "-D tensor ", layout, ", got shape ",
                    t.sizes());
  TORCH_CHECK(t.device().is_cpu(), op, ": the cpp backend needs CPU tensors, got ", name, " on ", t.device());
}

// `t.sizes()` equals `expected`.
inline void shape(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef expected,
                  const char* layout) {
  TORCH_CHECK_VALUE(t.sizes() == expected, op, ": ", name, " must have shape ", layout, " = ", expected, ", got ",
                    t.sizes());
}

// `t` has `ref`'s dtype (float32 or float64: the cpp backend's kernels) and device.
inline void same_dtype(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                       const at::Tensor& ref) {
  TORCH_CHECK_TYPE(ref.scalar_type() == at::kFloat || ref.scalar_type() == at::kDouble, op,
                   ": the cpp backend supports float32 and float64, got ", ref.scalar_type());
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(), " but ",
                   ref_name, " has dtype ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name, " is on ",
              ref.device());
}

// The empty tensor that stands for a gradient nobody asked for (custom ops return tensors, never None).
inline at::Tensor no_grad_tensor(const at::Tensor& like) { return at::empty({0}, like.options()); }

// Whether a call keeps `anchor`'s channels_last layout in its feature maps (pyvidgen/ops/_spec.py,
// OpSpec.channels_last; the fakes apply the same rule): channels_last-contiguous and not also contiguous, as a
// C = 1 or 1 x 1 image is (torch treats those as NCHW too).
inline bool keeps_channels_last(const at::Tensor& anchor) {
  return anchor.dim() == 4 && anchor.is_contiguous(at::MemoryFormat::ChannelsLast) && !anchor.is_contiguous();
}

inline at::MemoryFormat feature_map_format(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

inline std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

}  // namespace pyvidgen::checks
