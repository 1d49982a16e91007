// wgmma_tile under the SIMT emulator: one translation unit per CUDA entry file, so editing one kernel
// recompiles only its own file (see module.cpp).
#include "../../cuda/wgmma_tile.cu"
