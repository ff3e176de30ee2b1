"""2:4 layouts: spikeops <-> PyTorch's CUTLASS semi-structured format, and transposable masks.

The conversion is checked bit for bit against PyTorch's own
``sparse_semi_structured_from_dense_cutlass`` / ``..._to_dense_cutlass``; the transposable mask
against a brute-force search written independently here.
"""
from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
from torch.sparse._semi_structured_conversions import (
    sparse_semi_structured_from_dense_cutlass as torch_from_dense,
    sparse_semi_structured_to_dense_cutlass as torch_to_dense,
)

from spikeops.nm.semi_structured import (
    from_semi_structured_cutlass,
    to_semi_structured_cutlass,
    to_sparse_semi_structured,
)
from spikeops.nm.transposable import transposable_mask, transposable_patterns

DTYPES = [torch.float16, torch.bfloat16]
SHAPES = [(32, 32), (32, 64), (64, 96), (96, 32), (128, 256)]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


# ---- helpers: our (values, meta) format from a dense tensor and a bool mask ----

def compress(w: torch.Tensor, mask: torch.Tensor):
    rows, k = w.shape
    values = w[mask].reshape(rows, -1)
    nbytes = (k + 7) // 8
    bits = torch.zeros(rows, nbytes * 8, dtype=torch.int64, device=w.device)
    bits[:, :k] = mask.to(torch.int64)
    weights = 1 << torch.arange(8, device=w.device)
    meta = (bits.reshape(rows, nbytes, 8) * weights).sum(-1).to(torch.uint8)
    return values, meta


def decompress(values, meta, shape):
    rows, k = shape
    bits = (meta.to(torch.int64).unsqueeze(-1) >> torch.arange(8, device=meta.device)) & 1
    mask = bits.reshape(rows, -1)[:, :k].bool()
    w = torch.zeros(shape, dtype=values.dtype, device=values.device)
    w[mask] = values.reshape(-1)
    return w, mask


