"""Fused multi-head attention in Triton: key padding mask, additive bias (ALiBi), forward and backward.

The algorithm is FlashAttention-2 (Dao, "FlashAttention-2: Faster Attention with Better Parallelism and
Work Partitioning", 2023): each program owns a block of queries and streams blocks of keys and values
through an online softmax, so the (T, T) score matrix is never written to memory. The forward keeps the
row log-sum-exp; the backward recomputes the probabilities from it, with one kernel that owns a block of
keys and accumulates dK, dV (and dBias) over all queries, and one that owns a block of queries and
accumulates dQ over all keys.

Semantics are exactly those of `d2v.kernels.reference.attention`:

- scores are `q k^T / sqrt(Dh) + bias` with the bias cast to the inputs' dtype;
- a padded key (`key_padding_mask` True) gets no weight; its score is *replaced* by a large negative
  constant, so the bias gets no gradient there;
- a row whose keys are all padding attends uniformly to all keys (finite, as the reference gives), and
  its gradient flows into q and k as the reference's does;
- keys past the last real key of a row (right padding) are skipped, which is where padded batches save
  work.

How the pieces work:

- Padding: the (B, T_K) mask is read per key block. Per batch row the launcher computes (on device, no
  sync) the last real key and whether every key is padding; programs stop at the last real key, and a
  row that is all padding gets constant scores (the reference's uniform row) instead of masked ones.
- Bias: any 4-D bias broadcastable to (B, H, T_Q, T_K) is read through its strides (0 on broadcast
  dims), after one copy into the inputs' dtype with 16-element aligned rows (`prepare_bias`). When it
  requires grad (ALiBi's learned scale does), the dK/dV kernel, which visits every (query, key) pair
  exactly once, writes dS (the score gradient, zero at padded keys) into an fp32 buffer shaped like the
  bias over (batch, heads): a plain store when the bias has both, atomic adds when it is broadcast over
  batch or heads; broadcast query/key dims are summed afterwards.
- Tiles: fixed per (dtype, head dim, bias) in `_FWD`, `_BWD_DKDV`, `_BWD_DQ`, the largest that compile
  without register spills for sm_80 and sm_90 (no autotuning: it needs a GPU to benchmark). fp16/bf16
  use tensor cores (mma.sync on sm_80, wgmma on sm_90); fp32 is exact (FMA) unless torch's float32
  matmul precision allows TF32.

Attention dropout is not implemented here: `d2v.kernels.attention` runs the reference when dropout_p > 0.
Only this file and `triton_conv_block.py` import triton; nothing here touches the GPU driver at import.
"""

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = [
    "AttentionFunction",
    "attention",
    "attention_backward",
    "attention_forward",
    "bwd_configs",
    "fwd_config",
    "prepare_bias",
]

LOG2E = 1.4426950408889634
# Inside the kernels a padded key's score is -1e30 (log2 units): finite, so a block of padded keys never
# makes exp2(-inf - -inf), and far below any real score, so it gets exactly zero weight.


