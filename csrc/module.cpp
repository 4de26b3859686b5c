// pyvidgen._C: the compiled CPU kernels. Each op registers its own entry points beside its kernels
// (TORCH_LIBRARY_IMPL(pyvidgen_cpp, CPU, ...) in csrc/ops/<op>.cpp) against the schemas that the op's
// declaration in pyvidgen/ops defines; loading this module runs those registrations. Python reaches the
// kernels as torch.ops.pyvidgen_cpp.<op>_forward / _backward. This file binds nothing per op.
#include <torch/extension.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pyvidgen C++ CPU kernels (registered as torch.ops.pyvidgen_cpp.*)";
#ifdef CPU_CAPABILITY_AVX2
  m.attr("cpu_capability") = "avx2";
#else
  m.attr("cpu_capability") = "default";
#endif
}
