// CPU kernels of conv_lstm_gates. Specification: kernels/reference/conv_lstm_gates.py.
//
// Both passes are elementwise and bound by the transcendentals (three sigmoids and two tanh per
// element, recomputed in the backward from the pre-activations, which is all that is saved), so
// everything is vectorised with at::vec and gate_math.h, and each element is read and written once.
//
// Work is cut into items by shape alone: (batch chunk, channel, pixel tile). The gate planes of one
// (batch, channel) sit C planes apart, so a tile of pixels is a handful of contiguous runs. The
// peephole gradient sums over the batch (and over pixels for (3, C, 1, 1) weights): each item adds
// its batch chunk in batch order into its own slot (three doubles per item for (3, C, 1, 1); for
// (3, C, H, W) the output itself, or a partial buffer when the batch is split to keep both threads
// busy) and the slots are added in a fixed order afterwards, so the result is bitwise the same for any
// number of threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <vector>

#include "ops/cpu/gate_math.h"
#include "ops/cpu/conv_lstm_gates_kernel.h"

namespace pyvidgen::cpu {
namespace {

using gate_math::sigmoid;
using gate_math::tanh;

template <typename T>
using Vec = at::vec::Vectorized<T>;

// How the peephole weights broadcast: absent, one weight per pixel (3, C, H, W), or one per channel (3, C, 1, 1).
enum class Peephole { kNone, kPixel, kChannel };

// Pixels per tile: long enough that the per-item overhead vanishes, short enough that a per-channel
// sum of one tile stays accurate in float lanes before it is folded into double.
constexpr int64_t kTile = 2048;
// Elements an at::parallel_for task should at least hold: about ten microseconds of exp/tanh, well above
// the cost of waking a second thread.
constexpr int64_t kGrainElements = 16384;
// Items the peephole backward aims for before it splits the batch (and pays for partial buffers).
constexpr int64_t kMinItems = 64;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Peephole weight of pixels [k, k + count) of a run: loaded per pixel or broadcast per channel.
template <typename T, Peephole P>
inline Vec<T> weight(const T* w, int64_t k, int64_t count) {
  if constexpr (P == Peephole::kPixel) {
    return Vec<T>::loadu(w + k, count);
  } else {
    return Vec<T>(w[0]);
  }
}

// Runs a vector body over [0, n): full vectors, then one partial vector whose unused lanes see zeros
// (so the tail goes through the same arithmetic as the rest, with no scalar copy of the formulas).
template <typename T, typename Body>
inline void for_each_vector(int64_t n, const Body& body) {
  constexpr int64_t width = Vec<T>::size();
  int64_t k = 0;
  for (; k + width <= n; k += width) body(k, width);
  if (k < n) body(k, n - k);
}

// Pointers of one contiguous run of pixels inside the (batch, channel) plane.
template <typename T>
struct Run {
  const T *gi, *gf, *gg, *go, *c;
  const T *wi, *wf, *wo;  // peephole rows of this channel (offset to the run for kPixel)
};

// A run is processed in blocks, one activation at a time, through buffers that stay in L1: each loop
// then holds one exp/tanh chain and its constants in registers, where one loop doing all five spilled
// to the stack and serialised (about 25% slower, measured). The backward streams twelve planes at
// once (seven read, five written), for usual shapes all a multiple of 4 KiB apart and so competing
// for the same L1 sets: its blocks are short (64 measured 30% faster than 256 at 16x64x32x32, 32 no
// better); the forward's seven streams do best with 256. Multiples of every vector width, so buffer
// stores are always whole vectors.
constexpr int64_t kBlock = 256;
constexpr int64_t kBackwardBlock = 64;

// Pointers are copied into locals first: stores through T* could alias a struct member, which would
// make the compiler reload every pointer after every store.
template <typename T, Peephole P>
void forward_run(const Run<T>& r, T* const h_run, T* const c_next_run, int64_t n) {
  using V = Vec<T>;
  const T *const gi_run = r.gi, *const gf_run = r.gf, *const gg_run = r.gg, *const go_run = r.go;
  const T *const c_run = r.c, *const wi_run = r.wi, *const wf_run = r.wf, *const wo_run = r.wo;
  alignas(64) T act_i[kBlock], act_f[kBlock], act_g[kBlock];
  for (int64_t k0 = 0; k0 < n; k0 += kBlock) {
    const int64_t m = std::min(kBlock, n - k0);
    const T *const gi = gi_run + k0, *const gf = gf_run + k0, *const gg = gg_run + k0, *const go = go_run + k0;
    const T* const c = c_run + k0;
    T *const h = h_run + k0, *const c_next = c_next_run + k0;
    for_each_vector<T>(m, [&](int64_t k, int64_t count) {
      V pre_i = V::loadu(gi + k, count), pre_f = V::loadu(gf + k, count);
      if constexpr (P != Peephole::kNone) {
        const V cv = V::loadu(c + k, count);
        pre_i = pre_i + weight<T, P>(wi_run, k0 + k, count) * cv;
        pre_f = pre_f + weight<T, P>(wf_run, k0 + k, count) * cv;
      }
      sigmoid(pre_i).store(act_i + k);
      sigmoid(pre_f).store(act_f + k);
    });
    for_each_vector<T>(m, [&](int64_t k, int64_t count) { tanh(V::loadu(gg + k, count)).store(act_g + k); });
    for_each_vector<T>(m, [&](int64_t k, int64_t count) {
      const V cn = V::loadu(act_f + k) * V::loadu(c + k, count) + V::loadu(act_i + k) * V::loadu(act_g + k);
      cn.store(c_next + k, count);
      tanh(cn).store(act_g + k);  // tanh(c_next) replaces tanh(g)
    });
    for_each_vector<T>(m, [&](int64_t k, int64_t count) {
      V pre_o = V::loadu(go + k, count);
      if constexpr (P != Peephole::kNone) {
        pre_o = pre_o + weight<T, P>(wo_run, k0 + k, count) * V::loadu(c_next + k, count);
      }
      (sigmoid(pre_o) * V::loadu(act_g + k)).store(h + k, count);
    });
  }
}

// Where the backward of one run puts its results. The peephole sums go to acc_{i,f,o} (per pixel,
// kPixel: added to what is there) or to sums[0..2] (per channel, kChannel: added in double).
template <typename T>
struct RunGrads {
  const T *gh, *gc;  // incoming gradients of h and c_next
  T *d_gi, *d_gf, *d_gg, *d_go, *d_c;
  T *acc_i, *acc_f, *acc_o;  // kPixel
  double* sums;              // kChannel
};

template <typename T, Peephole P>
void backward_run(const Run<T>& r, const RunGrads<T>& g, int64_t n) {
  using V = Vec<T>;
  const V one(T(1)), zero(T(0));
  V sum_i(T(0)), sum_f(T(0)), sum_o(T(0));
  const T *const gi_run = r.gi, *const gf_run = r.gf, *const gg_run = r.gg, *const go_run = r.go;
  const T *const c_run = r.c, *const wi_run = r.wi, *const wf_run = r.wf, *const wo_run = r.wo;
  const T *const gh_run = g.gh, *const gc_run = g.gc;
  T *const d_gi_run = g.d_gi, *const d_gf_run = g.d_gf, *const d_gg_run = g.d_gg, *const d_go_run = g.d_go;
  T *const d_c_run = g.d_c, *const acc_i_run = g.acc_i, *const acc_f_run = g.acc_f, *const acc_o_run = g.acc_o;
  constexpr int64_t kB = kBackwardBlock;
  alignas(64) T act_i[kB], act_f[kB], act_g[kB], act_cn[kB], act_tc[kB];
  for (int64_t k0 = 0; k0 < n; k0 += kBackwardBlock) {
    const int64_t m = std::min(kBackwardBlock, n - k0);
    const T *const gi = gi_run + k0, *const gf = gf_run + k0, *const gg = gg_run + k0, *const go = go_run + k0;
    const T *const c = c_run + k0, *const gh = gh_run + k0, *const gc = gc_run + k0;
    T *const d_gi = d_gi_run + k0, *const d_gf = d_gf_run + k0, *const d_gg = d_gg_run + k0;
    T *const d_go = d_go_run + k0, *const d_c = d_c_run + k0;
    // The activations, recomputed as in the forward.
    for_each_vector<T>(m, [&](int64_t k, int64_t count) {
      V pre_i = V::loadu(gi + k, count), pre_f = V::loadu(gf + k, count);
      if constexpr (P != Peephole::kNone) {
        const V cv = V::loadu(c + k, count);
        pre_i = pre_i + weight<T, P>(wi_run, k0 + k, count) * cv;
        pre_f = pre_f + weight<T, P>(wf_run, k0 + k, count) * cv;
      }
      sigmoid(pre_i).store(act_i + k);
      sigmoid(pre_f).store(act_f + k);
    });
    for_each_vector<T>(m, [&](int64_t k, int64_t count) { tanh(V::loadu(gg + k, count)).store(act_g + k); });
    for_each_vector<T>(m, [&](int64_t k, int64_t count) {
      const V cn = V::loadu(act_f + k) * V::loadu(c + k, count) + V::loadu(act_i + k) * V::loadu(act_g + k);
      cn.store(act_cn + k);
      tanh(cn).store(act_tc + k);
    });
    // The output gate, then the gradients.
    for_each_vector<T>(m, [&](int64_t k, int64_t count) {
      const V cv = V::loadu(c + k, count), cn = V::loadu(act_cn + k);
      const V i = V::loadu(act_i + k), f = V::loadu(act_f + k), gt = V::loadu(act_g + k), tc = V::loadu(act_tc + k);
      V pre_o = V::loadu(go + k, count), w_o;
      if constexpr (P != Peephole::kNone) {
        w_o = weight<T, P>(wo_run, k0 + k, count);
        pre_o = pre_o + w_o * cn;
      }
      const V o = sigmoid(pre_o);
      const V ghv = V::loadu(gh + k, count);
      // The products follow the reference's order of operations, so the two round alike.
      const V d_gov = ghv * tc * o * (one - o);
      V d_cn = V::loadu(gc + k, count) + ghv * o * (one - tc * tc);
      if constexpr (P != Peephole::kNone) d_cn = d_cn + d_gov * w_o;
      const V d_giv = d_cn * gt * i * (one - i);
      const V d_gfv = d_cn * cv * f * (one - f);
      V d_cv = d_cn * f;
      if constexpr (P != Peephole::kNone) {
        d_cv = d_cv + d_giv * weight<T, P>(wi_run, k0 + k, count) + d_gfv * weight<T, P>(wf_run, k0 + k, count);
      }
      d_giv.store(d_gi + k, count);
      d_gfv.store(d_gf + k, count);
      (d_cn * i * (one - gt * gt)).store(d_gg + k, count);
      d_gov.store(d_go + k, count);
      d_cv.store(d_c + k, count);
      if constexpr (P == Peephole::kPixel) {
        T *const acc_i = acc_i_run + k0 + k, *const acc_f = acc_f_run + k0 + k, *const acc_o = acc_o_run + k0 + k;
        (V::loadu(acc_i, count) + d_giv * cv).store(acc_i, count);
        (V::loadu(acc_f, count) + d_gfv * cv).store(acc_f, count);
        (V::loadu(acc_o, count) + d_gov * cn).store(acc_o, count);
      } else if constexpr (P == Peephole::kChannel) {
        // Lanes past the end of the run hold values computed from zeros: keep them out of the sums.
        sum_i = sum_i + V::set(zero, d_giv * cv, count);
        sum_f = sum_f + V::set(zero, d_gfv * cv, count);
        sum_o = sum_o + V::set(zero, d_gov * cn, count);
      }
    });
  }
  if constexpr (P == Peephole::kChannel) {
    T lanes[3][V::size()];
    sum_i.store(lanes[0]);
    sum_f.store(lanes[1]);
    sum_o.store(lanes[2]);
    for (int q = 0; q < 3; ++q) {
      for (int64_t l = 0; l < V::size(); ++l) g.sums[q] += static_cast<double>(lanes[q][l]);
    }
  }
}

// Problem geometry and the shape-only cut into work items.
struct Geometry {
  int64_t batch, channels, hw, tile, tiles;