# ---------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _scores(
    q,
    k_t,
    Bias,
    bias_base,
    offs_m,
    offs_n,
    m_valid,
    n_valid,
    kpad,
    all_pad,
    stride_bm,
    stride_bn,
    qk_scale,
    HAS_BIAS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Scores of one (BLOCK_M, BLOCK_N) tile in log2 units, masked as the reference masks them."""
    s = tl.dot(q, k_t, input_precision=PRECISION) * qk_scale
    if HAS_BIAS:
        b_ptrs = Bias + bias_base + offs_m[:, None] * stride_bm + offs_n[None, :] * stride_bn
        bias = tl.load(b_ptrs, mask=m_valid[:, None] & n_valid[None, :], other=0.0)
        s += bias.to(tl.float32) * 1.4426950408889634
    if HAS_MASK:
        s = tl.where(kpad[None, :], -1.0e30, s)
        s = tl.where(all_pad, 0.0, s)  # the reference's uniform row: every score the same constant
    return tl.where(n_valid[None, :], s, float("-inf"))


@triton.jit
def _attn_fwd(
    Q,
    K,
    V,
    O,
    Lse,
    Bias,
    Mask,
    Meta,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_ob,
    stride_oh,
    stride_om,
    stride_od,
    stride_bb,
    stride_bh,
    stride_bm,
    stride_bn,
    stride_mb,
    H,
    T_Q,
    T_K,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program: BLOCK_M queries of one (batch, head). Writes O (BLOCK_M, Dh) and the row LSE (log2)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_valid = offs_m < T_Q
    d_valid = offs_d < HEAD_DIM

    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=m_valid[:, None] & d_valid[None, :], other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    bias_base = b * stride_bb + h * stride_bh

    kv_end = T_K
    all_pad = False
    if HAS_MASK:
        kv_end = tl.load(Meta + 2 * b)
        all_pad = tl.load(Meta + 2 * b + 1) != 0

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, kv_end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_valid = offs_n < T_K
        kpad = n_valid
        if HAS_MASK:
            kpad = tl.load(Mask + b * stride_mb + offs_n, mask=n_valid, other=1) != 0
        kv_mask = n_valid[:, None] & d_valid[None, :]
        k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.0)
        s = _scores(q, tl.trans(k), Bias, bias_base, offs_m, offs_n, m_valid, n_valid, kpad, all_pad,
                    stride_bm, stride_bn, qk_scale, HAS_BIAS, HAS_MASK, PRECISION)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new

    acc = acc / l_i[:, None]
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=m_valid[:, None] & d_valid[None, :])
    tl.store(Lse + pid_bh.to(tl.int64) * T_Q + offs_m, m_i + tl.math.log2(l_i), mask=m_valid)


@triton.jit
def _attn_bwd_preprocess(
    O,
    DO,
    Delta,
    stride_ob,
    stride_oh,
    stride_om,
    stride_od,
    stride_dob,
    stride_doh,
    stride_dom,
    stride_dod,
    H,
    T_Q,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Delta = rowsum(dO * O), (BLOCK_M,) per program, in fp32."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < T_Q)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
                mask=mask, other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta + pid_bh.to(tl.int64) * T_Q + offs_m, delta, mask=offs_m < T_Q)


@triton.jit
def _attn_bwd_dkdv(
    Q,
    K,
    V,
    DO,
    DK,
    DV,
    DBias,
    Lse,
    Delta,
    Bias,
    Mask,
    Meta,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_dob,
    stride_doh,
    stride_dom,
    stride_dod,
    stride_dkb,
    stride_dkh,
    stride_dkn,
    stride_dkd,
    stride_dvb,
    stride_dvh,
    stride_dvn,
    stride_dvd,
    stride_bb,
    stride_bh,
    stride_bm,
    stride_bn,
    stride_dbb,
    stride_dbh,
    stride_dbm,
    stride_dbn,
    stride_mb,
    H,
    T_Q,
    T_K,
    sm_scale,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    DBIAS: tl.constexpr,
    DBIAS_ATOMIC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program: BLOCK_N keys of one (batch, head); loops over all queries for dK, dV and dBias.

    Works on transposed tiles (keys on rows) so no register transpose is needed: sT = k q^T.
    """
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    n_valid = offs_n < T_K
    d_valid = offs_d < HEAD_DIM
    kv_mask = n_valid[:, None] & d_valid[None, :]

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    kv_end = T_K
    all_pad = False
    kpad = n_valid
    if HAS_MASK:
        kv_end = tl.load(Meta + 2 * b)
        all_pad = tl.load(Meta + 2 * b + 1) != 0
        kpad = tl.load(Mask + b * stride_mb + offs_n, mask=n_valid, other=1) != 0

    if pid_n * BLOCK_N < kv_end:  # keys past the row's last real key get zero gradient
        k = tl.load(K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=kv_mask, other=0.0)
        v = tl.load(V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=kv_mask, other=0.0)
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_dob + h * stride_doh
        row_base = pid_bh.to(tl.int64) * T_Q
        bias_base = b * stride_bb + h * stride_bh
        dbias_base = b * stride_dbb + h * stride_dbh
        for start_m in range(0, T_Q, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            m_valid = offs_m < T_Q
            qm_mask = m_valid[:, None] & d_valid[None, :]
            q = tl.load(q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd, mask=qm_mask, other=0.0)
            do = tl.load(do_base + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod, mask=qm_mask,
                         other=0.0)
            lse = tl.load(Lse + row_base + offs_m, mask=m_valid, other=0.0)
            delta = tl.load(Delta + row_base + offs_m, mask=m_valid, other=0.0)

            # Transposed scores sT (BLOCK_N, BLOCK_M); the bias tile is read transposed.
            s_t = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale
            if HAS_BIAS:
                b_ptrs = Bias + bias_base + offs_m[None, :] * stride_bm + offs_n[:, None] * stride_bn
                bias = tl.load(b_ptrs, mask=n_valid[:, None] & m_valid[None, :], other=0.0)
                s_t += bias.to(tl.float32) * 1.4426950408889634
            if HAS_MASK:
                s_t = tl.where(kpad[:, None], -1.0e30, s_t)
                s_t = tl.where(all_pad, 0.0, s_t)
            valid = n_valid[:, None] & m_valid[None, :]
            p_t = tl.where(valid, tl.math.exp2(s_t - lse[None, :]), 0.0)
            dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=PRECISION)
            dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)
            ds_t = p_t * (dp_t - delta[None, :])  # dL/dscore, natural units
            dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=PRECISION)
            if DBIAS:
                # The bias was replaced at padded keys, so it gets no gradient there.
                db = ds_t
                if HAS_MASK:
                    db = tl.where(kpad[:, None], 0.0, ds_t)
                db_ptrs = DBias + dbias_base + offs_m[None, :] * stride_dbm + offs_n[:, None] * stride_dbn
                if DBIAS_ATOMIC:
                    tl.atomic_add(db_ptrs, db, mask=valid)
                else:
                    tl.store(db_ptrs, db, mask=valid)

    dk *= sm_scale
    dk_ptrs = DK + b * stride_dkb + h * stride_dkh + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd
    dv_ptrs = DV + b * stride_dvb + h * stride_dvh + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _attn_bwd_dq(
    Q,
    K,
    V,
    DO,
    DQ,
    Lse,
    Delta,
    Bias,
    Mask,
    Meta,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_dob,
    stride_doh,
    stride_dom,
    stride_dod,
    stride_dqb,
    stride_dqh,
    stride_dqm,
    stride_dqd,
    stride_bb,
    stride_bh,
    stride_bm,
    stride_bn,
    stride_mb,
    H,
    T_Q,
    T_K,
    sm_scale,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program: BLOCK_M queries of one (batch, head); loops over the keys for dQ."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_valid = offs_m < T_Q
    d_valid = offs_d < HEAD_DIM
    qm_mask = m_valid[:, None] & d_valid[None, :]
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=qm_mask, other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=qm_mask, other=0.0)
    row_base = pid_bh.to(tl.int64) * T_Q
    lse = tl.load(Lse + row_base + offs_m, mask=m_valid, other=0.0)
    delta = tl.load(Delta + row_base + offs_m, mask=m_valid, other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    bias_base = b * stride_bb + h * stride_bh

    kv_end = T_K
    all_pad = False
    if HAS_MASK:
        kv_end = tl.load(Meta + 2 * b)
        all_pad = tl.load(Meta + 2 * b + 1) != 0

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, kv_end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_valid = offs_n < T_K
        kpad = n_valid
        if HAS_MASK:
            kpad = tl.load(Mask + b * stride_mb + offs_n, mask=n_valid, other=1) != 0
        kv_mask = n_valid[:, None] & d_valid[None, :]
        k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.0)
        s = _scores(q, tl.trans(k), Bias, bias_base, offs_m, offs_n, m_valid, n_valid, kpad, all_pad,
                    stride_bm, stride_bn, qk_scale, HAS_BIAS, HAS_MASK, PRECISION)
        p = tl.where(m_valid[:, None], tl.math.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)

    dq *= sm_scale
    dq_ptrs = DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqm + offs_d[None, :] * stride_dqd
    tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=qm_mask)


