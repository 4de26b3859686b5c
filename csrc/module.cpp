// pyvidgen._C: the compiled CPU kernels. The Python layer (pyvidgen/ops) registers the torch.library
// custom ops and calls these bindings when the cpp backend is chosen.
#include <torch/extension.h>

#include "ops/ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pyvidgen C++ CPU kernels";
  m.def("flow_warp_forward", &pyvidgen::flow_warp_forward, "flow_warp forward", py::arg("x"), py::arg("flow"),
        py::arg("padding_mode"), py::arg("normalized"));
  m.def("flow_warp_backward", &pyvidgen::flow_warp_backward, "flow_warp backward (grad_x, grad_flow)",
        py::arg("grad_out"), py::arg("x"), py::arg("flow"), py::arg("padding_mode"), py::arg("normalized"),
        py::arg("x_needs_grad"), py::arg("flow_needs_grad"));
  m.def("flow_smoothness_forward", &pyvidgen::flow_smoothness_forward, "flow_smoothness forward", py::arg("flow"),
        py::arg("delta"));
  m.def("flow_smoothness_backward", &pyvidgen::flow_smoothness_backward, "flow_smoothness backward",
        py::arg("grad"), py::arg("flow"), py::arg("delta"));
#ifdef CPU_CAPABILITY_AVX2
  m.attr("cpu_capability") = "avx2";
#else
  m.attr("cpu_capability") = "default";
#endif
}
