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
  // peephole is std::optional: Python None arrives as nullopt, and an undefined grad_peephole returns as None.
  m.def("conv_lstm_gates_forward", &pyvidgen::conv_lstm_gates_forward, "conv_lstm_gates forward (h, c_next)",
        py::arg("gates"), py::arg("c"), py::arg("peephole") = py::none());
  m.def("conv_lstm_gates_backward", &pyvidgen::conv_lstm_gates_backward,
        "conv_lstm_gates backward (grad_gates, grad_c, grad_peephole or None)", py::arg("grad_h"),
        py::arg("grad_c_next"), py::arg("gates"), py::arg("c"), py::arg("peephole") = py::none());
  m.def("multiplicative_unit_forward", &pyvidgen::multiplicative_unit_forward, "multiplicative_unit forward",
        py::arg("pre"), py::arg("h"));
  m.def("multiplicative_unit_backward", &pyvidgen::multiplicative_unit_backward,
        "multiplicative_unit backward (grad_pre, grad_h)", py::arg("grad_out"), py::arg("pre"), py::arg("h"));
#ifdef CPU_CAPABILITY_AVX2
  m.attr("cpu_capability") = "avx2";
#else
  m.attr("cpu_capability") = "default";
#endif
}