# ---------------------------------------------------------------------------------------------------------
# Launch configurations (fixed per dtype and head dim; no autotuning, which needs a GPU to benchmark)
# ---------------------------------------------------------------------------------------------------------


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


# (BLOCK_M, BLOCK_N, num_warps, num_stages) per (fp32?, BLOCK_D, bias?). Chosen as the largest tiles that
# compile without register spills for both sm_80 and sm_90 (tests/kernels/test_aot_compile.py checks
# it): a bias tile costs registers (one address per element), so biased cases use narrower key blocks.
# fp32 uses exact FMA math (no tensor cores), which needs small tiles.
_FWD = {
    (False, 32, True): (128, 64, 8, 3), (False, 64, True): (128, 32, 8, 3), (False, 128, True): (64, 32, 4, 3),
    (False, 32, False): (128, 64, 8, 3), (False, 64, False): (128, 64, 8, 3), (False, 128, False): (128, 64, 8, 3),
    (True, 32, True): (64, 32, 4, 2), (True, 64, True): (32, 16, 4, 1), (True, 128, True): (32, 16, 4, 1),
    (True, 32, False): (64, 32, 4, 2), (True, 64, False): (32, 32, 4, 2), (True, 128, False): (16, 16, 4, 1),
}
# The backward kernels get their own tiles: dK/dV owns BLOCK_N keys and steps BLOCK_M queries, dQ owns
# BLOCK_M queries and steps BLOCK_N keys. In half precision the owned dimension stays 64 so Hopper runs
# every product on wgmma; the stepped one shrinks where a bias tile needs the registers.
_BWD_DKDV = {
    (False, 32, True): (64, 64, 8, 2), (False, 64, True): (32, 64, 8, 1), (False, 128, True): (32, 64, 8, 1),
    (False, 32, False): (64, 64, 8, 2), (False, 64, False): (64, 64, 8, 2), (False, 128, False): (64, 64, 8, 2),
    (True, 32, True): (16, 32, 4, 1), (True, 64, True): (32, 16, 4, 1), (True, 128, True): (16, 16, 8, 1),
    (True, 32, False): (32, 32, 4, 1), (True, 64, False): (32, 16, 4, 1), (True, 128, False): (16, 16, 8, 1),
}
_BWD_DQ = _BWD_DKDV | {(False, 64, True): (64, 32, 4, 1), (False, 128, True): (64, 64, 8, 2)}


