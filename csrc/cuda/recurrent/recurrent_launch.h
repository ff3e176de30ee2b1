// Host entry points of the recurrent attention CUDA kernels (torch-free). The glue
// (csrc/cuda/glue/recurrent.cpp) fills the Params (device pointers, including the
// workspaces RWKVParams::state_ws / param_partial and SDSAParams::grad_ws) and passes the
// current stream. Each returns the launch status (cudaGetLastError()); nothing is
// synchronised.
#pragma once
#include <cuda_runtime_api.h>

#include "common/recurrent_params.h"

// y from time_decay, time_first, k, v.
cudaError_t rwkv_forward_cuda(const spikeops::RWKVParams& p, cudaStream_t stream);
// grad_k, grad_v, grad_time_decay, grad_time_first (uses state_ws and param_partial).
cudaError_t rwkv_backward_cuda(const spikeops::RWKVParams& p, cudaStream_t stream);
// out and h_seq from q, k, v.
cudaError_t sdsa_forward_cuda(const spikeops::SDSAParams& p, cudaStream_t stream);
// grad_q, grad_k, grad_v from grad_out, q, k, v, h_seq (uses grad_ws).
cudaError_t sdsa_backward_cuda(const spikeops::SDSAParams& p, cudaStream_t stream);
