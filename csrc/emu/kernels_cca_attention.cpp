// cca_attention under the SIMT emulator: one translation unit per CUDA entry file, so editing one kernel
// recompiles only its own file (see module.cpp).
#include "../../cuda/cca_attention.cu"

// Blocks of the forward kernel (cca_attention_fwd_v2) that took its prefill (decode = 0) or its decode
// (decode = 1) path so far in this process: the tests' proof of which path ran
// (tests/test_cca_attention_gpu_paths.py reads it with ctypes from the emulator module's shared library).
extern "C" __attribute__((visibility("default"))) int64_t zaya_emu_cca_attention_fwd_blocks(int decode) {
  return zaya::kernels::attn::emu_fwd_blocks(decode != 0 ? 1 : 0).load();
}