# A head dim that is not a power of two (48, 80, 96) is padded to BLOCK_D with masked loads, which cost
# registers: fp32 then takes the smallest tiles everywhere, half precision smaller dK/dV query steps.
_PADDED_FP32_FWD, _PADDED_FP32_BWD = (16, 16, 8, 1), (16, 16, 4, 1)
_PADDED_HALF_DKDV = (32, 64, 8, 1)


def _config(table: dict, dtype: torch.dtype, head_dim: int, has_bias: bool) -> dict[str, int]:
    fp32 = dtype == torch.float32
    bm, bn, warps, stages = table[(fp32, max(32, _block_d(head_dim)), has_bias)]
    if head_dim != _block_d(head_dim):
        if fp32:
            bm, bn, warps, stages = _PADDED_FP32_FWD if table is _FWD else _PADDED_FP32_BWD
        elif table is _BWD_DKDV and bm > _PADDED_HALF_DKDV[0]:
            bm, bn, warps, stages = _PADDED_HALF_DKDV
    return {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages}


def fwd_config(dtype: torch.dtype, head_dim: int, has_bias: bool) -> dict[str, int]:
    """Tile sizes and launch options of the forward kernel."""
    return _config(_FWD, dtype, head_dim, has_bias)


def bwd_configs(dtype: torch.dtype, head_dim: int, has_bias: bool) -> tuple[dict[str, int], dict[str, int]]:
    """Tile sizes and launch options of the dK/dV and the dQ backward kernels."""
    return _config(_BWD_DKDV, dtype, head_dim, has_bias), _config(_BWD_DQ, dtype, head_dim, has_bias)


