// CPU kernels of cross_conv2d. Specification: kernels/reference/cross_conv2d.py.
//
// Every (b, c) plane is independent: parallel over planes, each computed whole by one thread in a fixed
// order, so the results are the same bit for bit for any thread count, without atomics. A thread copies
// its plane into a zero-padded buffer (the kernel's reach above, below and at the sides, and wide enough
// for whole vectors over every output column), then:
// - forward, and grad_x (the correlation of grad_out with the kernel flipped): blocks of output column vectors
//   (at::vec) accumulated in registers over every tap, two output rows at once (four for planes one or two
//   vectors wide); each input vector loaded serves all the rows of the block, each tap is broadcast once a plane.
// - grad_kernels[i, j] = sum_{y, x} grad_out[y, x] * x_padded[y + i, x + j]: one vector accumulator per tap
//   of a block of two tap rows by up to six tap columns, held in registers over the whole plane (each input
//   vector loaded serves the two tap rows), lanes added in order at the end.
// Zero padding as the float64 reference: the forward and the kernel gradient multiply the padding (0 * inf is
// NaN at the border, as there), while grad_x only sums grad_out inside the image: with a non-finite tap that
// differs from the padded correlation, so such a plane takes an exact scalar path. (The float32 reference skips
// the padding in the forward and the kernel gradient too for most shapes, oneDNN's choice: there the NaN
// pattern at the border differs when an input is non-finite.)
#include "ops/cpu/cross_conv2d_kernel.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace pyvidgen::cpu {
namespace {

template <typename T>
using Vec = at::vec::Vectorized<T>;

// Output column vectors per block of two rows of the correlation, and the widest block of kernel-gradient tap
// columns: 2 rows x 4 vectors, or 2 tap rows x 6 columns, of accumulators fit the 16 vector registers with their
// operands.
constexpr int kBlockVectors = 4;
constexpr int kBlockTaps = 6;

// `v` held in a register: without this, the compiler folds an input vector that feeds several accumulators
// into each of their FMAs as a memory operand, loading it once per use, and the loads become the bottleneck.
#if defined(CPU_CAPABILITY_AVX2) && defined(__GNUC__)
C10_ALWAYS_INLINE Vec<float> in_register(Vec<float> v) {
  __m256 raw = v;
  asm("" : "+x"(raw));
  return raw;
}
C10_ALWAYS_INLINE Vec<double> in_register(Vec<double> v) {
  __m256d raw = v;
  asm("" : "+x"(raw));
  return raw;
}
#else
template <typename T>
C10_ALWAYS_INLINE Vec<T> in_register(Vec<T> v) {
  return v;
}
#endif

// A plane's geometry and its zero-padded copy: `ph` rows above and below, `pw` columns left, the rows `stride`
// apart so that whole vectors over every output column (`vectors` per row) plus the reach stay inside.
struct Plane {
  int64_t height, width, kh, kw, ph, pw, vectors, stride, rows;

  Plane(int64_t h, int64_t w, int64_t kh_, int64_t kw_, int64_t lanes)
      : height(h), width(w), kh(kh_), kw(kw_), ph(kh_ / 2), pw(kw_ / 2), vectors((w + lanes - 1) / lanes),
        stride(vectors * lanes + kw_ - 1), rows(h + kh_ - 1) {}

