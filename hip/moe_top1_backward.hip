// HIP entry of the moe_top1 backward kernels: the bodies are in csrc/kernels/moe_top1_backward.cuh
// (shared with cuda/moe_top1_backward.cu); this file only instantiates the launch contract of
// moe_top1_backward_launch.h. tools/check_hip.sh compiles it standalone with clang.
//
// Compile check (tools/check_hip.sh, Debian clang-16; no AMD GPU has run it), per backward kernel (the
// object also carries moe_top1.cuh's kernels, group_tokens among them, with hip/moe_top1.hip's numbers):
//                                      gfx940 VGPR/AGPR  occ    gfx90a VGPR/AGPR  occ   LDS     scratch
//   expert_bwd_gemm<BF16, gate_up>          82 / 32        4         81 / 32        4    16128 B  0
//   expert_bwd_gemm<BF16, dx>               35 / 16        5         35 / 16        5    11008 B  0
//   expert_bwd_gemm<BF16, dW_down>          37 / 16        5         38 / 16        5    11008 B  0
//   expert_bwd_gemm<BF16, dW_gate_up>       37 / 16        5         38 / 16        5    11008 B  0
//   (F16 alike; its gate_up kernel 68 / 32.) One LDS stage (moe_top1.cuh's kStages). ISA: 24 v_mfma
//   in gate_up (16 for gate and up, 8 for u), 8 in each of the others, per dtype.
#include "../csrc/kernels/moe_top1_backward.cuh"

namespace zaya::kernels {

const char* launch_moe_top1_backward(const MoeTop1BackwardArgs& args, void* stream) {
  return moe::launch_moe_top1_backward_impl(args, static_cast<vendor::stream_t>(stream));
}

}  // namespace zaya::kernels
