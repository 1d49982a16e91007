// A SIMT-emulator module (zaya_ops._emu_w32 / _emu_w64, built when ZAYA_BACKENDS names "emu"): the
// CUDA/HIP glue (csrc/gpu/) and kernel bodies (csrc/kernels/) compiled for the host with
// ZAYA_SIMT_EMU, so that tests run the GPU code paths on the CPU, with a 32-lane warp (the CUDA
// paths) or a 64-lane wavefront (the CDNA paths). It registers the op schemas again under its own
// namespace, torch.ops.<ZAYA_EMU_LIB>, so it never shadows the real zaya ops. For tests only: it is
// a slow, faithful model of the GPU, not a CPU backend.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include <string>

#include "schemas.h"

TORCH_LIBRARY(ZAYA_EMU_LIB, m) { zaya::define_schemas(m); }
TORCH_LIBRARY_IMPL(ZAYA_EMU_LIB, Autograd, m) { zaya::register_not_differentiable(m); }

std::string zaya_emu_selftest(const std::string& name);  // selftest.cpp
int64_t zaya_emu_launches();                             // selftest.cpp
void zaya_emu_bind_probes(pybind11::module_& m);         // selftest.cpp: the layout probes

#define ZAYA_STR2(x) #x
#define ZAYA_STR(x) ZAYA_STR2(x)

PYBIND11_MODULE(ZAYA_EMU_MODULE, m) {
  m.doc() = "zaya_ops GPU kernels under the SIMT emulator (tests only)";
  m.attr("namespace") = ZAYA_STR(ZAYA_EMU_LIB);
  m.attr("warp_size") = ZAYA_EMU_WARP_SIZE;
  m.def("selftest", &zaya_emu_selftest, pybind11::arg("name"),
        "Runs one of the emulator's self-test kernels (csrc/emu/selftest.cpp); returns '' or what went wrong.");
  m.def("launches", &zaya_emu_launches, "Emulated kernel launches so far in this process.");
  zaya_emu_bind_probes(m);
}