  int64_t area() const { return height * width; }
  int64_t taps() const { return kh * kw; }
  int64_t padded_size() const { return rows * stride; }
};

// The plane `src` into the interior of `dst`, whose border is zero and stays zero.
template <typename T>
void pad_into(const T* src, const Plane& p, T* dst) {
  for (int64_t y = 0; y < p.height; ++y) {
    std::copy(src + y * p.width, src + (y + 1) * p.width, dst + (y + p.ph) * p.stride + p.pw);
  }
}

// ------------------------------------------------------------------------------------------ correlation

// One input row t of a block of correlate_block: acc[s] += taps[t - s][j] * row[x + j] for the output rows s in
// S0 .. S1 (those with a tap row t - s), each input vector loaded once for all of them.
template <int NR, int NV, int S0, int S1, typename T>
C10_ALWAYS_INLINE void correlate_input_row(Vec<T> (&acc)[NR][NV], const T* row, const Vec<T>* taps, int64_t t,
                                           int64_t kw) {
  constexpr int64_t L = Vec<T>::size();
  for (int64_t j = 0; j < kw; ++j) {
    Vec<T> values[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) values[v] = in_register(Vec<T>::loadu(row + j + v * L));
#pragma GCC unroll 16
    for (int s = S0; s <= S1; ++s) {
      const Vec<T> tap = taps[(t - s) * kw + j];
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[s][v] = at::vec::fmadd(tap, values[v], acc[s][v]);
    }
  }
}

// Output rows y0 .. y0 + NR - 1 and columns x0 .. x0 + NV * lanes - 1 (those below x0 + `valid` stored) of
// out[y][x] = sum_{i, j} taps[i * kw + j] * padded[y + i][x + j], with `in` at padded[y0][x0] and `out` at
// out[y0][x0]; kh >= NR - 1. Input row t feeds output row y0 + s through tap row t - s: loaded once for all the
// rows it feeds. The first and last NR - 1 input rows feed only some rows of the block: unrolled, so that the
// accumulators stay in registers.
template <int NR, int NV, typename T>
void correlate_block(const T* in, const Vec<T>* taps, const Plane& p, int64_t valid, T* out) {
  constexpr int64_t L = Vec<T>::size();
  const int64_t kh = p.kh, kw = p.kw, stride = p.stride;
  Vec<T> acc[NR][NV];
#pragma GCC unroll 16
  for (int s = 0; s < NR; ++s) {
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[s][v] = Vec<T>(T(0));
  }
  [&]<int... E>(std::integer_sequence<int, E...>) {  // input rows 0 .. NR - 2 feed rows 0 .. E
    (correlate_input_row<NR, NV, 0, E>(acc, in + E * stride, taps, E, kw), ...);
  }(std::make_integer_sequence<int, NR - 1>{});
  for (int64_t t = NR - 1; t < kh; ++t) correlate_input_row<NR, NV, 0, NR - 1>(acc, in + t * stride, taps, t, kw);
  [&]<int... E>(std::integer_sequence<int, E...>) {  // input rows kh .. kh + NR - 2 feed rows E + 1 .. NR - 1
    (correlate_input_row<NR, NV, E + 1, NR - 1>(acc, in + (kh + E) * stride, taps, kh + E, kw), ...);
  }(std::make_integer_sequence<int, NR - 1>{});
#pragma GCC unroll 16
  for (int s = 0; s < NR; ++s) {
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const int64_t x = v * L;
      if (x + L <= valid) {
        acc[s][v].store(out + s * p.width + x);
      } else if (x < valid) {
        acc[s][v].store(out + s * p.width + x, static_cast<int>(valid - x));
      }
    }
  }
}

// correlate_block with NV = `vectors` (at most MaxNV), chosen at run time.
template <int NR, int MaxNV, typename T>
void correlate_block_of(int64_t vectors, const T* in, const Vec<T>* taps, const Plane& p, int64_t valid, T* out) {
  if constexpr (MaxNV > 1) {
    if (vectors < MaxNV) return correlate_block_of<NR, MaxNV - 1>(vectors, in, taps, p, valid, out);
  }
  correlate_block<NR, MaxNV>(in, taps, p, valid, out);
}

// Output rows y0 .. y0 + NR - 1, every column: blocks of NR x MaxNV vectors (8 accumulators), the last narrower.
template <int NR, typename T>
void correlate_rows(const T* padded, const Vec<T>* taps, const Plane& p, int64_t y0, T* out) {
  constexpr int64_t L = Vec<T>::size();
  constexpr int MaxNV = kBlockVectors * 2 / std::max(NR, 2);
  const T* in = padded + y0 * p.stride;
  T* out_rows = out + y0 * p.width;
  for (int64_t v0 = 0; v0 < p.vectors; v0 += MaxNV) {
    const int64_t x0 = v0 * L;
    correlate_block_of<NR, MaxNV>(std::min<int64_t>(p.vectors - v0, MaxNV), in + x0, taps, p, p.width - x0,
                                  out_rows + x0);
  }
}

