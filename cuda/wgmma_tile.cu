// CUDA entry of the test-only one-tile wgmma kernel (csrc/kernels/wgmma_tile.cuh; op zaya::_wgmma_tile,
// tests/test_wgmma_tiles.py): instantiates the launch contract of wgmma_tile_launch.h. Also compiled
// into the 32-lane SIMT emulator (csrc/emu/kernels.cpp); the 64-lane one has no wgmma and skips it.
#include "../csrc/kernels/wgmma_tile.cuh"

#if defined(ZAYA_HAVE_WGMMA_SOURCE)
namespace zaya::kernels {

const char* launch_wgmma_tile(const WgmmaTileArgs& args, void* stream) {
  return wgmma_tile::launch_impl(args, static_cast<vendor::stream_t>(stream));
}

}  // namespace zaya::kernels
#endif
