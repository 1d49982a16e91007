// cca_qkv_backward under the SIMT emulator: one translation unit per CUDA entry file, so editing one kernel
// recompiles only its own file (see module.cpp).
#include "../../cuda/cca_qkv_backward.cu"