  explicit Geometry(const at::Tensor& c)
      : batch(c.size(0)), channels(c.size(1)), hw(c.size(2) * c.size(3)), tile(std::min(hw, kTile)),
        tiles(ceil_div(hw, std::max<int64_t>(tile, 1))) {}
};

template <typename T, Peephole P>
Run<T> make_run(const T* gates, const T* c, const T* peephole, const Geometry& geo, int64_t b, int64_t ch,
                int64_t p0) {
  const int64_t plane = geo.hw;
  const T* gi = gates + ((b * 4) * geo.channels + ch) * plane + p0;
  const int64_t block = geo.channels * plane;  // distance between the i, f, g and o blocks
  Run<T> r{gi, gi + block, gi + 2 * block, gi + 3 * block, c + (b * geo.channels + ch) * plane + p0,
           nullptr, nullptr, nullptr};
  if constexpr (P != Peephole::kNone) {
    const int64_t wplane = P == Peephole::kPixel ? plane : 1;
    const int64_t offset = P == Peephole::kPixel ? p0 : 0;
    r.wi = peephole + ch * wplane + offset;
    r.wf = peephole + (geo.channels + ch) * wplane + offset;
    r.wo = peephole + (2 * geo.channels + ch) * wplane + offset;
  }
  return r;
}

template <typename T, Peephole P>
void forward_impl(const at::Tensor& gates_t, const at::Tensor& c_t, const T* peephole, at::Tensor& h_t,
                  at::Tensor& c_next_t) {
  const Geometry geo(c_t);
  const T* gates = gates_t.const_data_ptr<T>();
  const T* c = c_t.const_data_ptr<T>();
  T* h = h_t.mutable_data_ptr<T>();
  T* c_next = c_next_t.mutable_data_ptr<T>();
  // Items in memory order of c: (batch, channel, tile).
  const int64_t items = geo.batch * geo.channels * geo.tiles;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / geo.tile);
  at::parallel_for(0, items, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t tile = item % geo.tiles, plane = item / geo.tiles;
      const int64_t b = plane / geo.channels, ch = plane % geo.channels;
      const int64_t p0 = tile * geo.tile, n = std::min(geo.tile, geo.hw - p0);
      const int64_t offset = plane * geo.hw + p0;
      forward_run<T, P>(make_run<T, P>(gates, c, peephole, geo, b, ch, p0), h + offset, c_next + offset, n);
    }
  });
}

