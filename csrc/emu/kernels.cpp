// The CUDA entry files, compiled by the host compiler under the SIMT emulator (see module.cpp).
// Each cuda/*.cu is a thin instantiation of a portable kernel header, so including it here runs the
// very code nvcc and hip-clang build.
#include "../../cuda/norms.cu"
#include "../../cuda/norms_backward.cu"
#include "../../cuda/moe_top1.cu"
#include "../../cuda/cca_qkv.cu"
#include "../../cuda/cca_qkv_backward.cu"
#include "../../cuda/router.cu"
#include "../../cuda/cca_attention.cu"
#include "../../cuda/wgmma_tile.cu"
