// C (+)= A B for the small row-major matrices of the DRAW kernels (a 12 x 32 filterbank times a 32 x 32
// image): too small for a BLAS call to pay off per sample, too many to leave to scalar loops.
//
// The output's contiguous axis is the vector axis: a block of up to 6 rows of C by 2 vectors stays in
// registers (12 accumulators, 2 loads of B and one broadcast of A: 15 of AVX2's 16 registers) while k
// runs, so each step is 2 loads, 6 broadcasts and 12 fused multiply-adds, with no horizontal sums. Every
// product is formed, zeros included (0 * inf must stay NaN, as in the reference's matmuls), and each
// element of C sums its terms in k order.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

namespace pyvidgen::cpu::small_gemm {

template <typename T>
using Vec = at::vec::Vectorized<T>;

// Columns a whole number of vectors wide: the row stride of a buffer that B may be read from.
template <typename T>
inline int64_t padded(int64_t columns) {
  constexpr int64_t width = Vec<T>::size();
  return (columns + width - 1) / width * width;
}

// Where and how a product is stored: C's rows `ldc` apart; `padded`: they are writable up to a whole
// number of vectors (a thread's buffer), so the last vector is stored whole; `accumulate`: C += A B;
// otherwise C = A B * mul / div (the op's gamma, applied to the finished sum as the reference does; a
// factor 1 is exact, NaN and infinities included).
template <typename T>
struct Out {
  T* c;
  int64_t ldc;
  bool padded = false;
  bool accumulate = false;
  T mul = T(1);
  T div = T(1);
};

// Row r of a block: its two accumulators, and how they are loaded, updated and stored.
template <typename T>
struct Row {
  Vec<T> low, high;

  void load(const Out<T>& out, const T* c, int64_t first, int64_t second) {
    low = out.accumulate ? Vec<T>::loadu(c, first) : Vec<T>(T(0));
    high = out.accumulate && second > 0 ? Vec<T>::loadu(c + Vec<T>::size(), second) : Vec<T>(T(0));
  }

