// CPU kernels of multiplicative_unit. Specification: kernels/reference/multiplicative_unit.py.
//
// Elementwise and bound by the transcendentals (three sigmoids and two tanh per element, recomputed
// in the backward from the pre-activations): vectorised with at::vec and gate_math.h, every element
// read and written once, work cut by shape into (batch, channel, pixel tile) items, or for channels_last
// tensors into pixels, each a run over its channels. Nothing is reduced, so the result cannot depend on
// the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>

#include "ops/checks.h"
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

// Where the values lie. NCHW: a row is one channel plane (HW values), and a sample's C rows of h face the 4C
// of pre as C rows per gate block. channels_last: a row is one pixel's C channels, and a pixel's 4C
// pre-activations are its gate blocks' C each. In both, row r of h (and of the output) starts at r * length,
// its g1 in pre at (r / group) * 4 * group * length + (r % group) * length, and the gate blocks are `block`
// apart.
struct Rows {
  int64_t rows, length, group;

  explicit Rows(const at::Tensor& h) {
    const int64_t channels = h.size(1), hw = h.size(2) * h.size(3);
    if (checks::keeps_channels_last(h)) {
      rows = h.size(0) * hw, length = channels, group = 1;
    } else {
      rows = h.size(0) * channels, length = hw, group = channels;
    }
  }
  int64_t block() const { return group * length; }
  int64_t gate_offset(int64_t r) const { return (r / group) * 4 * group * length + (r % group) * length; }
};

// Each run is processed in blocks, one activation at a time, through buffers that stay in L1: a loop
// then holds one exp/tanh chain and its constants in registers, where one loop doing all five spilled
// to the stack (about 25% slower, measured). The backward streams eleven planes at once, for usual
// shapes all a multiple of 4 KiB apart and so competing for the same L1 sets: its blocks are short
// (64 measured 25% faster than 256 at 16x128x32x32). Multiples of every vector width, so buffer
// stores are always whole vectors.
constexpr int64_t kBlock = 256;
constexpr int64_t kBackwardBlock = 64;

// A block of work: `segments` consecutive rows of `length` values each (several pixels' channels in
// channels_last, where a pixel's C values are too few to fill a block alone; one stretch of one row
// otherwise, segments = 1). Value k of segment s sits at buffer index s * padded + k (padded: length in
// whole vectors, so that a segment's last, partial vector never overwrites the next segment's buffer
// values), at offset + s * length + k in h and the output, and at gate + s * gate_stride + k in pre.
struct Block {
  int64_t gate, offset, segments, length, padded, gate_stride;

  // body(buffer index, offset in h, offset in pre, lanes) for every vector: each segment's full vectors, then
  // its partial one, as for_each_vector does.
  template <typename T, typename Body>
  void for_each_vector(const Body& body) const {
    constexpr int64_t width = Vec<T>::size();
    for (int64_t seg = 0; seg < segments; ++seg) {
      const int64_t b0 = seg * padded, h0 = offset + seg * length, g0 = gate + seg * gate_stride;
      int64_t k = 0;
      for (; k + width <= length; k += width) body(b0 + k, h0 + k, g0 + k, width);
      if (k < length) body(b0 + k, h0 + k, g0 + k, length - k);
    }
  }
};

// Calls fn(block) for every block of at most `capacity` buffer values (a multiple of the vector width) covering
// every row, in at::parallel_for tasks of about kGrainElements values each.
template <typename T, typename Fn>
void for_each_block(const Rows& layout, int64_t capacity, const Fn& fn) {
  constexpr int64_t width = Vec<T>::size();
  const int64_t padded = (layout.length + width - 1) / width * width;
  const int64_t row_gate_stride = layout.group == 1 ? 4 * layout.length : 0;
  if (padded <= capacity && layout.group == 1) {
    // Short rows (channels_last): blocks of whole rows.
    const int64_t per_block = capacity / padded;
    const int64_t blocks = (layout.rows + per_block - 1) / per_block;
    const int64_t grain = std::max<int64_t>(1, kGrainElements / (per_block * layout.length));
    at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t r0 = item * per_block, segments = std::min(per_block, layout.rows - r0);
        fn(Block{layout.gate_offset(r0), r0 * layout.length, segments, layout.length, padded, row_gate_stride});
      }
    });
    return;
  }
  // Long rows: tiles of kTile values, each cut into blocks of `capacity`.
  const int64_t tile = std::min(layout.length, kTile), tiles = (layout.length + tile - 1) / tile;
  at::parallel_for(0, layout.rows * tiles, std::max<int64_t>(1, kGrainElements / tile), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t row = item / tiles, p0 = (item % tiles) * tile, n = std::min(tile, layout.length - p0);
      for (int64_t k0 = 0; k0 < n; k0 += capacity) {
        const int64_t m = std::min(capacity, n - k0);
        fn(Block{layout.gate_offset(row) + p0 + k0, row * layout.length + p0 + k0, 1, m, m, 0});
      }
    }
  });
}

