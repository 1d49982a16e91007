// The pybind11 module zaya_ops._C. Importing it loads this shared library, whose static
// initialisers register the zaya ops (csrc/ops.cpp) and their kernels with the dispatcher.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "runtime_py.h"

namespace py = pybind11;

namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == ';' || c == ',' || c == ' ') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

py::dict build_info() {
  py::dict d;
  std::vector<std::string> backends{"cpu"};
#ifdef ZAYA_WITH_CUDA
  backends.push_back("cuda");
#endif
#ifdef ZAYA_WITH_HIP
  backends.push_back("hip");
#endif
  d["backends"] = backends;
  d["cuda_archs"] = split_list(ZAYA_CUDA_ARCHS);
  d["cuda_ptx"] = split_list(ZAYA_CUDA_PTX);  // PTX embedded for GPUs newer than cuda_archs
  d["hip_archs"] = split_list(ZAYA_HIP_ARCHS);
  d["torch_version"] = std::string(ZAYA_TORCH_VERSION);
#if defined(__clang__)
  d["cxx_compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["cxx_compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["cxx_compiler"] = std::string("unknown");
#endif
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "zaya_ops compiled library: op schemas and kernels (see torch.ops.zaya)";
  m.def("build_info", &build_info,
        "Backends compiled, CUDA/HIP arch lists, embedded CUDA PTX and the torch version this build was made against.");
  zaya::runtime::bind_runtime(m, "_");  // _runtime_counters, _set_hopper_paths (tests, benchmarks)
}
