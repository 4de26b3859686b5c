// Vectorised sigmoid and tanh for the gate kernels (conv_lstm_gates, multiplicative_unit).
//
// Those kernels spend nearly all their time here. Vectorized<float>::exp()/tanh() call Sleef out of
// line: each call spills every live vector register (none is callee-saved) and Sleef's tanh is about
// three times slower than an exp. On AVX2/AVX512 builds float therefore gets inline versions below,
// within 5.5 ulp of the exact values (measured over all magnitudes: sigmoid 2.5 ulp, tanh 5.4 ulp),
// with torch's behaviour at the edges: NaN in, NaN out; sigmoid(-inf) = 0, sigmoid(inf) = 1,
// tanh(±inf) = ±1. float64 (and builds without a vector ISA) use at::vec's Sleef functions.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cstdint>

namespace pyvidgen::cpu::gate_math {

template <typename T>
using Vec = at::vec::Vectorized<T>;

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
// exp(x) for sigmoid, which only uses 1 + exp(x): below
// -86.6 the result stays at exp(-86.6) ~ 2e-38 instead of going subnormal (1 + that rounds to 1 all
// the same), which keeps 2^n a normal number built straight from the exponent bits.
//
// exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln(2) / 2. Adding 1.5 * 2^23 rounds x / ln 2 to
// an integer and leaves n in the low mantissa bits, from where the exponent field of 2^(n-1) is one
// integer add and shift away. ln 2 is split in two (the first part with trailing zero bits) so that
// n * ln 2 is subtracted without rounding error. exp(r) = 1 + r + r^2 P(r), with P of degree 4
// fitted to exp (relative error at Chebyshev nodes, reweighted towards minimax) with float32
// coefficients: within 0.85 ulp on the interval, 1 ulp overall. The polynomial is evaluated times
// two (exact: powers of two) to pair with 2^(n-1), which stays finite up to n = 128: results up to
// FLT_MAX, and overflow to inf above ln(FLT_MAX). NaN stays NaN (at::vec::clamp lets it through).
inline Vec<float> gate_exp(Vec<float> x) {
  using V = Vec<float>;
  x = at::vec::clamp(x, V(-86.6f), V(88.76f));
  const V shifter(12582912.0f);  // 1.5 * 2^23
  const V t = at::vec::fmadd(x, V(1.44269504088896341f), shifter);
  const V n = t - shifter;
  V r = at::vec::fmadd(n, V(-0.693145751953125f), x);
  r = at::vec::fmadd(n, V(-1.428606820309417e-06f), r);
  V p(2 * 0.0013814514968544245f);
  p = at::vec::fmadd(p, r, V(2 * 0.008368710987269878f));
  p = at::vec::fmadd(p, r, V(2 * 0.04166838899254799f));
  p = at::vec::fmadd(p, r, V(2 * 0.1666652113199234f));
  p = at::vec::fmadd(p, r, V(2 * 0.4999999403953552f));
  p = at::vec::fmadd(p, r * r, r + r) + V(2.0f);
  // The bits of t are those of 1.5 * 2^23 plus n: rebias to the exponent 127 + n - 1.
  const Vec<int32_t> exponent = at::vec::cast<int32_t>(t) + Vec<int32_t>(126 - 0x4B400000);
  return p * at::vec::cast<float>(exponent << Vec<int32_t>(23));
}

// tanh(x) = x P(x^2) / Q(x^2), P and Q of degree 4, fitted to tanh(x) / x on [0, 9] (linearised
// least squares iterated on the relative error, reweighted towards minimax): the fit is within 2e-8,
// float32 evaluation within 5.5 ulp. Beyond |x| = 9 tanh rounds to ±1; the result is clamped to [-1, 1]
// because the rounded evaluation may exceed 1 there by an ulp. Half the cost of an exp-based tanh,
// and exact signs (tanh(-0) = -0). NaN stays NaN (at::vec::clamp lets it through).
inline Vec<float> tanh(const Vec<float>& x) {
  using V = Vec<float>;
  const V one(1.0f);
  const V xc = at::vec::clamp(x, V(-9.0f), V(9.0f));
  const V y = xc * xc;
  V p(1.3355642813905888e-08f);
  p = at::vec::fmadd(p, y, V(2.0609895727830008e-05f));
  p = at::vec::fmadd(p, y, V(0.0034956419840455055f));
  p = at::vec::fmadd(p, y, V(0.13381072878837585f));
  p = at::vec::fmadd(p, y, one);
  V q(7.776991424179869e-07f);
  q = at::vec::fmadd(q, y, V(0.0003285719722043723f));
  q = at::vec::fmadd(q, y, V(0.025877192616462708f));
  q = at::vec::fmadd(q, y, V(0.4671438932418823f));
  q = at::vec::fmadd(q, y, one);
  return at::vec::clamp(xc * p / q, one.neg(), one);
}

inline Vec<float> sigmoid(const Vec<float>& x) {
  const Vec<float> one(1.0f);
  return one / (one + gate_exp(x.neg()));
}
#endif

// sigmoid(x) = 1 / (1 + exp(-x)): exp(+inf) = inf gives 0 and NaN stays NaN, as torch.sigmoid.
template <typename T>
inline Vec<T> sigmoid(const Vec<T>& x) {
  const Vec<T> one(T(1));
  return one / (one + x.neg().exp());
}

template <typename T>
inline Vec<T> tanh(const Vec<T>& x) {
  return x.tanh();
}

}  // namespace pyvidgen::cpu::gate_math
