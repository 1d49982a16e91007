// The Python view of csrc/kernels/runtime_state.h, shared by the pybind modules (zaya_ops._C and the
// emulator modules): each module has its own counters and Hopper opt-in (one per shared library).
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "kernels/runtime_state.h"

namespace zaya::runtime {

// Adds `<prefix>runtime_counters()` and `<prefix>set_hopper_paths(state)`, `<prefix>set_kernels_v1(state)` to module m.
inline void bind_runtime(pybind11::module_& m, const std::string& prefix) {
  m.def(
      (prefix + "runtime_counters").c_str(),
      [] {
        const Counters& c = counters();
        pybind11::dict d;
        d["host_reads"] = c.host_reads.load();
        d["device_attribute_queries"] = c.device_attribute_queries.load();
        d["func_attribute_sets"] = c.func_attribute_sets.load();
        d["tensor_map_encodes"] = c.tensor_map_encodes.load();
        d["env_reads"] = c.env_reads.load();
        return d;
      },
      "How often this module's launchers and glue really read tensor values on the host (checks::host_ints), "
      "queried a device attribute, set a kernel's shared-memory opt-in, encoded a TMA tensor map or read the "
      "environment (csrc/kernels/runtime_state.h); cached calls are not counted.");
  m.def((prefix + "set_hopper_paths").c_str(), &set_hopper_opt_in, pybind11::arg("state"),
        "Selects the Hopper (wgmma/TMA) kernels: 1 on, 0 off, -1 read ZAYA_WGMMA at the next launch. Returns "
        "the previous state.");
  m.def((prefix + "set_kernels_v1").c_str(), &set_kernels_v1, pybind11::arg("state"),
        "Selects the version-1 mma.sync kernels (scalar fragment loads, no ldmatrix): 1 on, 0 off, -1 read "
        "ZAYA_KERNELS=v1 at the next launch. Returns the previous state.");
}

}  // namespace zaya::runtime