// The unit's inner state over one block, into L1 buffers indexed as the block's: s2 = sigmoid(g2), s3 =
// sigmoid(g3), tu = tanh(u), z = tanh(s2 h + s3 tu) (z may be tu itself: each vector reads it before writing).
template <typename T>
void inner_state(const Block& run, const T* pre, const T* h, int64_t block, T* s2, T* s3, T* tu, T* z) {
  using V = Vec<T>;
  run.for_each_vector<T>([&](int64_t j, int64_t, int64_t g, int64_t count) {
    sigmoid(V::loadu(pre + g + block, count)).store(s2 + j);
    sigmoid(V::loadu(pre + g + 2 * block, count)).store(s3 + j);
  });
  run.for_each_vector<T>(
      [&](int64_t j, int64_t, int64_t g, int64_t count) { tanh(V::loadu(pre + g + 3 * block, count)).store(tu + j); });
  run.for_each_vector<T>([&](int64_t j, int64_t o, int64_t, int64_t count) {
    tanh(V::loadu(s2 + j) * V::loadu(h + o, count) + V::loadu(s3 + j) * V::loadu(tu + j)).store(z + j);
  });
}

template <typename T>
void forward_impl(const at::Tensor& pre_t, const at::Tensor& h_t, at::Tensor& out_t) {
  using V = Vec<T>;
  const Rows layout(h_t);
  const int64_t block = layout.block();
  const T* pre = pre_t.const_data_ptr<T>();
  const T* h = h_t.const_data_ptr<T>();
  T* out = out_t.mutable_data_ptr<T>();
  for_each_block<T>(layout, kBlock, [&](const Block& run) {
    alignas(64) T s2[kBlock], s3[kBlock], tu[kBlock];
    inner_state<T>(run, pre, h, block, s2, s3, tu, tu);
    run.for_each_vector<T>([&](int64_t j, int64_t o, int64_t g, int64_t count) {
      (sigmoid(V::loadu(pre + g, count)) * V::loadu(tu + j)).store(out + o, count);
    });
  });
}

template <typename T>
void backward_impl(const at::Tensor& grad_out_t, const at::Tensor& pre_t, const at::Tensor& h_t,
                   at::Tensor& grad_pre_t, at::Tensor& grad_h_t) {
  using V = Vec<T>;
  const Rows layout(h_t);
  const int64_t block = layout.block();
  const T* grad_out = grad_out_t.const_data_ptr<T>();
  const T* pre = pre_t.const_data_ptr<T>();
  const T* h = h_t.const_data_ptr<T>();
  T* grad_pre = grad_pre_t.mutable_data_ptr<T>();
  T* grad_h = grad_h_t.mutable_data_ptr<T>();
  for_each_block<T>(layout, kBackwardBlock, [&](const Block& run) {
    alignas(64) T s1[kBackwardBlock], s2[kBackwardBlock], s3[kBackwardBlock], tu[kBackwardBlock], tz[kBackwardBlock];
    const V one(T(1));
    // The activations, recomputed as in the forward.
    run.for_each_vector<T>(
        [&](int64_t j, int64_t, int64_t g, int64_t count) { sigmoid(V::loadu(pre + g, count)).store(s1 + j); });
    inner_state<T>(run, pre, h, block, s2, s3, tu, tz);
    run.for_each_vector<T>([&](int64_t j, int64_t o, int64_t g, int64_t count) {
      const V a1 = V::loadu(s1 + j), a2 = V::loadu(s2 + j), a3 = V::loadu(s3 + j);
      const V tuv = V::loadu(tu + j), tzv = V::loadu(tz + j);
      const V go = V::loadu(grad_out + o, count);
      // The products follow the reference's order of operations, so the two round alike.
      const V d_z = go * a1 * (one - tzv * tzv);
      (go * tzv * a1 * (one - a1)).store(grad_pre + g, count);
      (d_z * V::loadu(h + o, count) * a2 * (one - a2)).store(grad_pre + g + block, count);
      (d_z * tuv * a3 * (one - a3)).store(grad_pre + g + 2 * block, count);
      (d_z * a3 * (one - tuv * tuv)).store(grad_pre + g + 3 * block, count);
      (d_z * a2).store(grad_h + o, count);
    });
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