// out (H, W) = the padded plane correlated with `taps` (kh * kw broadcast vectors). Narrow planes (one or two
// vectors a row) take four rows at a time, to keep 8 independent accumulators in flight.
template <typename T>
void correlate(const T* padded, const Vec<T>* taps, const Plane& p, T* out) {
  int64_t y = 0;
  if (p.vectors <= 2 && p.kh >= 3) {
    for (; y + 4 <= p.height; y += 4) correlate_rows<4>(padded, taps, p, y, out);
  }
  for (; y + 2 <= p.height; y += 2) correlate_rows<2>(padded, taps, p, y, out);
  if (y < p.height) correlate_rows<1>(padded, taps, p, y, out);
}

// grad_x with the reference's sum over grad_out inside the image only (no 0 * tap terms): for kernels with a
// non-finite tap, where the padded correlation would turn the border's 0 * inf into NaN.
template <typename T>
void input_grad_exact(const T* grad_out, const T* kernel, const Plane& p, T* grad_x) {
  for (int64_t y = 0; y < p.height; ++y) {
    for (int64_t x = 0; x < p.width; ++x) {
      T sum = T(0);
      for (int64_t i = 0; i < p.kh; ++i) {
        const int64_t r = y + p.ph - i;
        if (r < 0 || r >= p.height) continue;
        for (int64_t j = 0; j < p.kw; ++j) {
          const int64_t c = x + p.pw - j;
          if (c >= 0 && c < p.width) sum += grad_out[r * p.width + c] * kernel[i * p.kw + j];
        }
      }
      grad_x[y * p.width + x] = sum;
    }
  }
}

// ------------------------------------------------------------------------------------------ kernel gradient

// One column vector of the kernel-gradient sums: acc[n][j] += g[n] * x[j], x[j] the input vector at tap
// column j (its lanes beyond the image masked when kTail), g[n] grad_out's row for tap row n.
template <int NI, int NJ, bool kTail, typename T>
C10_ALWAYS_INLINE void kernel_grad_step(Vec<T>* acc, const T* const* grad_rows, const T* in, int64_t x,
                                        const Vec<T>& mask) {
  Vec<T> g[NI];
#pragma GCC unroll 16
  for (int n = 0; n < NI; ++n) g[n] = Vec<T>::loadu(grad_rows[n] + x);
#pragma GCC unroll 16
  for (int j = 0; j < NJ; ++j) {
    Vec<T> value = in_register(Vec<T>::loadu(in + x + j));
    if constexpr (kTail) value = value & mask;
#pragma GCC unroll 16
    for (int n = 0; n < NI; ++n) acc[n * NJ + j] = at::vec::fmadd(g[n], value, acc[n * NJ + j]);
  }
}

// One input row of the sums, over every column: whole vectors, then the masked partial one.
template <int NI, int NJ, typename T>
C10_ALWAYS_INLINE void kernel_grad_row(Vec<T>* acc, const T* const* grad_rows, const T* in, int64_t full,
                                       int64_t width, const Vec<T>& mask) {
  constexpr int64_t L = Vec<T>::size();
  for (int64_t x = 0; x < full; x += L) kernel_grad_step<NI, NJ, false>(acc, grad_rows, in, x, mask);
  if (full < width) kernel_grad_step<NI, NJ, true>(acc, grad_rows, in, full, mask);
}

