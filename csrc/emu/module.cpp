// A SIMT-emulator module (zaya_ops._emu_w32 / _emu_w64, built when ZAYA_BACKENDS names "emu"): the
// CUDA/HIP glue (csrc/gpu/) and kernel bodies (csrc/kernels/) compiled for the host with
// ZAYA_SIMT_EMU, so that tests run the GPU code paths on the CPU, with a 32-lane warp (the CUDA
// paths) or a 64-lane wavefront (the CDNA paths). It registers the op schemas again under its own
// namespace, torch.ops.<ZAYA_EMU_LIB>, so it never shadows the real zaya ops. For tests only: it is
// a slow, faithful model of the GPU, not a CPU backend.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <string>

#include "arg_checks.h"
#include "cca_qkv_functional.h"
#include "runtime_py.h"
#include "schemas.h"

#define ZAYA_STR2(x) #x
#define ZAYA_STR(x) ZAYA_STR2(x)

namespace {
ZAYA_DEFINE_CCA_QKV_FUNCTIONAL(cca_qkv_functional_emu, ZAYA_STR(ZAYA_EMU_LIB))
}  // namespace

TORCH_LIBRARY(ZAYA_EMU_LIB, m) { zaya::define_schemas(m); }
TORCH_LIBRARY_IMPL(ZAYA_EMU_LIB, Autograd, m) { zaya::register_not_differentiable(m); }
// cca_qkv_functional on the emulated cca_qkv kernel (csrc/cca_qkv_functional.h).
TORCH_LIBRARY_IMPL(ZAYA_EMU_LIB, CompositeExplicitAutograd, m) {
  m.impl("cca_qkv_functional", &cca_qkv_functional_emu);
}

std::string zaya_emu_selftest(const std::string& name);  // selftest.cpp
int64_t zaya_emu_launches();                             // selftest.cpp
void zaya_emu_bind_probes(pybind11::module_& m);         // selftest.cpp: the layout probes
void zaya_emu_reset_runtime_caches();                    // selftest.cpp
int64_t zaya_emu_attribute_queries();                    // selftest.cpp
void zaya_emu_set_device_warp_size(int n);               // selftest.cpp

PYBIND11_MODULE(ZAYA_EMU_MODULE, m) {
  m.doc() = "zaya_ops GPU kernels under the SIMT emulator (tests only)";
  m.attr("namespace") = ZAYA_STR(ZAYA_EMU_LIB);
  m.attr("warp_size") = ZAYA_EMU_WARP_SIZE;
  m.def("selftest", &zaya_emu_selftest, pybind11::arg("name"),
        "Runs one of the emulator's self-test kernels (csrc/emu/selftest.cpp); returns '' or what went wrong.");
  m.def("launches", &zaya_emu_launches, "Emulated kernel launches so far in this process.");
  zaya_emu_bind_probes(m);
  zaya::runtime::bind_runtime(m, "");
  m.def("reset_runtime_caches", &zaya_emu_reset_runtime_caches,
        "Forgets the cached device attributes, shared-memory opt-ins (and the emulated driver's) and TMA maps: "
        "the next launches start cold (tests).");
  m.def(
      "host_read_probe", [](const at::Tensor& t) { return zaya::checks::host_ints(t); }, pybind11::arg("t"),
      "Reads an index tensor's values through the glue's one host-read helper (counted): the tests' proof "
      "that runtime_counters()['host_reads'] counts.");
  m.def("attribute_queries", &zaya_emu_attribute_queries,
        "Device-attribute queries (wave size, SM count) the launchers made so far in this process.");
  m.def("set_device_warp_size", &zaya_emu_set_device_warp_size, pybind11::arg("n"),
        "Makes the emulated device report n-lane warps (0: its real ZAYA_EMU_WARP_SIZE) and drops the "
        "launchers' cached device facts. Tests only: launches must then refuse a mismatched device.");
}
