"""Pure-PyTorch references of the attention family: the test oracle and the fallback.

Linear-attention scans follow fla's conventions: ``q, k [B, T, H, K]``, ``v [B, T, H, V]``,
``scale`` (None means ``K ** -0.5``), ``initial_state [N, H, K, V]``, ``output_final_state``,
``cu_seqlens`` (int ``[N + 1]``, packed variable-length sequences with ``B == 1``), and they
return ``(o, final_state or None)``. The recurrence they all compute, per sequence and head:

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t        (S: [K, V], g_t: [K], log-decay <= 0)
    o_t = scale * q_t S_t

simple GLA has one decay per head (``g [B, T, H]`` or a constant ``g_gamma [H]``), GLA one
per key (``g [B, T, H, K]``), linear attention none (g = 0). ``fused_recurrent_*`` is the loop
over t; ``chunk_*`` is the chunked algorithm (intra-chunk masked attention + inter-chunk
state passing); both give the same answer up to rounding.

Grouped-query attention: k and v may have ``Hkv`` heads with ``Hq % Hkv == 0``; q head h reads
kv head ``h // (Hq // Hkv)``. Decays, states and outputs have ``Hq`` heads (the result equals
repeating each kv head ``Hq // Hkv`` times).

Arithmetic is float64 when any of q, k, v is float64 (for gradcheck), else float32;
``o`` is returned in q's dtype and ``final_state`` in that compute dtype.
"""
from __future__ import annotations

import torch

from .neurons import lif

__all__ = ["chunk_simple_gla_ref", "fused_recurrent_simple_gla_ref", "chunk_linear_attn_ref",
           "fused_recurrent_linear_attn_ref", "chunk_gla_ref", "fused_recurrent_gla_ref",
           "ssa_ref", "ssa_lif_ref", "sdsa_ref", "rwkv4_wkv_ref", "sliding_window_attn_ref"]


# ---------------------------------------------------------------------------------------------
# validation


def _compute_dtype(*xs):
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def _check_float(name, x):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")


