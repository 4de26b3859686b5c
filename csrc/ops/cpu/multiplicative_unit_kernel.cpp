// CPU kernels of multiplicative_unit. Specification: kernels/reference/multiplicative_unit.py.
//
// Elementwise and bound by the transcendentals (three sigmoids and two tanh per element, recomputed
// in the backward from the pre-activations): vectorised with at::vec and gate_math.h, every element
// read and written once, work cut by shape into (batch, channel, pixel tile) items. Nothing is
// reduced, so the result cannot depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>

#include "ops/cpu/gate_math.h"
#include "ops/cpu/multiplicative_unit_kernel.h"

namespace pyvidgen::cpu {
namespace {

using gate_math::sigmoid;
using gate_math::tanh;

template <typename T>
using Vec = at::vec::Vectorized<T>;

// Pixels per item, and elements an at::parallel_for task should at least hold (about ten microseconds
// of exp/tanh, well above the cost of waking a second thread).
constexpr int64_t kTile = 2048;
constexpr int64_t kGrainElements = 16384;

// Full vectors, then one partial vector whose unused lanes see zeros (and never reach an output): the
// tail goes through the same arithmetic as the rest.
template <typename T, typename Body>
inline void for_each_vector(int64_t n, const Body& body) {
  constexpr int64_t width = Vec<T>::size();
  int64_t k = 0;
  for (; k + width <= n; k += width) body(k, width);
  if (k < n) body(k, n - k);
}

// Calls fn(b, ch, p0, n) for every run of at most kTile pixels of every (batch, channel) plane.
template <typename Fn>
void for_each_run(const at::Tensor& h, const Fn& fn) {
  const int64_t channels = h.size(1), hw = h.size(2) * h.size(3);
  const int64_t tile = std::min(hw, kTile), tiles = (hw + tile - 1) / tile;
  const int64_t items = h.size(0) * channels * tiles;
  at::parallel_for(0, items, std::max<int64_t>(1, kGrainElements / tile), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t plane = item / tiles, p0 = (item % tiles) * tile;
      fn(plane / channels, plane % channels, p0, std::min(tile, hw - p0));
    }
  });
}

// Each run is processed in blocks, one activation at a time, through buffers that stay in L1: a loop
// then holds one exp/tanh chain and its constants in registers, where one loop doing all five spilled
// to the stack (about 25% slower, measured). The backward streams eleven planes at once, for usual
// shapes all a multiple of 4 KiB apart and so competing for the same L1 sets: its blocks are short
// (64 measured 25% faster than 256 at 16x128x32x32). Multiples of every vector width, so buffer
// stores are always whole vectors.
constexpr int64_t kBlock = 256;
constexpr int64_t kBackwardBlock = 64;