def _precision(dtype: torch.dtype) -> str:
    """fp32 inputs follow torch's matmul precision setting (exact unless TF32 is allowed)."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def _launch(kernel, grid: tuple[int, ...], *args, num_warps: int, num_stages: int, **constexprs) -> None:
    if args[0].is_cuda:
        with torch.cuda.device(args[0].device):
            kernel[grid](*args, num_warps=num_warps, num_stages=num_stages, **constexprs)
    else:  # TRITON_INTERPRET=1 on CPU tensors
        kernel[grid](*args, **constexprs)


def _mask_meta(key_padding_mask: Tensor | None, ref: Tensor) -> tuple[Tensor, Tensor, int]:
    """The mask as bytes (B, T_K) and per batch row [last real key + 1, all keys padded] (B, 2) int32."""
    if key_padding_mask is None:
        return ref, ref, 0
    mask = key_padding_mask.to(torch.bool).contiguous()
    t_k = mask.shape[1]
    idx = torch.arange(1, t_k + 1, device=mask.device, dtype=torch.int32)
    kv_end = torch.where(mask, 0, idx).amax(1)  # (B,)
    all_pad = kv_end == 0
    kv_end = torch.where(all_pad, t_k, kv_end)
    meta = torch.stack([kv_end, all_pad.to(torch.int32)], 1).to(torch.int32).contiguous()
    return mask.view(torch.uint8), meta, mask.stride(0)


def _bias4(bias: Tensor | None, shape: tuple[int, int, int, int], ref: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    if bias is None:
        return ref, (0, 0, 0, 0)
    return bias, bias.expand(shape).stride()


def attention_forward(
    q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Launch the forward kernel (no autograd).

    Args:
        q: (B, H, T_Q, Dh); k, v: (B, H, T_K, Dh), any strides, one dtype.
        key_padding_mask: (B, T_K) bool, True at padded keys.
        bias: 4-D, broadcastable to (B, H, T_Q, T_K), same dtype as q.

    Returns:
        out (B, H, T_Q, Dh) (a view of a (B, T_Q, H, Dh) buffer, so merging heads is free) and the row
        log-sum-exp in log2 units (B, H, T_Q) fp32.
    """
    B, H, T_Q, D = q.shape
    T_K = k.shape[2]
    if D > 128:
        raise ValueError(f"head dim {D} > 128 is not supported by the Triton attention kernel")
    if k.shape != (B, H, T_K, D) or v.shape != k.shape:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} do not match q {tuple(q.shape)}")
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != (B, T_K):
        raise ValueError(f"key_padding_mask {tuple(key_padding_mask.shape)} is not (B, T_K) = {(B, T_K)}")
    o = torch.empty((B, T_Q, H, D), device=q.device, dtype=q.dtype).transpose(1, 2)  # (B, H, T_Q, Dh)
    lse = torch.empty((B, H, T_Q), device=q.device, dtype=torch.float32)
    mask, meta, stride_mb = _mask_meta(key_padding_mask, q)
    bias_t, sb = _bias4(bias, (B, H, T_Q, T_K), q)
    cfg = fwd_config(q.dtype, D, bias is not None)
    grid = (triton.cdiv(T_Q, cfg["BLOCK_M"]), B * H)
    sm_scale = 1.0 / math.sqrt(D)
    _launch(
        _attn_fwd, grid, q, k, v, o, lse, bias_t, mask, meta,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(), *sb, stride_mb,
        H, T_Q, T_K, sm_scale * LOG2E, HEAD_DIM=D,
        HAS_BIAS=bias is not None, HAS_MASK=key_padding_mask is not None,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_D=_block_d(D), PRECISION=_precision(q.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return o, lse


def attention_backward(
    do: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    lse: Tensor,
    key_padding_mask: Tensor | None,
    bias: Tensor | None,
    bias_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Launch the backward kernels. Returns dq, dk, dv (like q, k, v) and dbias (bias's shape) or None."""
    B, H, T_Q, D = q.shape
    T_K = k.shape[2]
    dq = torch.empty((B, T_Q, H, D), device=q.device, dtype=q.dtype).transpose(1, 2)
    dk = torch.empty((B, T_K, H, D), device=q.device, dtype=k.dtype).transpose(1, 2)
    dv = torch.empty((B, T_K, H, D), device=q.device, dtype=v.dtype).transpose(1, 2)
    delta = torch.empty((B, H, T_Q), device=q.device, dtype=torch.float32)
    mask, meta, stride_mb = _mask_meta(key_padding_mask, q)
    bias_t, sb = _bias4(bias, (B, H, T_Q, T_K), q)
    cfg_kv, cfg_q = bwd_configs(q.dtype, D, bias is not None)
    block_d = _block_d(D)
    sm_scale = 1.0 / math.sqrt(D)
    flags = {"HAS_BIAS": bias is not None, "HAS_MASK": key_padding_mask is not None, "BLOCK_D": block_d,
             "PRECISION": _precision(q.dtype), "HEAD_DIM": D}

    _launch(
        _attn_bwd_preprocess, (triton.cdiv(T_Q, 64), B * H), o, do, delta, *o.stride(), *do.stride(),
        H, T_Q, HEAD_DIM=D, BLOCK_M=64, BLOCK_D=block_d, num_warps=4, num_stages=1,
    )

    dbias = None
    db_buf, sdb, atomic = q, (0, 0, 0, 0), False
    if bias_grad and bias is not None:
        # fp32 (B|1, H|1, T_Q, T_K): a bias broadcast over batch or heads is accumulated with atomics.
        bb, bh = bias.shape[0], bias.shape[1]
        atomic = bb != B or bh != H
        db_buf = torch.zeros((bb, bh, T_Q, T_K), device=q.device, dtype=torch.float32)
        sdb = db_buf.expand(B, H, T_Q, T_K).stride()
    _launch(
        _attn_bwd_dkdv, (triton.cdiv(T_K, cfg_kv["BLOCK_N"]), B * H),
        q, k, v, do, dk, dv, db_buf, lse, delta, bias_t, mask, meta,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(), *sb, *sdb,
        stride_mb, H, T_Q, T_K, sm_scale, sm_scale * LOG2E, DBIAS=db_buf is not q, DBIAS_ATOMIC=atomic, **flags,
        **cfg_kv,
    )
    _launch(
        _attn_bwd_dq, (triton.cdiv(T_Q, cfg_q["BLOCK_M"]), B * H),
        q, k, v, do, dq, lse, delta, bias_t, mask, meta,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(), *sb, stride_mb,
        H, T_Q, T_K, sm_scale, sm_scale * LOG2E, **flags, **cfg_q,
    )
    if db_buf is not q:
        # Reduce over the query/key dims the bias broadcasts along.
        dims = [d for d in (2, 3) if bias.shape[d] == 1]
        dbias = (db_buf.sum(dims, keepdim=True) if dims else db_buf).to(bias.dtype)
    return dq, dk, dv, dbias


class AttentionFunction(torch.autograd.Function):
    """Autograd wrapper: forward saves the row LSE, backward recomputes the probabilities from it."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, bias: Tensor | None):
        o, lse = attention_forward(q, k, v, key_padding_mask, bias)
        ctx.save_for_backward(q, k, v, o, lse, key_padding_mask, bias)
        return o

    @staticmethod
    def backward(ctx, do: Tensor):
        q, k, v, o, lse, key_padding_mask, bias = ctx.saved_tensors
        dq, dk, dv, dbias = attention_backward(
            do, q, k, v, o, lse, key_padding_mask, bias, bias_grad=ctx.needs_input_grad[4]
        )
        return dq, dk, dv, None, dbias


def prepare_bias(bias: Tensor, dtype: torch.dtype) -> Tensor:
    """The bias as the kernels read it (differentiably): 4-D, in the inputs' dtype (rounded exactly as
    the reference's `bias.to(q.dtype)`), with rows 16-element aligned when it varies along both query
    and key, so the kernels' bias loads vectorize (fewer registers, no spills).

    Args:
        bias: broadcastable to (B, H, T_Q, T_K).

    Returns:
        (B|1, H|1, T_Q|1, T_K|1).
    """
    bias = bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))
    t_q, t_k = bias.shape[-2:]
    if t_q > 1 and t_k > 1 and (bias.dtype != dtype or bias.stride(-1) != 1 or bias.stride(-2) % 16):
        # One copy (which the dtype cast makes anyway) into a row-padded buffer; copy_ is differentiable.
        buf = torch.empty((*bias.shape[:-1], triton.cdiv(t_k, 16) * 16), device=bias.device, dtype=dtype)
        return buf[..., :t_k].copy_(bias)
    return bias.to(dtype)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    """Fused attention with the reference's semantics (no dropout).

    Args:
        q: (B, H, T_Q, Dh); k, v: (B, H, T_K, Dh); Dh <= 128. Under autocast they are cast to its dtype.
        key_padding_mask: (B, T_K) bool, True at padded keys.
        bias: additive bias broadcastable to (B, H, T_Q, T_K); cast to q's dtype like the reference. Its
            gradient is computed by the backward kernel when it requires grad (ALiBi's learned scale).

    Returns:
        (B, H, T_Q, Dh).
    """
    dev = q.device.type
    if torch.is_autocast_enabled(dev):
        dtype = torch.get_autocast_dtype(dev)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    if bias is not None:
        bias = prepare_bias(bias, q.dtype)
    return AttentionFunction.apply(q, k, v, key_padding_mask, bias)
