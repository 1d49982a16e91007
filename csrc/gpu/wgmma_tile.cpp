// Torch glue of the test-only ops _wgmma_tile (schema in csrc/schemas.h) and _wgmma_tile_sw128 (schema here; kernel in
// csrc/kernels/wgmma_tile.cuh): one Hopper warpgroup MMA tile, out = a @ b^T in fp32, so that
// tests/test_wgmma_tiles.py can hold the wgmma operand layouts and descriptors to torch.matmul on a
// Hopper GPU and under the 32-lane SIMT emulator. Defined and registered only where it can run: CUDA
// builds whose architecture list has sm_90a (torch.ops.zaya._wgmma_tile) and the 32-lane emulator
// (torch.ops.zaya_emu32._wgmma_tile); ROCm builds and the 64-lane emulator have no wgmma.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string_view>

#include "glue.h"
#include "schemas.h"

#if defined(ZAYA_SIMT_EMU) ? (ZAYA_EMU_WARP_SIZE == 32) : !defined(USE_ROCM)
#include "kernels/wgmma_tile_launch.h"

namespace {

using namespace zaya::gpu;  // NOLINT: the shared GPU glue

#if defined(ZAYA_SIMT_EMU)
constexpr bool kHasWgmma = true;
#else
constexpr bool kHasWgmma = std::string_view(ZAYA_CUDA_ARCHS).find("9.0a") != std::string_view::npos;
#endif

at::Tensor wgmma_tile_impl(const at::Tensor& a_in, const at::Tensor& b_in, bool a_from_registers, bool b_mn_major,
                           bool swizzle128) {
  constexpr const char* op = "zaya::_wgmma_tile";
  check_device(op, "a", a_in);
  check_device(op, "b", b_in);
  TORCH_CHECK_VALUE(a_in.device() == b_in.device(), op, ": a and b must be on one device, got ", a_in.device(),
                    " and ", b_in.device());
  TORCH_CHECK_TYPE(a_in.scalar_type() == at::kBFloat16 || a_in.scalar_type() == at::kHalf, op,
                   ": a must be bfloat16 or float16, got ", a_in.scalar_type());
  TORCH_CHECK_TYPE(b_in.scalar_type() == a_in.scalar_type(), op, ": b must have a's dtype ", a_in.scalar_type(),
                   ", got ", b_in.scalar_type());
  TORCH_CHECK_VALUE(a_in.dim() == 2 && a_in.size(0) == 64, op, ": a must be [64, K], got ", a_in.sizes());
  const int64_t K = a_in.size(1);
  TORCH_CHECK_VALUE(K > 0 && K % 16 == 0 && K <= zaya::kernels::kWgmmaTileMaxK, op,
                    ": K (a.shape[1]) must be a multiple of 16 up to ", zaya::kernels::kWgmmaTileMaxK, ", got ", K);
  TORCH_CHECK_VALUE(b_in.dim() == 2 && (b_in.size(0) == 64 || b_in.size(0) == 128) && b_in.size(1) == K, op,
                    ": b must be [N, K] with N 64 or 128 and K = ", K, ", got ", b_in.sizes());
  const DeviceGuard guard(a_in.device());
  const at::Tensor a = kernel_dense(a_in), b = kernel_dense(b_in);
  at::Tensor out = at::empty({64, b.size(0)}, a.options().dtype(at::kFloat));
  zaya::kernels::WgmmaTileArgs g;
  g.a = a.const_data_ptr();
  g.b = b.const_data_ptr();
  g.out = out.mutable_data_ptr<float>();
  g.dtype = to_dtype(a.scalar_type());
  g.N = b.size(0);
  g.K = K;
  g.a_from_registers = a_from_registers;
  g.b_mn_major = b_mn_major;
  g.swizzle128 = swizzle128;
  check_launch(op, zaya::kernels::launch_wgmma_tile(g, current_stream()));
  return out;
}

at::Tensor wgmma_tile_gpu(const at::Tensor& a, const at::Tensor& b, bool a_from_registers, bool b_mn_major) {
  return wgmma_tile_impl(a, b, a_from_registers, b_mn_major, false);
}

// _wgmma_tile_sw128: the same tile with B (and A unless a_from_registers) K-major in the 128-byte-swizzle
// layout, as moe_top1_sm90 places and reads its tiles (schema defined here, next to its only use).
at::Tensor wgmma_tile_sw128_gpu(const at::Tensor& a, const at::Tensor& b, bool a_from_registers) {
  return wgmma_tile_impl(a, b, a_from_registers, false, true);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ZAYA_GPU_LIB, m) {
  if constexpr (kHasWgmma) {
    zaya::define_wgmma_tile_schema(m);
    m.def("_wgmma_tile_sw128(Tensor a, Tensor b, bool a_from_registers) -> Tensor");
  }
}

TORCH_LIBRARY_IMPL(ZAYA_GPU_LIB, ZAYA_GPU_KEY, m) {
  if constexpr (kHasWgmma) {
    m.impl("_wgmma_tile", &wgmma_tile_gpu);
    m.impl("_wgmma_tile_sw128", &wgmma_tile_sw128_gpu);
  }
}

#endif