def random_24_mask(rows, k, generator=None):
    order = torch.rand(rows, k // 4, 4, generator=generator).argsort(-1)
    mask = torch.zeros(rows, k // 4, 4, dtype=torch.bool)
    mask.scatter_(-1, order[..., :2], True)
    return mask.reshape(rows, k)


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal as raw bits (so -0.0 != +0.0), with equal dtype and shape."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        a, b = a.view(torch.int16), b.view(torch.int16)
    return torch.equal(a, b)


def check_against_torch(w, mask):
    """Our conversion of (w, mask) equals PyTorch's of the dense matrix; round trips agree."""
    rows, k = w.shape
    dense = torch.where(mask, w, torch.zeros((), dtype=w.dtype))
    values, meta = compress(dense, mask)
    packed, cmeta = to_semi_structured_cutlass(values, meta, (rows, k))
    ref_packed, ref_meta = torch_from_dense(dense)
    assert bits_equal(packed, ref_packed)
    assert bits_equal(cmeta, ref_meta) and cmeta.dtype == torch.int16
    assert cmeta.shape == (rows, k // 16)
    # PyTorch decodes our tensors to the same dense matrix (the CUTLASS layout keeps only two
    # positions per group, so a kept -0.0 the encoder does not pick comes back as +0.0)
    assert torch.equal(torch_to_dense(packed, cmeta), dense)
    # back to our format: same dense matrix; the canonical mask covers the nonzeros
    values2, meta2 = from_semi_structured_cutlass(packed, cmeta)
    dense2, mask2 = decompress(values2, meta2, (rows, k))
    assert torch.equal(dense2, dense)
    assert bool((mask2 | (dense == 0)).all())
    assert torch.equal(mask2.reshape(rows, -1, 4).sum(-1), torch.full((rows, k // 4), 2))
    # and again to CUTLASS: a fixed point
    packed3, cmeta3 = to_semi_structured_cutlass(values2, meta2, (rows, k))
    assert bits_equal(packed3, packed) and bits_equal(cmeta3, cmeta)
    # preserve_mask: an exact round trip of our mask, decoding to the same dense matrix
    packed_p, cmeta_p = to_semi_structured_cutlass(values, meta, (rows, k), preserve_mask=True)
    assert bits_equal(torch_to_dense(packed_p, cmeta_p), dense)
    values_p, meta_p = from_semi_structured_cutlass(packed_p, cmeta_p)
    assert bits_equal(values_p, values) and torch.equal(meta_p, meta)
    return values, meta, values2, meta2


# ---- conversion ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch_random(dtype, shape):
    rows, k = shape
    w = torch.randn(rows, k).to(dtype)
    mask = random_24_mask(rows, k)
    values, meta, values2, meta2 = check_against_torch(w, mask)
    # no kept zeros: the mask survives the round trip exactly
    assert bits_equal(values2, values) and torch.equal(meta2, meta)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(32, 32), (64, 128)])
def test_matches_torch_kept_zeros(dtype, shape):
    """Kept entries equal to 0 (and -0.0), groups with one or no nonzero."""
    rows, k = shape
    w = torch.randn(rows, k).to(dtype)
    mask = random_24_mask(rows, k)
    w[torch.rand(rows, k) < 0.4] = 0.0
    w[torch.rand(rows, k) < 0.1] = -0.0
    w[:4] = 0.0                            # whole rows of all-zero groups
    check_against_torch(w, mask)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_mask_and_nonzero_subset(dtype):
    """All 24 (2-of-4 mask, nonzero subset of it with < 2 elements ... 2) group cases."""
    cases = []
    for kept in itertools.combinations(range(4), 2):
        for n in range(3):
            for nz in itertools.combinations(kept, n):
                cases.append((kept, nz))
    assert len(cases) == 6 * (1 + 2 + 1)
    rows, k = 32, 32
    groups = rows * k // 4
    w = torch.zeros(groups, 4, dtype=dtype)
    mask = torch.zeros(groups, 4, dtype=torch.bool)
    pick = torch.randint(len(cases), (groups,))
    pick[: len(cases)] = torch.arange(len(cases))
    for g, c in enumerate(pick.tolist()):
        kept, nz = cases[c]
        mask[g, list(kept)] = True
        for p in nz:
            w[g, p] = float(g % 7 + 1) * (-1) ** p
        for p in set(kept) - set(nz):
            w[g, p] = -0.0 if g % 2 else 0.0
    check_against_torch(w.reshape(rows, k), mask.reshape(rows, k))


def test_edge_case_positions_documented():
    """PyTorch's encoder, for each of the 16 nonzero patterns, stores the positions we document."""
    from spikeops.nm.semi_structured import _POSITIONS
    dense = torch.zeros(32, 64, dtype=torch.float16)
    for p in range(16):
        dense[0, 4 * p: 4 * p + 4] = torch.tensor([float(p >> i & 1) for i in range(4)])
    _, meta = torch_from_dense(dense)
    # recover row 0's logical metadata through PyTorch's decoder: decode a packed matrix
    # whose entries are 1..: the dense position of each packed entry reveals (lo, hi)
    probe = torch.arange(1, 32 * 32 + 1, dtype=torch.float32).reshape(32, 32).to(torch.float16)
    decoded = torch_to_dense(probe, meta)
    for p in range(16):
        group = decoded[0, 4 * p: 4 * p + 4]
        where = group.nonzero().flatten().tolist()
        assert tuple(where) == _POSITIONS[p], p
    assert _POSITIONS[0b0000] == (2, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(dtype):
    w = torch.randn(64, 64).to(dtype)
    mask = random_24_mask(64, 64)
    values, meta = compress(torch.where(mask, w, 0.0), mask)
    v_nc = values.t().contiguous().t()
    m_nc = meta.t().contiguous().t()
    a = to_semi_structured_cutlass(values, meta, (64, 64))
    b = to_semi_structured_cutlass(v_nc, m_nc, (64, 64))
    assert bits_equal(a[0], b[0]) and bits_equal(a[1], b[1])
    back = from_semi_structured_cutlass(a[0].t().contiguous().t(), a[1].t().contiguous().t())
    assert bits_equal(back[0], values) and torch.equal(back[1], meta)


def test_bad_inputs_raise():
    w = torch.randn(32, 64, dtype=torch.float16)
    mask = random_24_mask(32, 64)
    values, meta = compress(w * mask, mask)
    ok = (32, 64)
    with pytest.raises(ValueError, match="values"):
        to_semi_structured_cutlass(values.float(), meta, ok)
    with pytest.raises(ValueError, match="1:2"):
        to_semi_structured_cutlass(values.float(), meta, ok)
    with pytest.raises(ValueError, match="values"):
        to_semi_structured_cutlass(values[:, :-2], meta, ok)
    with pytest.raises(ValueError, match="meta"):
        to_semi_structured_cutlass(values, meta.to(torch.int16), ok)
    with pytest.raises(ValueError, match="meta"):
        to_semi_structured_cutlass(values, meta[:, :-1], ok)
    with pytest.raises(ValueError, match="shape"):
        to_semi_structured_cutlass(values, meta, (16, 64))
    with pytest.raises(ValueError, match="shape"):
        to_semi_structured_cutlass(values[:, :24], meta[:, :6], (32, 48))
    with pytest.raises(ValueError, match="shape"):
        to_semi_structured_cutlass(values, meta, (32, 64, 1))
    bad = meta.clone()
    bad[3, 5] = 0b0111_0011                # 3 kept in one group
    with pytest.raises(ValueError, match="meta: not a 2:4 mask"):
        to_semi_structured_cutlass(values, bad, ok)
    packed, cmeta = to_semi_structured_cutlass(values, meta, ok)
    with pytest.raises(ValueError, match="packed"):
        from_semi_structured_cutlass(packed[:16], cmeta[:16])
    with pytest.raises(ValueError, match="packed"):
        from_semi_structured_cutlass(packed.float(), cmeta)
    with pytest.raises(ValueError, match="cutlass_meta"):
        from_semi_structured_cutlass(packed, cmeta.to(torch.int32))
    with pytest.raises(ValueError, match="cutlass_meta"):
        from_semi_structured_cutlass(packed, cmeta[:, :1])
    with pytest.raises(ValueError, match="cutlass_meta: invalid"):
        from_semi_structured_cutlass(packed, torch.zeros_like(cmeta))   # lo == hi == 0
    with pytest.raises(ValueError, match="shape"):
        to_sparse_semi_structured(values[:, :16], meta[:, :4], (32, 32))   # K < 64


def test_sparse_semi_structured_tensor_cpu():
    """The torch subclass builds on CPU from our tensors; its to_dense() is the dense weight."""
    w = torch.randn(64, 128, dtype=torch.float16)
    mask = random_24_mask(64, 128)
    dense = torch.where(mask, w, 0.0)
    values, meta = compress(dense, mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)     # PyTorch's "prototype" warning
        t = to_sparse_semi_structured(values, meta, (64, 128))
    assert isinstance(t, torch.sparse.SparseSemiStructuredTensorCUTLASS)
    assert t.shape == (64, 128) and t.dtype == torch.float16
    assert bits_equal(t.to_dense(), dense)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_torch_and_matmul(dtype):
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("PyTorch's CUTLASS 2:4 kernels need sm80+")
    rows, k, n = 128, 256, 64
    w = torch.randn(rows, k).to(dtype)
    mask = random_24_mask(rows, k)
    w[torch.rand(rows, k) < 0.2] = 0.0
    dense = torch.where(mask, w, 0.0).cuda()
    values, meta = compress(dense, mask.cuda())
    packed, cmeta = to_semi_structured_cutlass(values, meta, (rows, k))
    ref_packed, ref_meta = torch_from_dense(dense)
    assert packed.is_cuda and bits_equal(packed, ref_packed) and bits_equal(cmeta, ref_meta)
    back = from_semi_structured_cutlass(packed, cmeta)
    assert bits_equal(decompress(*back, (rows, k))[0], dense)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t = to_sparse_semi_structured(values, meta, (rows, k))
        x = torch.randn(k, n, dtype=dtype, device="cuda")
        out = torch.mm(t, x)
    ref = (dense.double() @ x.double()).to(dtype)
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)


# ---- transposable masks ----

def brute_force_patterns():
    """All 4x4 0/1 tiles with two ones per row and column, sorted lexicographically."""
    found = []
    for ones in itertools.combinations(range(16), 8):
        tile = [0] * 16
        for i in ones:
            tile[i] = 1
        rows_ok = all(sum(tile[4 * r: 4 * r + 4]) == 2 for r in range(4))
        cols_ok = all(sum(tile[c::4]) == 2 for c in range(4))
        if rows_ok and cols_ok:
            found.append(tuple(tile))
    return sorted(found)


def brute_force_mask(w: torch.Tensor) -> torch.Tensor:
    patterns = brute_force_patterns()
    rows, k = w.shape
    a = w.double().abs().tolist()
    mask = torch.zeros(rows, k, dtype=torch.bool)
    for tr in range(0, rows, 4):
        for tc in range(0, k, 4):
            entries = [a[tr + i // 4][tc + i % 4] for i in range(16)]
            best, best_score = None, -math.inf
            for pat in patterns:             # strict '>' keeps the first of equal scores
                score = math.fsum(e for e, keep in zip(entries, pat) if keep)
                if score > best_score:
                    best, best_score = pat, score
            for i in range(16):
                mask[tr + i // 4, tc + i % 4] = bool(best[i])
    return mask


def test_patterns_are_the_90_in_lexicographic_order():
    ours = [tuple(p.flatten().int().tolist()) for p in transposable_patterns()]
    assert len(ours) == 90 and ours == brute_force_patterns()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32,
                                   torch.float64])
@pytest.mark.parametrize("shape", [(4, 4), (8, 12), (16, 8)])
def test_transposable_matches_brute_force(dtype, shape):
    w = torch.randn(shape).to(dtype)
    mask = transposable_mask(w)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert torch.equal(mask, brute_force_mask(w))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_transposable_ties_pick_first_pattern(dtype):
    # small integers: many tiles have several optimal patterns
    w = torch.randint(-2, 3, (16, 16)).to(dtype)
    w[:4, :4] = 0.0                          # every pattern ties: the first one wins
    mask = transposable_mask(w)
    assert torch.equal(mask, brute_force_mask(w))
    assert mask[:4, :4].int().tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]


def test_transposable_is_24_both_ways():
    w = torch.randn(64, 96, requires_grad=True)
    mask = transposable_mask(w)
    assert torch.equal(mask.reshape(64, 24, 4).sum(-1), torch.full((64, 24), 2))
    assert torch.equal(mask.t().reshape(96, 16, 4).sum(-1), torch.full((96, 16), 2))
    assert w.grad is None and not mask.requires_grad
    # the pruned W and W^T are valid spikeops 2:4 weights, convertible to CUTLASS
    wh = torch.where(mask, w.detach(), 0.0).half()
    values, meta = compress(wh, mask)
    assert values.shape == (64, 48)
    values_t, meta_t = compress(wh.t().contiguous(), mask.t().contiguous())
    to_semi_structured_cutlass(values, meta, (64, 96))
    to_semi_structured_cutlass(values_t, meta_t, (96, 64))


def test_transposable_bad_inputs():
    with pytest.raises(ValueError, match="w"):
        transposable_mask(torch.randn(6, 8))
    with pytest.raises(ValueError, match="w"):
        transposable_mask(torch.randn(8, 6))
    with pytest.raises(ValueError, match="w"):
        transposable_mask(torch.randn(4, 4, 4))
    with pytest.raises(ValueError, match="w"):
        transposable_mask(torch.ones(4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="w"):
        transposable_mask(torch.ones(4, 4, dtype=torch.bool))
    bad = torch.randn(8, 8)
    bad[5, 2] = float("nan")
    with pytest.raises(ValueError, match="w"):
        transposable_mask(bad)
    bad[5, 2] = float("inf")
    with pytest.raises(ValueError, match="w"):
        transposable_mask(bad)
    with pytest.raises(TypeError, match="w"):
        transposable_mask([[1.0] * 4] * 4)


@needs_gpu
def test_transposable_cuda_matches_cpu():
    w = torch.randn(64, 128)
    assert torch.equal(transposable_mask(w.cuda()).cpu(), transposable_mask(w))


def test_kept_zero_moves_to_pytorch_position():
    """Group mask [1,1,0,0] holding (0, 5): PyTorch's encoder stores positions (1, 2)."""
    w = torch.zeros(32, 32, dtype=torch.float16)
    mask = random_24_mask(32, 32)
    mask[0, :4] = torch.tensor([True, True, False, False])
    w[0, :4] = torch.tensor([0.0, 5.0, 0.0, 0.0])
    values, meta = compress(w, mask)
    assert values[0, :2].tolist() == [0.0, 5.0] and meta[0, 0] & 0xF == 0b0011
    packed, cmeta = to_semi_structured_cutlass(values, meta, (32, 32))
    assert packed[0, :2].tolist() == [5.0, 0.0]
    values2, meta2 = from_semi_structured_cutlass(packed, cmeta)
    assert values2[0, :2].tolist() == [5.0, 0.0] and meta2[0, 0] & 0xF == 0b0110
    # preserve_mask keeps our positions instead
    packed_p, cmeta_p = to_semi_structured_cutlass(values, meta, (32, 32), preserve_mask=True)
    assert packed_p[0, :2].tolist() == [0.0, 5.0]
    assert from_semi_structured_cutlass(packed_p, cmeta_p)[1][0, 0] & 0xF == 0b0011