template <typename T>
void forward_impl(const at::Tensor& pre_t, const at::Tensor& h_t, at::Tensor& out_t) {
  using V = Vec<T>;
  const int64_t channels = h_t.size(1), hw = h_t.size(2) * h_t.size(3), block = channels * hw;
  const T* pre = pre_t.const_data_ptr<T>();
  const T* h = h_t.const_data_ptr<T>();
  T* out = out_t.mutable_data_ptr<T>();
  for_each_run(h_t, [&](int64_t b, int64_t ch, int64_t p0, int64_t n) {
    alignas(64) T s2[kBlock], s3[kBlock], tu[kBlock];
    for (int64_t k0 = 0; k0 < n; k0 += kBlock) {
      const int64_t m = std::min(kBlock, n - k0);
      const T* g1 = pre + (b * 4 * channels + ch) * hw + p0 + k0;
      const int64_t offset = (b * channels + ch) * hw + p0 + k0;
      for_each_vector<T>(m, [&](int64_t k, int64_t count) {
        sigmoid(V::loadu(g1 + block + k, count)).store(s2 + k);
        sigmoid(V::loadu(g1 + 2 * block + k, count)).store(s3 + k);
      });
      for_each_vector<T>(m, [&](int64_t k, int64_t count) { tanh(V::loadu(g1 + 3 * block + k, count)).store(tu + k); });
      for_each_vector<T>(m, [&](int64_t k, int64_t count) {
        tanh(V::loadu(s2 + k) * V::loadu(h + offset + k, count) + V::loadu(s3 + k) * V::loadu(tu + k)).store(tu + k);
      });
      for_each_vector<T>(m, [&](int64_t k, int64_t count) {
        (sigmoid(V::loadu(g1 + k, count)) * V::loadu(tu + k)).store(out + offset + k, count);
      });
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& grad_out_t, const at::Tensor& pre_t, const at::Tensor& h_t,
                   at::Tensor& grad_pre_t, at::Tensor& grad_h_t) {
  using V = Vec<T>;
  const int64_t channels = h_t.size(1), hw = h_t.size(2) * h_t.size(3), block = channels * hw;
  const T* grad_out = grad_out_t.const_data_ptr<T>();
  const T* pre = pre_t.const_data_ptr<T>();
  const T* h = h_t.const_data_ptr<T>();
  T* grad_pre = grad_pre_t.mutable_data_ptr<T>();
  T* grad_h = grad_h_t.mutable_data_ptr<T>();
  for_each_run(h_t, [&](int64_t b, int64_t ch, int64_t p0, int64_t n) {
    alignas(64) T s1[kBackwardBlock], s2[kBackwardBlock], s3[kBackwardBlock], tu[kBackwardBlock], tz[kBackwardBlock];
    const V one(T(1));
    for (int64_t k0 = 0; k0 < n; k0 += kBackwardBlock) {
      const int64_t m = std::min(kBackwardBlock, n - k0);
      const int64_t gate_offset = (b * 4 * channels + ch) * hw + p0 + k0;
      const int64_t offset = (b * channels + ch) * hw + p0 + k0;
      const T* g1 = pre + gate_offset;
      T* d_g1 = grad_pre + gate_offset;
      // The activations, recomputed as in the forward.
      for_each_vector<T>(m, [&](int64_t k, int64_t count) {
        sigmoid(V::loadu(g1 + k, count)).store(s1 + k);
        sigmoid(V::loadu(g1 + block + k, count)).store(s2 + k);
        sigmoid(V::loadu(g1 + 2 * block + k, count)).store(s3 + k);
      });
      for_each_vector<T>(m, [&](int64_t k, int64_t count) { tanh(V::loadu(g1 + 3 * block + k, count)).store(tu + k); });
      for_each_vector<T>(m, [&](int64_t k, int64_t count) {
        tanh(V::loadu(s2 + k) * V::loadu(h + offset + k, count) + V::loadu(s3 + k) * V::loadu(tu + k)).store(tz + k);
      });
      for_each_vector<T>(m, [&](int64_t k, int64_t count) {
        const V a1 = V::loadu(s1 + k), a2 = V::loadu(s2 + k), a3 = V::loadu(s3 + k);
        const V tuv = V::loadu(tu + k), tzv = V::loadu(tz + k);
        const V go = V::loadu(grad_out + offset + k, count);
        // The products follow the reference's order of operations, so the two round alike.
        const V d_z = go * a1 * (one - tzv * tzv);
        (go * tzv * a1 * (one - a1)).store(d_g1 + k, count);
        (d_z * V::loadu(h + offset + k, count) * a2 * (one - a2)).store(d_g1 + block + k, count);
        (d_z * tuv * a3 * (one - a3)).store(d_g1 + 2 * block + k, count);
        (d_z * a3 * (one - tuv * tuv)).store(d_g1 + 3 * block + k, count);
        (d_z * a2).store(grad_h + offset + k, count);
      });
    }
  });
}

}  // namespace

void multiplicative_unit_forward_kernel(const at::Tensor& pre, const at::Tensor& h, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "multiplicative_unit_forward",
                             [&] { forward_impl<scalar_t>(pre, h, out); });
}

void multiplicative_unit_backward_kernel(const at::Tensor& grad_out, const at::Tensor& pre, const at::Tensor& h,
                                         at::Tensor& grad_pre, at::Tensor& grad_h) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "multiplicative_unit_backward",
                             [&] { backward_impl<scalar_t>(grad_out, pre, h, grad_pre, grad_h); });
}

}  // namespace pyvidgen::cpu
