// moe_top1 under the SIMT emulator: one translation unit per CUDA entry file, so editing one kernel
// recompiles only its own file (see module.cpp).
#include "../../cuda/moe_top1.cu"