template <typename T, Peephole P>
void backward_impl(const at::Tensor& grad_h_t, const at::Tensor& grad_c_next_t, const at::Tensor& gates_t,
                   const at::Tensor& c_t, const T* peephole, at::Tensor& grad_gates_t, at::Tensor& grad_c_t,
                   at::Tensor* grad_peephole_t) {
  const Geometry geo(c_t);
  const T* gates = gates_t.const_data_ptr<T>();
  const T* c = c_t.const_data_ptr<T>();
  const T* grad_h = grad_h_t.const_data_ptr<T>();
  const T* grad_c_next = grad_c_next_t.const_data_ptr<T>();
  T* grad_gates = grad_gates_t.mutable_data_ptr<T>();
  T* grad_c = grad_c_t.mutable_data_ptr<T>();
  const int64_t channels = geo.channels, hw = geo.hw;

  // One batch per item, in memory order, keeps every stream running into the next item (walking the
  // batch inside an item restarts twelve streams per plane: 15% slower, measured). That is free
  // without peepholes and for per-channel sums (three doubles per item); per-pixel sums would need a
  // (3, C, H, W) slot per batch, so there an item walks a chunk of the batch into one slot, and the
  // batch is split only when (channel, tile) items alone are too few to share out.
  int64_t chunk = 1, chunks = geo.batch;
  if constexpr (P == Peephole::kPixel) {
    const int64_t per_batch = channels * geo.tiles;
    const int64_t wanted = std::min(geo.batch, ceil_div(kMinItems, per_batch));
    chunk = ceil_div(geo.batch, wanted);
    chunks = ceil_div(geo.batch, chunk);
  }
  // kPixel: one (3, C, H*W) slot per batch chunk (the output itself when there is one chunk).
  // kChannel: three doubles per item.
  at::Tensor pixel_partial;
  T* pixel_acc = nullptr;
  std::vector<double> channel_partial;
  if constexpr (P == Peephole::kPixel) {
    if (chunks == 1) {
      pixel_acc = grad_peephole_t->mutable_data_ptr<T>();
    } else {
      pixel_partial = at::zeros({chunks, 3 * channels * hw}, grad_peephole_t->options());
      pixel_acc = pixel_partial.mutable_data_ptr<T>();
    }
  } else if constexpr (P == Peephole::kChannel) {
    channel_partial.assign(chunks * channels * geo.tiles * 3, 0.0);
  }

  const int64_t items = chunks * channels * geo.tiles;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / (geo.tile * chunk));
  at::parallel_for(0, items, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t tile = item % geo.tiles, ch = (item / geo.tiles) % channels;
      const int64_t part = item / (geo.tiles * channels);
      const int64_t p0 = tile * geo.tile, n = std::min(geo.tile, hw - p0);
      RunGrads<T> g{};
      if constexpr (P == Peephole::kPixel) {
        T* slot = pixel_acc + part * 3 * channels * hw + ch * hw + p0;
        g.acc_i = slot;
        g.acc_f = slot + channels * hw;
        g.acc_o = slot + 2 * channels * hw;
      } else if constexpr (P == Peephole::kChannel) {
        g.sums = channel_partial.data() + item * 3;
      }
      const int64_t b_end = std::min(geo.batch, (part + 1) * chunk);
      for (int64_t b = part * chunk; b < b_end; ++b) {
        const int64_t offset = (b * channels + ch) * hw + p0;
        const int64_t gate_offset = (b * 4 * channels + ch) * hw + p0;
        const int64_t block = channels * hw;
        g.gh = grad_h + offset;
        g.gc = grad_c_next + offset;
        g.d_gi = grad_gates + gate_offset;
        g.d_gf = g.d_gi + block;
        g.d_gg = g.d_gi + 2 * block;
        g.d_go = g.d_gi + 3 * block;
        g.d_c = grad_c + offset;
        backward_run<T, P>(make_run<T, P>(gates, c, peephole, geo, b, ch, p0), g, n);
      }
    }
  });

  // Fixed-order reduction of the per-chunk slots.
  if constexpr (P == Peephole::kPixel) {
    if (chunks > 1) {
      T* out = grad_peephole_t->mutable_data_ptr<T>();
      const int64_t size = 3 * channels * hw;
      at::parallel_for(0, size, 16384, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          T total = pixel_acc[k];
          for (int64_t part = 1; part < chunks; ++part) total += pixel_acc[part * size + k];
          out[k] = total;
        }
      });
    }
  } else if constexpr (P == Peephole::kChannel) {
    T* out = grad_peephole_t->mutable_data_ptr<T>();
    for (int64_t q = 0; q < 3; ++q) {
      for (int64_t ch = 0; ch < channels; ++ch) {
        double total = 0.0;
        for (int64_t part = 0; part < chunks; ++part) {
          for (int64_t tile = 0; tile < geo.tiles; ++tile) {
            total += channel_partial[((part * channels + ch) * geo.tiles + tile) * 3 + q];
          }
        }
        out[q * channels + ch] = static_cast<T>(total);
      }
    }
  }
}