// grad_kernel[i0 + n][j0 + j] for n < NI, j < NJ: sum over y < H, x < W of grad_out[y][x] * x_padded[y + i0 + n]
// [x + j0 + j]. `grad_padded` is grad_out padded as x (zero beyond the width, so that the partial vector's extra
// lanes add 0 * 0: the input's are masked, as 0 * inf would be NaN). Input row r feeds tap row i0 + n with
// grad_out's row r - i0 - n, so each input vector loaded serves the NI tap rows.
template <int NI, int NJ, typename T>
void kernel_grad_block(const T* grad_padded, const T* x_padded, const Plane& p, int64_t i0, int64_t j0,
                       const Vec<T>& mask, T* grad_kernel) {
  constexpr int64_t L = Vec<T>::size();
  const int64_t height = p.height, width = p.width, full = width / L * L;
  Vec<T> acc[NI * NJ];
#pragma GCC unroll 16
  for (int k = 0; k < NI * NJ; ++k) acc[k] = Vec<T>(T(0));
  const auto grad_row = [&](int64_t y) { return grad_padded + (y + p.ph) * p.stride + p.pw; };
  for (int64_t r = i0; r < i0 + height + NI - 1; ++r) {
    const T* in = x_padded + r * p.stride + j0;
    const int64_t y_first = r - i0;  // grad_out's row for tap row i0; i0 + n takes y_first - n
    if (y_first - (NI - 1) >= 0 && y_first < height) {
      const T* grad_rows[NI];
#pragma GCC unroll 16
      for (int n = 0; n < NI; ++n) grad_rows[n] = grad_row(y_first - n);
      kernel_grad_row<NI, NJ>(acc, grad_rows, in, full, width, mask);
      continue;
    }
#pragma GCC unroll 16
    for (int n = 0; n < NI; ++n) {  // the first and last rows: only some tap rows have a grad_out row here
      if (y_first - n < 0 || y_first - n >= height) continue;
      const T* grad_rows[1] = {grad_row(y_first - n)};
      kernel_grad_row<1, NJ>(acc + n * NJ, grad_rows, in, full, width, mask);
    }
  }
#pragma GCC unroll 16
  for (int n = 0; n < NI; ++n) {
#pragma GCC unroll 16
    for (int j = 0; j < NJ; ++j) {
      T lanes[L];
      acc[n * NJ + j].store(lanes);
      T sum = T(0);
      for (int64_t l = 0; l < L; ++l) sum += lanes[l];
      grad_kernel[(i0 + n) * p.kw + j0 + j] = sum;
    }
  }
}

template <int NI, typename T>
void kernel_grad_rows(const T* grad_padded, const T* x_padded, const Plane& p, int64_t i0, const Vec<T>& mask,
                      T* grad_kernel) {
  // The tap columns in blocks of at most kBlockTaps, of balanced sizes (9 = 5 + 4, not 6 + 3).
  const int64_t blocks = (p.kw + kBlockTaps - 1) / kBlockTaps;
  for (int64_t b = 0, j0 = 0; b < blocks; ++b) {
    const int64_t size = p.kw / blocks + (b < p.kw % blocks ? 1 : 0);
    switch (size) {
      case 6:
        kernel_grad_block<NI, 6>(grad_padded, x_padded, p, i0, j0, mask, grad_kernel);
        break;
      case 5:
        kernel_grad_block<NI, 5>(grad_padded, x_padded, p, i0, j0, mask, grad_kernel);
        break;
      case 4:
        kernel_grad_block<NI, 4>(grad_padded, x_padded, p, i0, j0, mask, grad_kernel);
        break;
      case 3:
        kernel_grad_block<NI, 3>(grad_padded, x_padded, p, i0, j0, mask, grad_kernel);
        break;
      case 2:
        kernel_grad_block<NI, 2>(grad_padded, x_padded, p, i0, j0, mask, grad_kernel);
        break;
      default:
        kernel_grad_block<NI, 1>(grad_padded, x_padded, p, i0, j0, mask, grad_kernel);
    }
    j0 += size;
  }
}

// grad_kernel (kh, kw) of one plane, tap rows two at a time.
template <typename T>
void kernel_grad(const T* grad_padded, const T* x_padded, const Plane& p, const Vec<T>& mask, T* grad_kernel) {
  int64_t i0 = 0;
  for (; i0 + 2 <= p.kh; i0 += 2) kernel_grad_rows<2>(grad_padded, x_padded, p, i0, mask, grad_kernel);
  if (i0 < p.kh) kernel_grad_rows<1>(grad_padded, x_padded, p, i0, mask, grad_kernel);
}

