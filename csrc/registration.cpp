// Every spikeops op schema, in one place. Devices register their kernels beside
// the kernels (TORCH_LIBRARY_IMPL in csrc/cpu/*.cpp and csrc/cuda/glue/*.cpp);
// fake (meta) implementations and autograd formulas live in python/spikeops/ops.
#include <torch/library.h>

TORCH_LIBRARY(spikeops, m) {
  // ---- fused multi-step neurons (x is time-major [T, *]) ----------------------
  // Forward returns (spikes, v_last, v_seq); v_seq is empty unless store_v_seq.
  // Forward ops also take the backward-only arguments (surrogate, alpha,
  // detach_reset): the autograd formula sees only the forward's inputs, and
  // a bad surrogate name fails at the forward call instead of in backward.
  m.def("lif_fwd(Tensor x, Tensor? v0, float tau, bool decay_input, float v_threshold, "
        "float? v_reset, str surrogate, float alpha, bool detach_reset, bool store_v_seq) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("lif_bwd(Tensor grad_spikes, Tensor? grad_v_last, Tensor x, Tensor? v0, float tau, "
        "bool decay_input, float v_threshold, float? v_reset, str surrogate, float alpha, "
        "bool detach_reset) -> (Tensor, Tensor)");
  m.def("if_fwd(Tensor x, Tensor? v0, float v_threshold, float? v_reset, str surrogate, "
        "float alpha, bool detach_reset, bool store_v_seq) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("if_bwd(Tensor grad_spikes, Tensor? grad_v_last, Tensor x, Tensor? v0, "
        "float v_threshold, float? v_reset, str surrogate, float alpha, bool detach_reset) "
        "-> (Tensor, Tensor)");
  m.def("plif_fwd(Tensor x, Tensor w, Tensor? v0, int channel_dim, bool decay_input, "
        "float v_threshold, float? v_reset, str surrogate, float alpha, bool detach_reset, "
        "bool store_v_seq) -> (Tensor, Tensor, Tensor)");
  m.def("plif_bwd(Tensor grad_spikes, Tensor? grad_v_last, Tensor x, Tensor w, Tensor? v0, "
        "int channel_dim, bool decay_input, float v_threshold, float? v_reset, str surrogate, "
        "float alpha, bool detach_reset) -> (Tensor, Tensor, Tensor)");
  m.def("ilif_fwd(Tensor x, Tensor? v0, float tau, bool decay_input, float v_threshold, "
        "int max_level, str rounding, bool detach_reset, bool store_v_seq) -> (Tensor, Tensor, Tensor)");
  m.def("ilif_bwd(Tensor grad_spikes, Tensor? grad_v_last, Tensor x, Tensor? v0, float tau, "
        "bool decay_input, float v_threshold, int max_level, str rounding, bool detach_reset) "
        "-> (Tensor, Tensor)");
  // Forward returns (spikes, v_last, a_last, v_seq).
  m.def("alif_fwd(Tensor x, Tensor? v0, Tensor? a0, float tau, bool decay_input, "
        "float v_threshold, float? v_reset, float tau_adapt, float beta, str surrogate, float alpha, "
        "bool detach_reset, bool store_v_seq) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("alif_bwd(Tensor grad_spikes, Tensor? grad_v_last, Tensor? grad_a_last, Tensor x, "
        "Tensor? v0, Tensor? a0, float tau, bool decay_input, float v_threshold, float? v_reset, "
        "float tau_adapt, float beta, str surrogate, float alpha, bool detach_reset) "
        "-> (Tensor, Tensor, Tensor)");

  // ---- N:M structured-sparse GEMM (csrc/common/nm_params.h has the format) -------
  // A sparse W [rows, K] is (values [rows, K/m*n], meta uint8 [rows, ceil(K/8)]: the
  // kept-entry mask, bit-packed along K). nm_compress picks the n largest |w| of each
  // group of m when meta is None, else gathers at meta's positions; returns (values, meta).
  m.def("nm_compress(Tensor weight, Tensor? meta, int n, int m) -> (Tensor, Tensor)");
  // y = x @ W^T + bias for x [*, K]; y [*, rows].
  m.def("nm_linear(Tensor x, Tensor values, Tensor meta, int n, int m, Tensor? bias) -> Tensor");
  // grad_x = grad_y @ W for grad_y [*, rows]; grad_x [*, K].
  m.def("nm_linear_grad_input(Tensor grad_out, Tensor values, Tensor meta, int n, int m) "
        "-> Tensor");
  // Training: y = x @ (weight * mask)^T + bias with a dense weight [rows, K], its mask
  // (meta) and kept values (values = nm_compress(weight, meta)), computed once by the
  // caller. Its autograd gives weight a dense gradient (SR-STE: grad_y^T x plus
  // decay * (1 - mask) * weight) when dense_grad, else the masked grad_y^T x.
  m.def("nm_masked_linear(Tensor x, Tensor weight, Tensor values, Tensor meta, int n, int m, "
        "Tensor? bias, float decay, bool dense_grad) -> Tensor");

  // ---- spiking self-attention (csrc/common/attention_params.h) --------------------
  // out = q @ (k^T @ v) * scale for binary (exactly 0/1) q, k [..., N, D], v [..., N, Dv];
  // order "kv_first" | "qk_first" (identical results). out [..., N, Dv] in q's dtype.
  // Entries that are not 0 or 1 raise an error naming the tensor.
  m.def("ssa_fwd(Tensor q, Tensor k, Tensor v, float scale, str order) -> Tensor");
  // SSA followed by the attention LIF over dim 0 (q [T, ..., N, D]; decay_input, hard reset
  // to v_reset, v0 = v_reset), fused: returns the spikes [T, ..., N, Dv] in q's dtype, the
  // attention values never stored. surrogate / alpha / detach_reset serve the backward.
  m.def("ssa_lif_fwd(Tensor q, Tensor k, Tensor v, float scale, str order, float tau, "
        "float v_threshold, float v_reset, str surrogate, float alpha, bool detach_reset) "
        "-> Tensor");

  // ---- recurrent attention (csrc/common/recurrent_params.h) -------------------------
  // RWKV-4 WKV: time_decay, time_first float32 [C]; k, v [B, T, C] (one float dtype);
  // returns y [B, T, C] in v's dtype. Backward recomputes the forward; it returns
  // (grad_time_decay, grad_time_first, grad_k, grad_v), the parameter gradients float32
  // and summed over B and T in a fixed order.
  m.def("rwkv4_wkv_fwd(Tensor time_decay, Tensor time_first, Tensor k, Tensor v) -> Tensor");
  m.def("rwkv4_wkv_bwd(Tensor grad_y, Tensor time_decay, Tensor time_first, Tensor k, "
        "Tensor v) -> (Tensor, Tensor, Tensor, Tensor)");
  // Spike-driven self-attention (Spike-driven Transformer V1): q, k, v [T, B, H, N, D];
  // out = q * LIF_T(sum_N k * v) with hard reset to 0 and decay_input. Forward returns
  // (out [T, B, H, N, D] in q's dtype, h_seq [T, B, H, 1, D] float32: the membrane before
  // firing, what the backward needs; not differentiable).
  m.def("sdsa_fwd(Tensor q, Tensor k, Tensor v, float v_threshold, float tau, "
        "bool detach_reset, str surrogate, float alpha) -> (Tensor, Tensor)");
  m.def("sdsa_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor h_seq, "
        "float v_threshold, float tau, bool detach_reset, str surrogate, float alpha) "
        "-> (Tensor, Tensor, Tensor)");

  // ---- sliding-window causal softmax attention (csrc/common/swa_params.h) -------------
  // q, k [B, T, H, D], v [B, T, H, Dv]; query t attends to keys j with t - window < j <= t
  // (window >= 1). swa_fwd returns (o [B, T, H, Dv] in q's dtype, lse [B, H, T] fp32, the
  // log-sum-exp of each row's scaled scores). swa_bwd returns (dq, dk, dv) from the
  // gradient of o (and of lse, when given) and the saved o and lse.
  m.def("swa_fwd(Tensor q, Tensor k, Tensor v, int window, float scale) -> (Tensor, Tensor)");
  m.def("swa_bwd(Tensor grad_o, Tensor? grad_lse, Tensor q, Tensor k, Tensor v, Tensor o, "
        "Tensor lse, int window, float scale) -> (Tensor, Tensor, Tensor)");

  // ---- linear-attention scans (csrc/common/scan_params.h) --------------------------
  // S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t, o_t = scale q_t S_t per sequence and query
  // head; q [B, T, Hq, K], k [B, T, Hkv, K], v [B, T, Hkv, V] (one dtype: fp32 / bf16 /
  // fp16), Hq % Hkv == 0 (GQA). At most one decay: g [B, T, Hq] or g_gamma [Hq] (simple
  // GLA), gk [B, T, Hq, K] (GLA); none: linear attention. initial_state [N, Hq, K, V]
  // fp32/fp64, cu_seqlens int [N + 1] (packed sequences, B == 1). chunk_size: a power of
  // two (the chunked algorithm), or 0 (the step-by-step recurrence). Returns o [B, T, Hq,
  // V] in q's dtype and the final state [N, Hq, K, V] fp32 (empty if not asked for).
  m.def("linear_scan_fwd(Tensor q, Tensor k, Tensor v, Tensor? g, Tensor? g_gamma, "
        "Tensor? gk, float scale, Tensor? initial_state, Tensor? cu_seqlens, int chunk_size, "
        "bool output_final_state) -> (Tensor, Tensor)");
  // Gradients of linear_scan_fwd: (dq, dk, dv, dg, dh0); dg has the shape and dtype of the
  // decay given (empty if none), dh0 those of initial_state (empty if none).
  m.def("linear_scan_bwd(Tensor grad_o, Tensor? grad_final_state, Tensor q, Tensor k, "
        "Tensor v, Tensor? g, Tensor? g_gamma, Tensor? gk, float scale, "
        "Tensor? initial_state, Tensor? cu_seqlens, int chunk_size) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");

  // ---- spike sparse convolution (csrc/common/sparse_conv_params.h) ------------------
  // indices int32 [N, ndim + 1] (batch index first). sparse_conv_map returns (out_indices
  // int32 [M, ndim + 1], nbmap int32 [M, K]): nbmap[m, k] is the input row feeding output
  // row m through kernel offset k (offsets row-major over the kernel dims), or -1. subm:
  // the outputs are the inputs (a copy, same order); otherwise every reached site, sorted
  // batch-major then by coordinates. kernel_size / stride / padding / dilation: 1 or ndim
  // ints. sparse_map_transpose gives the input-major table [num_in, K] of a map.
  m.def("sparse_conv_map(Tensor indices, int[] spatial_shape, int batch_size, "
        "int[] kernel_size, int[] stride, int[] padding, int[] dilation, bool subm) "
        "-> (Tensor, Tensor)");
  m.def("sparse_map_transpose(Tensor nbmap, int num_in) -> Tensor");
  // out [M, Cout] = bias + sum_k features[nbmap[:, k]] @ weight[:, k, :]^T over existing
  // neighbours; weight [Cout, K, Cin] (spconv's [Cout, k..., Cin] flattened), fp32 / bf16 /
  // fp16 like features, fp32 accumulation. spikes: 0 dense GEMM, 1 skip zero entries of
  // features (same bits for finite weights), -1 pick from the measured density. nbmap_t:
  // the transposed table (sparse_map_transpose) when the caller has it cached; only the
  // autograd formula uses it (the backward builds it otherwise).
  m.def("sparse_conv_fwd(Tensor features, Tensor nbmap, Tensor weight, Tensor? bias, "
        "int spikes, Tensor? nbmap_t=None) -> Tensor");
  // Weight gradient [Cout, K, Cin] (grad_out's dtype) = sum_m grad_out[m]^T features[nbmap[m, k]];
  // spikes as in sparse_conv_fwd (skips the zero entries of features).
  m.def("sparse_conv_wgrad(Tensor grad_out, Tensor features, Tensor nbmap, int spikes) -> Tensor");
}