Peephole peephole_kind(const std::optional<at::Tensor>& peephole) {
  if (!peephole.has_value()) return Peephole::kNone;
  return peephole->size(2) * peephole->size(3) == 1 ? Peephole::kChannel : Peephole::kPixel;
}

}  // namespace

void conv_lstm_gates_forward_kernel(const at::Tensor& gates, const at::Tensor& c,
                                    const std::optional<at::Tensor>& peephole, at::Tensor& h, at::Tensor& c_next) {
  const Peephole kind = peephole_kind(peephole);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "conv_lstm_gates_forward", [&] {
    const scalar_t* w = peephole.has_value() ? peephole->const_data_ptr<scalar_t>() : nullptr;
    switch (kind) {
      case Peephole::kNone:
        forward_impl<scalar_t, Peephole::kNone>(gates, c, w, h, c_next);
        break;
      case Peephole::kPixel:
        forward_impl<scalar_t, Peephole::kPixel>(gates, c, w, h, c_next);
        break;
      case Peephole::kChannel:
        forward_impl<scalar_t, Peephole::kChannel>(gates, c, w, h, c_next);
        break;
    }
  });
}

void conv_lstm_gates_backward_kernel(const at::Tensor& grad_h, const at::Tensor& grad_c_next, const at::Tensor& gates,
                                     const at::Tensor& c, const std::optional<at::Tensor>& peephole,
                                     at::Tensor& grad_gates, at::Tensor& grad_c, at::Tensor* grad_peephole) {
  const Peephole kind = peephole_kind(peephole);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "conv_lstm_gates_backward", [&] {
    const scalar_t* w = peephole.has_value() ? peephole->const_data_ptr<scalar_t>() : nullptr;
    switch (kind) {
      case Peephole::kNone:
        backward_impl<scalar_t, Peephole::kNone>(grad_h, grad_c_next, gates, c, w, grad_gates, grad_c, nullptr);
        break;
      case Peephole::kPixel:
        backward_impl<scalar_t, Peephole::kPixel>(grad_h, grad_c_next, gates, c, w, grad_gates, grad_c,
                                                   grad_peephole);
        break;
      case Peephole::kChannel:
        backward_impl<scalar_t, Peephole::kChannel>(grad_h, grad_c_next, gates, c, w, grad_gates, grad_c,
                                                     grad_peephole);
        break;
    }
  });
}

}  // namespace pyvidgen::cpu