// ------------------------------------------------------------------------------------------ drivers

// Planes per task: one plane of a realistic size is plenty of work; tiny planes are grouped.
int64_t grain(const Plane& p) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, p.area() * p.taps())); }

template <typename T>
void forward_impl(const at::Tensor& x, const at::Tensor& kernels, at::Tensor& out) {
  const Plane p(x.size(2), x.size(3), kernels.size(2), kernels.size(3), Vec<T>::size());
  const int64_t planes = x.size(0) * x.size(1), taps = p.taps(), area = p.area();
  const T* x_data = x.const_data_ptr<T>();
  const T* k_data = kernels.const_data_ptr<T>();
  T* out_data = out.mutable_data_ptr<T>();
  at::parallel_for(0, planes, grain(p), [&](int64_t begin, int64_t end) {
    std::vector<T> padded(p.padded_size(), T(0));
    std::vector<Vec<T>> tap(taps);
    for (int64_t plane = begin; plane < end; ++plane) {
      pad_into(x_data + plane * area, p, padded.data());
      for (int64_t t = 0; t < taps; ++t) tap[t] = Vec<T>(k_data[plane * taps + t]);
      correlate(padded.data(), tap.data(), p, out_data + plane * area);
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& kernels, bool need_x,
                   bool need_kernels, at::Tensor& grad_x, at::Tensor& grad_kernels) {
  constexpr int64_t L = Vec<T>::size();
  const Plane p(x.size(2), x.size(3), kernels.size(2), kernels.size(3), L);
  const int64_t planes = x.size(0) * x.size(1), taps = p.taps(), area = p.area();
  const T* g_data = grad_out.const_data_ptr<T>();
  const T* x_data = x.const_data_ptr<T>();
  const T* k_data = kernels.const_data_ptr<T>();
  T* gx_data = need_x ? grad_x.mutable_data_ptr<T>() : nullptr;
  T* gk_data = need_kernels ? grad_kernels.mutable_data_ptr<T>() : nullptr;
  // The lanes of the last, partial column vector that lie inside the image.
  const Vec<T> mask = Vec<T>::arange(T(0), T(1)) < Vec<T>(static_cast<T>(p.width - p.width / L * L));
  at::parallel_for(0, planes, grain(p), [&](int64_t begin, int64_t end) {
    std::vector<T> grad_padded(p.padded_size(), T(0));
    std::vector<T> x_padded(need_kernels ? p.padded_size() : 0, T(0));
    std::vector<Vec<T>> flipped(need_x ? taps : 0);
    for (int64_t plane = begin; plane < end; ++plane) {
      const T* kernel = k_data + plane * taps;
      pad_into(g_data + plane * area, p, grad_padded.data());
      if (need_x) {
        // grad_x = grad_out correlated with the kernel flipped in both directions.
        if (std::all_of(kernel, kernel + taps, [](T k) { return std::isfinite(k); })) {
          for (int64_t t = 0; t < taps; ++t) flipped[t] = Vec<T>(kernel[taps - 1 - t]);
          correlate(grad_padded.data(), flipped.data(), p, gx_data + plane * area);
        } else {
          input_grad_exact(g_data + plane * area, kernel, p, gx_data + plane * area);
        }
      }
      if (need_kernels) {
        pad_into(x_data + plane * area, p, x_padded.data());
        kernel_grad(grad_padded.data(), x_padded.data(), p, mask, gk_data + plane * taps);
      }
    }
  });
}

}  // namespace

void cross_conv2d_forward_kernel(const at::Tensor& x, const at::Tensor& kernels, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cross_conv2d_forward",
                             [&] { forward_impl<scalar_t>(x, kernels, out); });
}

void cross_conv2d_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& kernels,
                                  bool need_x, bool need_kernels, at::Tensor& grad_x, at::Tensor& grad_kernels) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cross_conv2d_backward", [&] {
    backward_impl<scalar_t>(grad_out, x, kernels, need_x, need_kernels, grad_x, grad_kernels);
  });
}

}  // namespace pyvidgen::cpu
