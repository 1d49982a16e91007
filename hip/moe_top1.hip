// HIP entry of the moe_top1 kernels: the bodies are in csrc/kernels/moe_top1.cuh (shared with
// cuda/moe_top1.cu); this file only instantiates the launch contract of moe_top1_launch.h. It
// needs no torch headers, so tools/check_hip.sh compiles it standalone with clang.
//
// Compile check (tools/check_hip.sh, Debian clang-16; no AMD GPU has run it), per kernel:
//                              gfx940 VGPR/AGPR  occ    gfx90a VGPR/AGPR  occ   LDS     scratch
//   group_tokens                    18 / 0         8         20 / 0         8     8212 B  0
//   expert_gemm<BF16, gate_up>      48 / 32        4         48 / 32        4    15616 B  0
//   expert_gemm<BF16, down>         30 / 16        6         30 / 16        6    10512 B  0
//   expert_gemv<BF16, gate_up>      72 / 0         7         70 / 0         7        0 B  0
//   expert_gemv<BF16, down>         ~41 / 0        8         41 / 0         8        0 B  0
//   (F16 alike; its gemv gate_up needs ~95 VGPRs, occupancy 4-5.) One LDS stage (see kStages).
//   ISA per arch: 24 v_mfma_f32_16x16x16_bf16 and 24 _f16 (16 in gate_up's k-loop body, 8 in
//   down's).
#include "../csrc/kernels/moe_top1.cuh"

namespace zaya::kernels {

const char* launch_moe_top1(const MoeTop1Args& args, void* stream) {
  return moe::launch_moe_top1_impl(args, static_cast<vendor::stream_t>(stream));
}

}  // namespace zaya::kernels
