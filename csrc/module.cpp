// pyvidgen._C: the compiled CPU kernels. Each op registers its own entry points beside its kernels
// (TORCH_LIBRARY_IMPL(pyvidgen_cpp, CPU, ...) in csrc/ops/<op>.cpp) against the schemas that the op's
// declaration in pyvidgen/ops defines; loading this module runs those registrations. Python reaches the
// kernels as torch.ops.pyvidgen_cpp.<op>_forward / _backward. This file binds nothing per op, only
// the output cache that all of them share (csrc/ops/outputs.h; Python: pyvidgen.output_cache_info).
#include <torch/extension.h>

#include "ops/outputs.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pyvidgen C++ CPU kernels (registered as torch.ops.pyvidgen_cpp.*)";
#ifdef CPU_CAPABILITY_AVX2
  m.attr("cpu_capability") = "avx2";
#else
  m.attr("cpu_capability") = "default";
#endif
  namespace outputs = pyvidgen::outputs;
  m.def("output_cache_info", [] {
    const outputs::CacheInfo info = outputs::cache_info();
    pybind11::dict d;
    d["limit_bytes"] = info.limit_bytes;
    d["idle_bytes"] = info.idle_bytes;
    d["idle_blocks"] = info.idle_blocks;
    d["hits"] = info.hits;
    d["misses"] = info.misses;
    return d;
  });
  m.def("set_output_cache_limit", &outputs::set_cache_limit);
  m.def("empty_output_cache", &outputs::empty_cache);
  m.def("set_cache_all_cpu_tensors", &outputs::set_cache_all_cpu_tensors);
  m.def("cache_all_cpu_tensors", &outputs::cache_all_cpu_tensors);
  m.attr("output_cache_min_bytes") = outputs::kCachedBytes;
}
