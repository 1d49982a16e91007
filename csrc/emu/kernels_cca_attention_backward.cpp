// The cca_attention backward kernels' CUDA entry file, compiled by the host compiler under the SIMT
// emulator (see module.cpp and kernels.cpp): a translation unit of its own, so that an edit of these
// kernels recompiles only this file.
#include "../../cuda/cca_attention_backward.cu"