def _check_scan(q, k, v, g, g_kind, initial_state, cu_seqlens, chunk_size):
    """Validate a linear-attention scan call; return (B, T, Hq, Hkv, K, V, N)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_float(name, x)
        if x.dim() != 4:
            raise ValueError(f"{name}: expected 4 dims [B, T, H, D], got shape {tuple(x.shape)}")
    B, T, Hq, K = q.shape
    if k.shape[:2] != (B, T) or k.shape[3] != K:
        raise ValueError(f"k: expected shape [{B}, {T}, Hkv, {K}] to match q "
                         f"{tuple(q.shape)}, got {tuple(k.shape)}")
    Hkv = k.shape[2]
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(f"k: q heads ({Hq}) must be a multiple of k/v heads ({Hkv})")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v: expected shape [{B}, {T}, {Hkv}, V] to match k "
                         f"{tuple(k.shape)}, got {tuple(v.shape)}")
    V = v.shape[3]
    if g is not None:
        _check_float(g_kind, g)
        want = {"g": (B, T, Hq), "g_gamma": (Hq,), "gk": (B, T, Hq, K)}[g_kind]
        if tuple(g.shape) != want:
            raise ValueError(f"{'g' if g_kind == 'gk' else g_kind}: expected shape "
                             f"{list(want)}, got {tuple(g.shape)}")
    if chunk_size is not None:
        if (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
                or chunk_size & (chunk_size - 1)):
            raise ValueError(f"chunk_size: expected a power of two >= 1, got {chunk_size!r}")
    if cu_seqlens is None:
        N = B
    else:
        if not isinstance(cu_seqlens, torch.Tensor):
            raise TypeError(f"cu_seqlens: expected a torch.Tensor, got {type(cu_seqlens).__name__}")
        if (cu_seqlens.is_floating_point() or cu_seqlens.is_complex()
                or cu_seqlens.dtype == torch.bool):
            raise TypeError(f"cu_seqlens: expected an integer tensor, got {cu_seqlens.dtype}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise ValueError(f"cu_seqlens: expected 1 dim [N + 1] with N >= 1, got shape "
                             f"{tuple(cu_seqlens.shape)}")
        if B != 1:
            raise ValueError(f"cu_seqlens: packed sequences need batch size 1, got B = {B}")
        cu = cu_seqlens.tolist()
        if cu[0] != 0:
            raise ValueError(f"cu_seqlens: must start at 0, got {cu[0]}")
        if cu[-1] != T:
            raise ValueError(f"cu_seqlens: must end at T = {T}, got {cu[-1]}")
        if any(b < a for a, b in zip(cu, cu[1:])):
            raise ValueError(f"cu_seqlens: must be non-decreasing, got {cu}")
        N = len(cu) - 1
    if initial_state is not None:
        if not isinstance(initial_state, torch.Tensor):
            raise TypeError("initial_state: expected a torch.Tensor, got "
                            f"{type(initial_state).__name__}")
        if initial_state.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"initial_state: expected float32 or float64, got "
                            f"{initial_state.dtype}")
        if tuple(initial_state.shape) != (N, Hq, K, V):
            raise ValueError(f"initial_state: expected shape [N, H, K, V] = "
                             f"{[N, Hq, K, V]}, got {tuple(initial_state.shape)}")
    return B, T, Hq, Hkv, K, V, N


def _sequences(B, T, cu_seqlens):
    """(batch row, start, end) of every sequence."""
    if cu_seqlens is None:
        return [(b, 0, T) for b in range(B)]
    cu = cu_seqlens.tolist()
    return [(0, s, e) for s, e in zip(cu, cu[1:])]


# ---------------------------------------------------------------------------------------------
# cores: one sequence, [T, H, *] layout, kv heads already repeated, decay gk [T, H, K or 1]


def _recurrent_core(q, k, v, gk, S, scale):
    out = []
    for t in range(q.shape[0]):
        S = gk[t].exp().unsqueeze(-1) * S + k[t].unsqueeze(-1) * v[t].unsqueeze(-2)
        out.append(scale * torch.einsum("hk,hkv->hv", q[t], S))
    o = torch.stack(out) if out else v.new_zeros(0, q.shape[1], v.shape[2])
    return o, S


def _chunk_core(q, k, v, gk, S, scale, chunk_size):
    out = []
    for s in range(0, q.shape[0], chunk_size):
        qc, kc, vc = q[s:s + chunk_size], k[s:s + chunk_size], v[s:s + chunk_size]
        L = qc.shape[0]
        b = gk[s:s + chunk_size].cumsum(0)              # [L, H, Kg]: decay from chunk start
        # inter-chunk: what the state carried in contributes, decayed to each position
        o_inter = scale * torch.einsum("lhk,hkv->lhv", qc * b.exp(), S)
        # intra-chunk: A[i, j] = scale * sum_k q_ik k_jk exp(b_i - b_j)_k for j <= i
        causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()[:, :, None, None]
        diff = b.unsqueeze(1) - b.unsqueeze(0)          # [Li, Lj, H, Kg]
        decay = torch.where(causal, diff, float("-inf")).exp()   # no exp(+large) above diag
        A = scale * (qc.unsqueeze(1) * kc.unsqueeze(0) * decay).sum(-1)   # [Li, Lj, H]
        out.append(o_inter + torch.einsum("ijh,jhv->ihv", A, vc))
        # state at the chunk end: old state decayed over the chunk + each k_j decayed from j
        last = b[-1]                                    # [H, Kg]
        S = last.exp().unsqueeze(-1) * S + torch.einsum(
            "lhk,lhv->hkv", kc * (last.unsqueeze(0) - b).exp(), vc)
    o = torch.cat(out) if out else v.new_zeros(0, q.shape[1], v.shape[2])
    return o, S


def _scan(q, k, v, g, g_kind, scale, initial_state, output_final_state, cu_seqlens,
          chunk_size):
    B, T, Hq, Hkv, K, V, N = _check_scan(q, k, v, g, g_kind, initial_state, cu_seqlens,
                                         chunk_size)
    dt = _compute_dtype(q, k, v)
    scale = K ** -0.5 if scale is None else float(scale)
    rep = Hq // Hkv
    qf = q.to(dt)
    kf = k.to(dt).repeat_interleave(rep, dim=2)         # q head h -> kv head h // rep
    vf = v.to(dt).repeat_interleave(rep, dim=2)
    if g is None:
        gk = qf.new_zeros(B, T, Hq, 1)
    elif g_kind == "g":
        gk = g.to(dt).unsqueeze(-1)
    elif g_kind == "g_gamma":
        gk = g.to(dt).view(1, 1, Hq, 1).expand(B, T, Hq, 1)
    else:
        gk = g.to(dt)
    outs, states = [], []
    for n, (b, s, e) in enumerate(_sequences(B, T, cu_seqlens)):
        S = (qf.new_zeros(Hq, K, V) if initial_state is None else initial_state[n].to(dt))
        args = (qf[b, s:e], kf[b, s:e], vf[b, s:e], gk[b, s:e], S, scale)
        o, S = (_recurrent_core(*args) if chunk_size is None
                else _chunk_core(*args, chunk_size))
        outs.append(o)
        states.append(S)
    o = torch.stack(outs) if cu_seqlens is None else torch.cat(outs).unsqueeze(0)
    return o.to(q.dtype), (torch.stack(states) if output_final_state else None)


def _simple_g(g, g_gamma):
    if g is not None and g_gamma is not None:
        raise ValueError("g, g_gamma: give at most one of them")
    if g_gamma is not None:
        return g_gamma, "g_gamma"
    return g, "g"


# ---------------------------------------------------------------------------------------------
# public scan references


def fused_recurrent_simple_gla_ref(q, k, v, g=None, g_gamma=None, scale=None,
                                   initial_state=None, output_final_state=False,
                                   cu_seqlens=None):
    """Simple GLA (one scalar log-decay per head), step by step.

    q [B, T, Hq, K], k [B, T, Hkv, K], v [B, T, Hkv, V]; g [B, T, Hq] log-decay (<= 0) or
    g_gamma [Hq] (the same decay at every step), at most one; neither means no decay.
    initial_state [N, Hq, K, V] float32/float64 (N = B, or len(cu_seqlens) - 1).
    Returns (o [B, T, Hq, V], final_state [N, Hq, K, V] or None).
    """
    g, kind = _simple_g(g, g_gamma)
    return _scan(q, k, v, g, kind, scale, initial_state, output_final_state, cu_seqlens, None)


def chunk_simple_gla_ref(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                         output_final_state=False, cu_seqlens=None, chunk_size=64):
    """Simple GLA, chunked: same arguments and result as :func:`fused_recurrent_simple_gla_ref`.

    Each chunk of ``chunk_size`` steps (a power of two; the last chunk may be shorter) adds
    the carried-in state's contribution ``scale * (q_i exp(b_i)) S`` to a causal masked
    attention ``sum_{j<=i} scale * q_i k_j^T exp(b_i - b_j) v_j``, with ``b`` the in-chunk
    cumulative log-decay; then ``S <- exp(b_L) S + sum_j exp(b_L - b_j) k_j^T v_j``.
    """
    g, kind = _simple_g(g, g_gamma)
    return _scan(q, k, v, g, kind, scale, initial_state, output_final_state, cu_seqlens,
                 chunk_size)


def fused_recurrent_linear_attn_ref(q, k, v, scale=None, initial_state=None,
                                    output_final_state=False, cu_seqlens=None):
    """Causal linear attention (no decay): S_t = S_{t-1} + k_t^T v_t, o_t = scale q_t S_t."""
    return _scan(q, k, v, None, "g", scale, initial_state, output_final_state, cu_seqlens,
                 None)


def chunk_linear_attn_ref(q, k, v, scale=None, initial_state=None, output_final_state=False,
                          cu_seqlens=None, chunk_size=64):
    """Causal linear attention, chunked (see :func:`chunk_simple_gla_ref` with g = 0)."""
    return _scan(q, k, v, None, "g", scale, initial_state, output_final_state, cu_seqlens,
                 chunk_size)


def fused_recurrent_gla_ref(q, k, v, g, scale=None, initial_state=None,
                            output_final_state=False, cu_seqlens=None):
    """GLA with a per-key log-decay g [B, T, Hq, K] (<= 0), step by step:
    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t. Other arguments as for simple GLA."""
    if g is None:
        raise ValueError("g: required for GLA (shape [B, T, H, K])")
    return _scan(q, k, v, g, "gk", scale, initial_state, output_final_state, cu_seqlens, None)


def chunk_gla_ref(q, k, v, g, scale=None, initial_state=None, output_final_state=False,
                  cu_seqlens=None, chunk_size=64):
    """GLA, chunked; same result as :func:`fused_recurrent_gla_ref`. The intra-chunk mask
    is built per key (``[L, L, H, K]`` decays), which is clear rather than fast."""
    if g is None:
        raise ValueError("g: required for GLA (shape [B, T, H, K])")
    return _scan(q, k, v, g, "gk", scale, initial_state, output_final_state, cu_seqlens,
                 chunk_size)


# ---------------------------------------------------------------------------------------------
# spiking attention


def _check_qkv_same(q, k, v, what):
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_float(name, x)
        if x.dim() < 2:
            raise ValueError(f"{name}: expected at least 2 dims [..., N, D], got "
                             f"{tuple(x.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"k: expected the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if what == "same" and v.shape != q.shape:
        raise ValueError(f"v: expected the shape of q {tuple(q.shape)}, got {tuple(v.shape)}")
    if what == "tokens" and v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"v: expected shape [..., N, Dv] with [...] and N as in q "
                         f"{tuple(q.shape)}, got {tuple(v.shape)}")


def ssa_ref(q, k, v, scale=0.125, order="kv_first"):
    """Spikformer spiking self-attention without softmax: ``q @ k^T @ v * scale``.

    q, k [..., N, D], v [..., N, Dv] (usually spikes [T, B, H, N, D]); returns [..., N, Dv]
    in the promoted dtype. ``order="kv_first"`` computes ``q @ (k^T @ v)`` (linear in N),
    ``"qk_first"`` computes ``(q @ k^T) @ v`` (the paper's order); the results are equal.
    The spiking neuron Spikformer applies afterwards is not part of this op.
    """
    _check_qkv_same(q, k, v, "tokens")
    if order == "kv_first":
        return (q @ (k.transpose(-2, -1) @ v)) * scale
    if order == "qk_first":
        return ((q @ k.transpose(-2, -1)) @ v) * scale
    raise ValueError(f"order: expected 'kv_first' or 'qk_first', got {order!r}")


def ssa_lif_ref(q, k, v, scale=0.125, order="kv_first", tau=2.0, v_threshold=0.5,
                v_reset=0.0, surrogate="sigmoid", alpha=None, detach_reset=True):
    """Spikformer's SSA followed by its attention LIF (``MultiStepLIFNode(tau=2.0,
    v_threshold=0.5, detach_reset=True)``): :func:`ssa_ref`, then
    :func:`spikeops.ref.neurons.lif` over dim 0 (T) with ``decay_input=True`` and a hard
    reset to ``v_reset``. q, k [T, ..., N, D], v [T, ..., N, Dv]; returns the spikes."""
    if q.dim() < 3:
        raise ValueError(f"q: expected at least 3 dims [T, ..., N, D] (the LIF runs over dim 0), "
                         f"got shape {tuple(q.shape)}")
    attn = ssa_ref(q, k, v, scale, order)
    s, _ = lif(attn, tau=tau, v_threshold=v_threshold, v_reset=v_reset, decay_input=True,
               detach_reset=detach_reset, surrogate=surrogate, alpha=alpha)
    return s


def sdsa_ref(q, k, v, v_threshold=0.5, tau=2.0, detach_reset=True, surrogate="sigmoid",
             alpha=None):
    """Spike-driven self-attention (Spike-driven Transformer V1, SDSA-1):
    ``out = q * LIF(sum_N(k * v))``.

    q, k, v [T, B, H, N, D] (time first). ``k * v`` is summed over the token axis N (dim -2,
    kept as size 1), giving [T, B, H, 1, D]; a multi-step LIF over the T axis
    (:func:`spikeops.ref.neurons.lif` with ``tau``, ``v_threshold``, hard reset to 0,
    ``decay_input=True``, ``detach_reset``, the given surrogate — the paper's
    ``MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True)``) turns it into spikes,
    which gate q by broadcasting over N. Returns [T, B, H, N, D] in q's dtype.
    """
    _check_qkv_same(q, k, v, "same")
    if q.dim() != 5:
        raise ValueError(f"q: expected 5 dims [T, B, H, N, D], got {tuple(q.shape)}")
    kv = (k * v).sum(dim=-2, keepdim=True)
    s, _ = lif(kv, tau=tau, v_threshold=v_threshold, v_reset=0.0, decay_input=True,
               detach_reset=detach_reset, surrogate=surrogate, alpha=alpha)
    return (q * s.to(q.dtype)).to(q.dtype)


# ---------------------------------------------------------------------------------------------
# RWKV-4


def rwkv4_wkv_ref(time_decay, time_first, k, v):
    """RWKV-4 WKV (as SpikeGPT uses it), numerically stable for any T.

    time_decay, time_first [C]; k, v [B, T, C]. With ``w = -exp(time_decay)``, ``u = time_first``:

        wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
              / (sum_{i<t} e^{(t-1-i) w + k_i}     + e^{u + k_t})

    computed as a scan over t of (a, b, p): numerator and denominator of the past terms
    scaled by e^{-p}, p their running maximum exponent, so no exp() sees a positive
    argument. Returns [B, T, C] in v's dtype (float64 arithmetic when any input is).
    """
    for name, x in (("time_decay", time_decay), ("time_first", time_first), ("k", k), ("v", v)):
        _check_float(name, x)
    if k.dim() != 3:
        raise ValueError(f"k: expected 3 dims [B, T, C], got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v: expected the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    C = k.shape[2]
    for name, x in (("time_decay", time_decay), ("time_first", time_first)):
        if tuple(x.shape) != (C,):
            raise ValueError(f"{name}: expected shape [{C}], got {tuple(x.shape)}")
    dt = _compute_dtype(time_decay, time_first, k, v)
    w = -time_decay.to(dt).exp()
    u = time_first.to(dt)
    k, v_ = k.to(dt), v.to(dt)
    B, T, _ = k.shape
    a = k.new_zeros(B, C)                        # sum e^{exponent - p} v over the past
    b = k.new_zeros(B, C)                        # sum e^{exponent - p} over the past
    p = k.new_full((B, C), -1e38)                # running max exponent (-1e38: empty past)
    out = []
    for t in range(T):
        kt, vt = k[:, t], v_[:, t]
        # output: the past plus the current token with its bonus u
        q = torch.maximum(p, u + kt)
        e1, e2 = (p - q).exp(), (u + kt - q).exp()
        out.append((e1 * a + e2 * vt) / (e1 * b + e2))
        # state: decay the past by w, add the current token without the bonus
        q = torch.maximum(p + w, kt)
        e1, e2 = (p + w - q).exp(), (kt - q).exp()
        a, b, p = e1 * a + e2 * vt, e1 * b + e2, q
    y = torch.stack(out, 1) if out else v_.new_zeros(B, 0, C)
    return y.to(v.dtype)


# ---------------------------------------------------------------------------------------------
# sliding-window softmax attention


def sliding_window_attn_ref(q, k, v, window, scale=None):
    """Causal softmax attention over a sliding window.

    q, k [B, T, H, D], v [B, T, H, Dv]; position t attends to keys j with
    ``t - window < j <= t`` (``window`` >= 1 keys, itself included). scale None means
    D ** -0.5. Returns [B, T, H, Dv] in q's dtype (float64 arithmetic when any input is).
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_float(name, x)
        if x.dim() != 4:
            raise ValueError(f"{name}: expected 4 dims [B, T, H, D], got {tuple(x.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"k: expected the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v: expected shape [B, T, H, Dv] with B, T, H as in q "
                         f"{tuple(q.shape)}, got {tuple(v.shape)}")
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        raise ValueError(f"window: expected an int >= 1, got {window!r}")
    T, D = q.shape[1], q.shape[3]
    scale = D ** -0.5 if scale is None else float(scale)
    dt = _compute_dtype(q, k, v)
    scores = torch.einsum("bthd,bshd->bhts", q.to(dt), k.to(dt)) * scale
    t = torch.arange(T, device=q.device)
    offset = t.view(-1, 1) - t.view(1, -1)              # t - j
    allowed = (offset >= 0) & (offset < window)
    p = scores.masked_fill(~allowed, float("-inf")).softmax(-1)   # diagonal always allowed
    return torch.einsum("bhts,bshd->bthd", p, v.to(dt)).to(q.dtype)