  void store(const Out<T>& out, T* c, int64_t first, int64_t second) const {
    constexpr int64_t width = Vec<T>::size();
    Vec<T> lo = low, hi = high;
    if (!out.accumulate && (out.mul != T(1) || out.div != T(1))) {
      lo = lo * Vec<T>(out.mul) / Vec<T>(out.div);
      hi = hi * Vec<T>(out.mul) / Vec<T>(out.div);
    }
    // Partial stores go through a stack copy in at::vec: only a result's own last vector takes them.
    if (first == width || out.padded) {
      lo.store(c);
    } else {
      lo.store(c, first);
    }
    if (second == width || (second > 0 && out.padded)) {
      hi.store(c + width);
    } else if (second > 0) {
      hi.store(c + width, second);
    }
  }
};

// Rows [0, R) and columns [0, cols) of C, cols <= 2 vectors. The accumulators are named locals, not an
// array: GCC keeps an array of vectors in memory and stores it back on every step of k (measured: half the
// speed), even fully unrolled.
template <typename T, int R>
inline void block(int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, const Out<T>& out, T* c,
                  int64_t cols) {
  using V = Vec<T>;
  constexpr int64_t width = V::size();
  const int64_t ldc = out.ldc;
  const int64_t first = std::min(cols, width), second = cols - first;
  Row<T> r0, r1, r2, r3, r4, r5;
  r0.load(out, c, first, second);
  if constexpr (R > 1) r1.load(out, c + ldc, first, second);
  if constexpr (R > 2) r2.load(out, c + 2 * ldc, first, second);
  if constexpr (R > 3) r3.load(out, c + 3 * ldc, first, second);
  if constexpr (R > 4) r4.load(out, c + 4 * ldc, first, second);
  if constexpr (R > 5) r5.load(out, c + 5 * ldc, first, second);
  V l0 = r0.low, l1 = r1.low, l2 = r2.low, l3 = r3.low, l4 = r4.low, l5 = r5.low;
  V h0 = r0.high, h1 = r1.high, h2 = r2.high, h3 = r3.high, h4 = r4.high, h5 = r5.high;
#define PYVIDGEN_GEMM_ROW(r, lo, hi, two)                     \
  if constexpr (R > r) {                                     \
    const V ar(a[r * lda + kk]);                             \
    lo = at::vec::fmadd(ar, b0, lo);                         \
    if (two) hi = at::vec::fmadd(ar, b1, hi);                \
  }
  if (second > 0) {
    for (int64_t kk = 0; kk < k; ++kk) {
      const V b0 = V::loadu(b + kk * ldb), b1 = V::loadu(b + kk * ldb + width);
      PYVIDGEN_GEMM_ROW(0, l0, h0, true)
      PYVIDGEN_GEMM_ROW(1, l1, h1, true)
      PYVIDGEN_GEMM_ROW(2, l2, h2, true)
      PYVIDGEN_GEMM_ROW(3, l3, h3, true)
      PYVIDGEN_GEMM_ROW(4, l4, h4, true)
      PYVIDGEN_GEMM_ROW(5, l5, h5, true)
    }
  } else {
    for (int64_t kk = 0; kk < k; ++kk) {
      const V b0 = V::loadu(b + kk * ldb), b1 = b0;
      PYVIDGEN_GEMM_ROW(0, l0, h0, false)
      PYVIDGEN_GEMM_ROW(1, l1, h1, false)
      PYVIDGEN_GEMM_ROW(2, l2, h2, false)
      PYVIDGEN_GEMM_ROW(3, l3, h3, false)
      PYVIDGEN_GEMM_ROW(4, l4, h4, false)
      PYVIDGEN_GEMM_ROW(5, l5, h5, false)
    }
  }
#undef PYVIDGEN_GEMM_ROW
  r0 = {l0, h0};
  r1 = {l1, h1};
  r2 = {l2, h2};
  r3 = {l3, h3};
  r4 = {l4, h4};
  r5 = {l5, h5};
  r0.store(out, c, first, second);
  if constexpr (R > 1) r1.store(out, c + ldc, first, second);
  if constexpr (R > 2) r2.store(out, c + 2 * ldc, first, second);
  if constexpr (R > 3) r3.store(out, c + 3 * ldc, first, second);
  if constexpr (R > 4) r4.store(out, c + 4 * ldc, first, second);
  if constexpr (R > 5) r5.store(out, c + 5 * ldc, first, second);
}

// C[0:m, 0:l] = A[0:m, 0:k] B[0:k, 0:l] (see Out). Strides in elements. B's rows must be readable up to
// padded<T>(l) columns (a padded buffer).
template <typename T>
void gemm(int64_t m, int64_t k, int64_t l, const T* a, int64_t lda, const T* b, int64_t ldb, const Out<T>& out) {
  constexpr int64_t span = 2 * Vec<T>::size();
  for (int64_t j = 0; j < l; j += span) {
    const int64_t cols = std::min(span, l - j);
    int64_t i = 0;
    for (; i + 6 <= m; i += 6) block<T, 6>(k, a + i * lda, lda, b + j, ldb, out, out.c + i * out.ldc + j, cols);
    const T* ar = a + i * lda;
    T* cr = out.c + i * out.ldc + j;
    switch (m - i) {
      case 5: block<T, 5>(k, ar, lda, b + j, ldb, out, cr, cols); break;
      case 4: block<T, 4>(k, ar, lda, b + j, ldb, out, cr, cols); break;
      case 3: block<T, 3>(k, ar, lda, b + j, ldb, out, cr, cols); break;
      case 2: block<T, 2>(k, ar, lda, b + j, ldb, out, cr, cols); break;
      case 1: block<T, 1>(k, ar, lda, b + j, ldb, out, cr, cols); break;
      default: break;
    }
  }
}

// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols.
template <typename T>
inline void transpose(int64_t rows, int64_t cols, const T* src, int64_t lds, T* dst, int64_t ldd) {
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
  }
}

}  // namespace pyvidgen::cpu::small_gemm
