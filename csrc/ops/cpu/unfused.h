// Keeping a product apart from the sum that consumes it, where positions must round as the reference
// (PyTorch eager: a separate multiply and add) rounds them. Used by flow warping and DRAW's filterbanks.
#pragma once

#include <ATen/cpu/vec/vec.h>

namespace pyvidgen::cpu {

// `x` as computed and rounded: the compiler may not fuse the operation that produced it into the one
// that consumes it. Sampling positions must round as the reference's separate multiply and add do
// (where floor jumps, one ulp moves a tap by a pixel), while FMA contraction elsewhere in the kernels
// is welcome; an empty asm statement that claims to change `x` keeps the multiply apart.
template <typename T>
inline T unfused(T x) {
#if defined(__GNUC__) && defined(__x86_64__)
  asm("" : "+x"(x));
#elif defined(__GNUC__)
  asm("" : "+m"(x));
#endif
  return x;
}

inline at::vec::Vectorized<float> unfused(at::vec::Vectorized<float> x) {
#if defined(__GNUC__) && defined(CPU_CAPABILITY_AVX2)
  __m256 v = x;
  asm("" : "+x"(v));
  return v;
#elif defined(__GNUC__)
  asm("" : "+m"(x));
  return x;
#else
  return x;
#endif
}

}  // namespace pyvidgen::cpu
