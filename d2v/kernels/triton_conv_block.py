"""The data2vec 2.0 conv-decoder layer as one Triton kernel, forward and backward.

    out = GELU(LayerNorm_C(conv(x0, w) + b)) [+ x0],   x0 = x with padded positions zeroed

for a grouped or depthwise Conv1d over time ((B, C, T), kernel 7 or 9 in the decoders) or a Conv2d on
the image patch grid ((B, C, H, W), 3x3), "same" padding (trimmed by one for even kernels), LayerNorm
over channels without affine, exact-erf GELU. Semantics are exactly `d2v.kernels.reference.conv_block`.

The grouped and depthwise layers (image, audio) are memory-bound, so the win is passing over the
activations once instead of about ten times (eager: masked_fill, conv, LayerNorm, GELU, add); text's
dense k=9 conv (groups=1) is compute-bound, and there fusion saves only the elementwise passes.
One program owns a block of positions of one sample and walks every channel tile twice: the first walk
computes the convolution (an implicit GEMM on tensor cores when each group has at least 16 input and
output channels, FMA otherwise, e.g. depthwise), adds the bias, writes the pre-norm y and accumulates
the per-position channel sums of y and y^2 in fp32 (over y as stored, so the statistics match what is
re-read); after a block barrier, the second walk re-reads its own y tiles (still in
L2), normalizes, applies GELU and the residual and writes the output. y is kept for the backward
(the reference's autograd keeps it too).

Backward (three kernels): (1) per position, the LayerNorm + GELU backward gives dy; (2) dx is the
transposed convolution of dy (the forward's conv code with the weight flipped and transposed within
each group), plus the residual gradient, zeroed at padded positions; (3) dw and db are reduced over
batch and positions in a few deterministic splits, summed in PyTorch.

The tiling is the implicit-GEMM convolution of cuDNN (Chetlur et al., "cuDNN: Efficient Primitives for
Deep Learning", 2014) fused with a LayerNorm epilogue, in the spirit of FlashAttention-2 (Dao 2023):
keep the intermediate on chip or in cache, never round-trip it through HBM more than once.
"""

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["ConvBlockFunction", "conv_block", "conv_block_forward", "conv_config"]


# ---------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _gelu(n):
    return 0.5 * n * (1.0 + tl.math.erf(n * 0.7071067811865476))


@triton.jit
def _gelu_grad(n):
    cdf = 0.5 * (1.0 + tl.math.erf(n * 0.7071067811865476))
    pdf = tl.math.exp(-0.5 * n * n) * 0.3989422804014327
    return cdf + n * pdf


@triton.jit
def _tile_channels(t, C_OUT: tl.constexpr, COUT_PG: tl.constexpr, BLOCK_CO: tl.constexpr, USE_DOT: tl.constexpr):
    """Output channels of channel tile t: within one group on the GEMM path, contiguous otherwise."""
    if USE_DOT:
        tiles_pg: tl.constexpr = (COUT_PG + BLOCK_CO - 1) // BLOCK_CO
        local = (t % tiles_pg) * BLOCK_CO + tl.arange(0, BLOCK_CO)
        co = (t // tiles_pg) * COUT_PG + local
        co_valid = local < COUT_PG
    else:
        co = t * BLOCK_CO + tl.arange(0, BLOCK_CO)
        co_valid = co < C_OUT
    return co, co_valid


@triton.jit
def _source(hh, ww, p_valid, kh, kw, Mask_b, stride_mh, stride_mw, H, W,
            OFF_H: tl.constexpr, OFF_W: tl.constexpr, HAS_MASK: tl.constexpr):
    """For tap (kh, kw): the source row/column of every output position and whether it is a real,
    in-range, unpadded position (zero padding of the conv and of padded positions alike)."""
    hs = hh + (kh - OFF_H)
    ws = ww + (kw - OFF_W)
    valid = p_valid & (hs >= 0) & (hs < H) & (ws >= 0) & (ws < W)
    if HAS_MASK:
        pad = tl.load(Mask_b + hs * stride_mh + ws * stride_mw, mask=valid, other=1)
        valid = valid & (pad == 0)
    return hs, ws, valid


@triton.jit
def _conv_tap(
    acc,
    X_b,
    Wt,
    Mask_b,
    t,
    kh,
    kw,
    co,
    co_valid,
    hh,
    ww,
    p_valid,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_wo,
    stride_wi,
    stride_wh,
    stride_ww,
    stride_mh,
    stride_mw,
    H,
    W,
    CIN_PG: tl.constexpr,
    COUT_PG: tl.constexpr,
    OFF_H: tl.constexpr,
    OFF_W: tl.constexpr,
    HAS_MASK: tl.constexpr,
    USE_DOT: tl.constexpr,
    BLOCK_CO: tl.constexpr,
    BLOCK_CI: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """acc (BLOCK_CO, BLOCK_P) += the contribution of tap (kh, kw)."""
    hs, ws, src_valid = _source(hh, ww, p_valid, kh, kw, Mask_b, stride_mh, stride_mw, H, W,
                                OFF_H, OFF_W, HAS_MASK)
    src = hs * stride_xh + ws * stride_xw
    w_tap = Wt + kh * stride_wh + kw * stride_ww
    if USE_DOT:
        # Implicit GEMM: (BLOCK_CO, BLOCK_CI) weights @ (BLOCK_CI, BLOCK_P) shifted inputs.
        ci_base = (t // ((COUT_PG + BLOCK_CO - 1) // BLOCK_CO)) * CIN_PG
        for ci0 in range(0, CIN_PG, BLOCK_CI):
            ci = ci0 + tl.arange(0, BLOCK_CI)
            ci_valid = ci < CIN_PG
            x = tl.load(X_b + (ci_base + ci)[:, None] * stride_xc + src[None, :],
                        mask=ci_valid[:, None] & src_valid[None, :], other=0.0)
            w = tl.load(w_tap + co[:, None] * stride_wo + ci[None, :] * stride_wi,
                        mask=co_valid[:, None] & ci_valid[None, :], other=0.0)
            acc = tl.dot(w, x, acc, input_precision=PRECISION)
    else:
        # FMA: each output channel reads its own group's inputs (depthwise: its own channel).
        ci_base = (co // COUT_PG) * CIN_PG
        for ci in range(CIN_PG):
            x = tl.load(X_b + (ci_base + ci)[:, None] * stride_xc + src[None, :],
                        mask=co_valid[:, None] & src_valid[None, :], other=0.0)
            w = tl.load(w_tap + co * stride_wo + ci * stride_wi, mask=co_valid, other=0.0)
            acc += w.to(tl.float32)[:, None] * x.to(tl.float32)
    return acc


@triton.jit
def _conv_tile(
    X_b,
    Wt,
    Mask_b,
    t,
    hh,
    ww,
    p_valid,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_wo,
    stride_wi,
    stride_wh,
    stride_ww,
    stride_mh,
    stride_mw,
    H,
    W,
    C_OUT: tl.constexpr,
    CIN_PG: tl.constexpr,
    COUT_PG: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    OFF_H: tl.constexpr,
    OFF_W: tl.constexpr,
    HAS_MASK: tl.constexpr,
    USE_DOT: tl.constexpr,
    BLOCK_CO: tl.constexpr,
    BLOCK_CI: tl.constexpr,
    BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Grouped convolution of one (BLOCK_CO channels, BLOCK_P positions) output tile, fp32, no bias.

    Up to 9 taps (k7, k9, 3x3) are unrolled; more (5x5) run in a loop, as unrolling them spills.
    """
    co, co_valid = _tile_channels(t, C_OUT, COUT_PG, BLOCK_CO, USE_DOT)
    acc = tl.zeros([BLOCK_CO, BLOCK_P], dtype=tl.float32)
    if KH * KW <= 9:
        for kh in tl.static_range(KH):
            for kw in tl.static_range(KW):
                acc = _conv_tap(acc, X_b, Wt, Mask_b, t, kh, kw, co, co_valid, hh, ww, p_valid, stride_xc,
                                stride_xh, stride_xw, stride_wo, stride_wi, stride_wh, stride_ww, stride_mh,
                                stride_mw, H, W, CIN_PG, COUT_PG, OFF_H, OFF_W, HAS_MASK, USE_DOT, BLOCK_CO,
                                BLOCK_CI, PRECISION)
    else:
        for kh in range(KH):
            for kw in range(KW):
                acc = _conv_tap(acc, X_b, Wt, Mask_b, t, kh, kw, co, co_valid, hh, ww, p_valid, stride_xc,
                                stride_xh, stride_xw, stride_wo, stride_wi, stride_wh, stride_ww, stride_mh,
                                stride_mw, H, W, CIN_PG, COUT_PG, OFF_H, OFF_W, HAS_MASK, USE_DOT, BLOCK_CO,
                                BLOCK_CI, PRECISION)
    return acc, co, co_valid


@triton.jit
def _conv_block_fwd(
    X,
    Wt,
    Bias,
    Mask,
    Y,
    Out,
    Mean,
    Rstd,
    stride_xb,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_wo,
    stride_wi,
    stride_wh,
    stride_ww,
    stride_mb,
    stride_mh,
    stride_mw,
    H,
    W,
    eps,
    C_OUT: tl.constexpr,
    CIN_PG: tl.constexpr,
    COUT_PG: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    OFF_H: tl.constexpr,
    OFF_W: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    RESIDUAL: tl.constexpr,
    USE_DOT: tl.constexpr,
    BLOCK_CO: tl.constexpr,
    BLOCK_CI: tl.constexpr,
    BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program: BLOCK_P positions of one sample, all output channels. Y, Out: (B, C_OUT, H*W)."""
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    P = H * W
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_valid = p < P
    hh = p // W
    ww = p % W
    X_b = X + b * stride_xb
    Mask_b = Mask + b * stride_mb
    Y_b = Y + b * C_OUT * P
    Out_b = Out + b * C_OUT * P
    if USE_DOT:
        num_tiles: tl.constexpr = (C_OUT // COUT_PG) * ((COUT_PG + BLOCK_CO - 1) // BLOCK_CO)
    else:
        num_tiles: tl.constexpr = (C_OUT + BLOCK_CO - 1) // BLOCK_CO

    # Walk 1: conv + bias -> y, and the channel sums of y as stored (so stats match the y re-read below).
    s1 = tl.zeros([BLOCK_P], dtype=tl.float32)
    s2 = tl.zeros([BLOCK_P], dtype=tl.float32)
    for t in range(num_tiles):
        acc, co, co_valid = _conv_tile(
            X_b, Wt, Mask_b, t, hh, ww, p_valid, stride_xc, stride_xh, stride_xw, stride_wo, stride_wi,
            stride_wh, stride_ww, stride_mh, stride_mw, H, W, C_OUT, CIN_PG, COUT_PG, KH, KW, OFF_H, OFF_W,
            HAS_MASK, USE_DOT, BLOCK_CO, BLOCK_CI, BLOCK_P, PRECISION,
        )
        if HAS_BIAS:
            acc += tl.load(Bias + co, mask=co_valid, other=0.0).to(tl.float32)[:, None]
        valid = co_valid[:, None] & p_valid[None, :]
        y = acc.to(Y.dtype.element_ty)
        tl.store(Y_b + co[:, None] * P + p[None, :], y, mask=valid)
        yf = tl.where(valid, y.to(tl.float32), 0.0)
        s1 += tl.sum(yf, 0)
        s2 += tl.sum(yf * yf, 0)
    mean = s1 / C_OUT
    var = tl.maximum(s2 / C_OUT - mean * mean, 0.0)
    rstd = 1.0 / tl.sqrt(var + eps)
    tl.store(Mean + b * P + p, mean, mask=p_valid)
    tl.store(Rstd + b * P + p, rstd, mask=p_valid)
    tl.debug_barrier()  # this program's y stores are visible to all its threads

    # Walk 2: normalize, GELU, residual (the zeroed input), over plain channel tiles.
    keep = p_valid
    if HAS_MASK and RESIDUAL:
        keep = p_valid & (tl.load(Mask_b + hh * stride_mh + ww * stride_mw, mask=p_valid, other=1) == 0)
    for t in range((C_OUT + BLOCK_CO - 1) // BLOCK_CO):
        co = t * BLOCK_CO + tl.arange(0, BLOCK_CO)
        valid = (co < C_OUT)[:, None] & p_valid[None, :]
        y = tl.load(Y_b + co[:, None] * P + p[None, :], mask=valid, other=0.0).to(tl.float32)
        out = _gelu((y - mean[None, :]) * rstd[None, :])
        if RESIDUAL:
            x0 = tl.load(X_b + co[:, None] * stride_xc + (hh * stride_xh + ww * stride_xw)[None, :],
                         mask=(co < C_OUT)[:, None] & keep[None, :], other=0.0)
            out += x0.to(tl.float32)
        tl.store(Out_b + co[:, None] * P + p[None, :], out.to(Out.dtype.element_ty), mask=valid)


@triton.jit
def _conv_block_bwd_dy(
    Y,
    DOut,
    Mean,
    Rstd,
    DY,
    P,
    C_OUT: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """dy = LayerNorm backward of (GELU backward of dOut), per position over channels; all (B, C_OUT, P)."""
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_valid = p < P
    base = b * C_OUT * P
    mean = tl.load(Mean + b * P + p, mask=p_valid, other=0.0)
    rstd = tl.load(Rstd + b * P + p, mask=p_valid, other=0.0)
    s1 = tl.zeros([BLOCK_P], dtype=tl.float32)
    s2 = tl.zeros([BLOCK_P], dtype=tl.float32)
    for t in range((C_OUT + BLOCK_C - 1) // BLOCK_C):
        c = t * BLOCK_C + tl.arange(0, BLOCK_C)
        valid = (c < C_OUT)[:, None] & p_valid[None, :]
        offs = base + c[:, None] * P + p[None, :]
        n = (tl.load(Y + offs, mask=valid, other=0.0).to(tl.float32) - mean[None, :]) * rstd[None, :]
        dn = tl.load(DOut + offs, mask=valid, other=0.0).to(tl.float32) * _gelu_grad(n)
        dn = tl.where(valid, dn, 0.0)
        s1 += tl.sum(dn, 0)
        s2 += tl.sum(dn * n, 0)
    c1 = s1 / C_OUT
    c2 = s2 / C_OUT
    for t in range((C_OUT + BLOCK_C - 1) // BLOCK_C):
        c = t * BLOCK_C + tl.arange(0, BLOCK_C)
        valid = (c < C_OUT)[:, None] & p_valid[None, :]
        offs = base + c[:, None] * P + p[None, :]
        n = (tl.load(Y + offs, mask=valid, other=0.0).to(tl.float32) - mean[None, :]) * rstd[None, :]
        dn = tl.load(DOut + offs, mask=valid, other=0.0).to(tl.float32) * _gelu_grad(n)
        dy = rstd[None, :] * (dn - c1[None, :] - n * c2[None, :])
        tl.store(DY + offs, dy.to(DY.dtype.element_ty), mask=valid)


@triton.jit
def _conv_block_bwd_dx(
    DY,
    WtT,
    DOut,
    Mask,
    DX,
    stride_wo,
    stride_wi,
    stride_wh,
    stride_ww,
    stride_mb,
    stride_mh,
    stride_mw,
    H,
    W,
    C_OUT: tl.constexpr,
    C_IN: tl.constexpr,
    CIN_PG: tl.constexpr,
    COUT_PG: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    OFF_H: tl.constexpr,
    OFF_W: tl.constexpr,
    HAS_MASK: tl.constexpr,
    RESIDUAL: tl.constexpr,
    USE_DOT: tl.constexpr,
    BLOCK_CO: tl.constexpr,
    BLOCK_CI: tl.constexpr,
    BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dx = transposed conv of dy (+ dOut for the residual), zero at padded positions.

    WtT is the forward weight transposed and flipped within each group, so this is a forward conv with
    C_OUT -> C_IN channels; here CIN_PG / COUT_PG are the forward's COUT_PG / CIN_PG. All (B, C, H*W).
    """
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    t = tl.program_id(2)
    P = H * W
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_valid = p < P
    hh = p // W
    ww = p % W
    Mask_b = Mask + b * stride_mb
    acc, ci, ci_valid = _conv_tile(
        DY + b * C_OUT * P, WtT, Mask_b, t, hh, ww, p_valid, P, W, 1, stride_wo, stride_wi, stride_wh,
        stride_ww, stride_mh, stride_mw, H, W, C_IN, CIN_PG, COUT_PG, KH, KW, OFF_H, OFF_W,
        False, USE_DOT, BLOCK_CO, BLOCK_CI, BLOCK_P, PRECISION,
    )
    offs = b * C_IN * P + ci[:, None] * P + p[None, :]
    valid = ci_valid[:, None] & p_valid[None, :]
    if RESIDUAL:
        acc += tl.load(DOut + offs, mask=valid, other=0.0).to(tl.float32)
    if HAS_MASK:
        pad = tl.load(Mask_b + hh * stride_mh + ww * stride_mw, mask=p_valid, other=1)
        acc = tl.where(pad[None, :] != 0, 0.0, acc)
    tl.store(DX + offs, acc.to(DX.dtype.element_ty), mask=valid)


@triton.jit
def _conv_block_bwd_dw(
    X,
    DY,
    Mask,
    DW,
    DB,
    stride_xb,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_mb,
    stride_mh,
    stride_mw,
    B,
    H,
    W,
    NSPLIT,
    C_OUT: tl.constexpr,
    CIN_PG: tl.constexpr,
    COUT_PG: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    OFF_H: tl.constexpr,
    OFF_W: tl.constexpr,
    HAS_MASK: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    USE_DOT: tl.constexpr,
    BLOCK_CO: tl.constexpr,
    BLOCK_CI: tl.constexpr,
    BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Partial dw (NSPLIT, C_OUT, CIN_PG, KH, KW) and db (NSPLIT, C_OUT), fp32.

    Program (i, s): one (channel tile, tap, input-channel chunk) accumulator, reduced over split s of
    the (sample, position block) pairs: dw[co, ci, tap] = sum dy[co, p] * x0[ci, p + tap - off].
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    if USE_DOT:
        n_cc: tl.constexpr = (CIN_PG + BLOCK_CI - 1) // BLOCK_CI
    else:
        n_cc: tl.constexpr = CIN_PG
    cc = pid % n_cc
    tap = (pid // n_cc) % (KH * KW)
    t = pid // (n_cc * KH * KW)
    kh = tap // KW
    kw = tap % KW
    co, co_valid = _tile_channels(t, C_OUT, COUT_PG, BLOCK_CO, USE_DOT)
    if USE_DOT:
        ci = cc * BLOCK_CI + tl.arange(0, BLOCK_CI)
        ci_valid = ci < CIN_PG
        ch = (t // ((COUT_PG + BLOCK_CO - 1) // BLOCK_CO)) * CIN_PG + ci  # (BLOCK_CI,) input channels
        acc = tl.zeros([BLOCK_CO, BLOCK_CI], dtype=tl.float32)
    else:
        ch = (co // COUT_PG) * CIN_PG + cc  # (BLOCK_CO,) one input channel per output channel
        acc = tl.zeros([BLOCK_CO], dtype=tl.float32)
    db = tl.zeros([BLOCK_CO], dtype=tl.float32)

    P = H * W
    n_pb = tl.cdiv(P, BLOCK_P)
    for it in range(split, B * n_pb, NSPLIT):
        b = (it // n_pb).to(tl.int64)
        p = (it % n_pb) * BLOCK_P + tl.arange(0, BLOCK_P)
        p_valid = p < P
        hh = p // W
        ww = p % W
        dy = tl.load(DY + b * C_OUT * P + co[:, None] * P + p[None, :],
                     mask=co_valid[:, None] & p_valid[None, :], other=0.0)
        hs, ws, src_valid = _source(hh, ww, p_valid, kh, kw, Mask + b * stride_mb, stride_mh, stride_mw, H, W,
                                    OFF_H, OFF_W, HAS_MASK)
        src = X + b * stride_xb + hs * stride_xh + ws * stride_xw
        if USE_DOT:
            x = tl.load(src[:, None] + ch[None, :] * stride_xc, mask=src_valid[:, None] & ci_valid[None, :],
                        other=0.0)  # (BLOCK_P, BLOCK_CI)
            acc = tl.dot(dy, x, acc, input_precision=PRECISION)
        else:
            x = tl.load(src[None, :] + ch[:, None] * stride_xc, mask=co_valid[:, None] & src_valid[None, :],
                        other=0.0)  # (BLOCK_CO, BLOCK_P)
            acc += tl.sum(dy.to(tl.float32) * x.to(tl.float32), 1)
        if HAS_BIAS:
            db += tl.sum(dy.to(tl.float32), 1)

    dw_base = DW + split.to(tl.int64) * C_OUT * CIN_PG * KH * KW + kh * KW + kw
    if USE_DOT:
        tl.store(dw_base + (co[:, None] * CIN_PG + ci[None, :]) * (KH * KW), acc,
                 mask=co_valid[:, None] & ci_valid[None, :])
    else:
        tl.store(dw_base + (co * CIN_PG + cc) * (KH * KW), acc, mask=co_valid)
    if HAS_BIAS:  # noqa: SIM102  (a compile-time branch around a run-time one)
        if (tap == 0) & (cc == 0):  # db once per channel tile: by its first (tap, channel chunk) program
            tl.store(DB + split.to(tl.int64) * C_OUT + co, db, mask=co_valid)


# ---------------------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------------------


def _largest_pow2_divisor(n: int, cap: int) -> int:
    d = 1
    while d * 2 <= cap and n % (d * 2) == 0:
        d *= 2
    return d


def conv_config(cin_pg: int, cout_pg: int, dtype: torch.dtype, two_d: bool = False) -> dict[str, int | bool]:
    """Tile sizes of the conv kernels for a conv with cin_pg -> cout_pg channels per group.

    The GEMM (tensor-core) path needs at least 16 channels per group on both sides; its channel tiles
    divide the group when a power of two >= 16 does (48 -> 16, 768 -> 64), else pad to a power of two.
    All configurations compile without register spills for sm_80 and sm_90 (test_aot_compile.py); the
    exact-fp32 ones were picked by compiling candidates, which is why they depend on 1-D vs 2-D.
    """
    use_dot = cin_pg >= 16 and cout_pg >= 16

    def block(n: int, cap: int) -> int:
        d = _largest_pow2_divisor(n, cap)
        return d if d >= 16 else min(cap, triton.next_power_of_2(n))

    if use_dot:
        # Exact fp32 (FMA, no tensor cores) needs smaller channel tiles to stay clear of register spills.
        if dtype == torch.float32:
            return {"USE_DOT": True, "BLOCK_CO": block(cout_pg, 32), "BLOCK_CI": block(cin_pg, 16),
                    "BLOCK_P": 32 if two_d else 64, "num_warps": 4, "num_stages": 1}
        return {"USE_DOT": True, "BLOCK_CO": block(cout_pg, 64), "BLOCK_CI": block(cin_pg, 32),
                "BLOCK_P": 64, "num_warps": 4, "num_stages": 2}
    return {"USE_DOT": False, "BLOCK_CO": 32, "BLOCK_CI": 16, "BLOCK_P": 64 if dtype == torch.float32 else 32,
            "num_warps": 4, "num_stages": 1}


def _precision(dtype: torch.dtype) -> str:
    """fp32 is always exact here (its tile sizes are chosen for FMA math); half types ignore this."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _launch(kernel, grid: tuple[int, ...], *args, num_warps: int, num_stages: int, **constexprs) -> None:
    if args[0].is_cuda:
        with torch.cuda.device(args[0].device):
            kernel[grid](*args, num_warps=num_warps, num_stages=num_stages, **constexprs)
    else:  # TRITON_INTERPRET=1 on CPU tensors
        kernel[grid](*args, **constexprs)


def _as_2d(x: Tensor, weight: Tensor, padding_mask: Tensor | None):
    """View 1-D convs as 2-D with H = 1: x (B, C, H, W), weight (C_out, C/g, KH, KW), mask (B, H, W)."""
    if weight.dim() == 3:
        x, weight = x.unsqueeze(2), weight.unsqueeze(2)
        if padding_mask is not None:
            padding_mask = padding_mask.unsqueeze(1)
    return x, weight, padding_mask


def _mask_args(padding_mask: Tensor | None, ref: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
    if padding_mask is None:
        return ref, (0, 0, 0)
    mask = padding_mask.to(torch.bool).contiguous().view(torch.uint8)  # (B, H, W)
    return mask, mask.stride()


def conv_block_forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    padding_mask: Tensor | None,
    groups: int,
    residual: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Launch the forward kernel (no autograd).

    Args:
        x: (B, C, H, W); weight: (C_out, C/groups, KH, KW); bias: (C_out,) or None; padding_mask:
            (B, H, W) bool or None; all tensors of one dtype.

    Returns:
        out (B, C_out, H, W), the pre-norm conv output y (B, C_out, H, W) and its per-position mean and
        rstd (B, H*W) fp32.
    """
    B, _, H, W = x.shape
    c_out, cin_pg, KH, KW = weight.shape
    cout_pg = c_out // groups
    P = H * W
    y = torch.empty((B, c_out, H, W), device=x.device, dtype=x.dtype)
    out = torch.empty_like(y)
    mean = torch.empty((B, P), device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    mask, sm = _mask_args(padding_mask, x)
    cfg = conv_config(cin_pg, cout_pg, x.dtype, KH > 1)
    _launch(
        _conv_block_fwd, (triton.cdiv(P, cfg["BLOCK_P"]), B),
        x, weight, bias if bias is not None else x, mask, y, out, mean, rstd,
        *x.stride(), *weight.stride(), *sm, H, W, eps,
        C_OUT=c_out, CIN_PG=cin_pg, COUT_PG=cout_pg, KH=KH, KW=KW, OFF_H=KH // 2, OFF_W=KW // 2,
        HAS_BIAS=bias is not None, HAS_MASK=padding_mask is not None, RESIDUAL=residual,
        USE_DOT=cfg["USE_DOT"], BLOCK_CO=cfg["BLOCK_CO"], BLOCK_CI=cfg["BLOCK_CI"], BLOCK_P=cfg["BLOCK_P"],
        PRECISION=_precision(x.dtype), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out, y, mean, rstd


def _dw_splits(x: Tensor, programs: int, work: int) -> int:
    """How many ways to split the batch x positions reduction of dw: about 4 programs per SM."""
    target = 4 * torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 2
    return max(1, min(work, triton.cdiv(target, programs)))


def conv_block_backward(
    dout: Tensor,
    x: Tensor,
    weight: Tensor,
    bias_grad: bool,
    padding_mask: Tensor | None,
    y: Tensor,
    mean: Tensor,
    rstd: Tensor,
    groups: int,
    residual: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Launch the three backward kernels (2-D views as in `conv_block_forward`). Returns dx, dw, db."""
    B, C, H, W = x.shape
    c_out, cin_pg, KH, KW = weight.shape
    cout_pg = c_out // groups
    P = H * W
    dout = dout.contiguous()
    mask, sm = _mask_args(padding_mask, x)
    precision = _precision(x.dtype)

    dy = torch.empty_like(y)
    _launch(_conv_block_bwd_dy, (triton.cdiv(P, 64), B), y, dout, mean, rstd, dy, P,
            C_OUT=c_out, BLOCK_C=32, BLOCK_P=64, num_warps=4, num_stages=1)

    # dx: a forward conv C_out -> C with the weight transposed and flipped within each group.
    w_t = weight.reshape(groups, cout_pg, cin_pg, KH, KW).transpose(1, 2).flip(-1, -2)
    w_t = w_t.reshape(C, cout_pg, KH, KW).contiguous()
    cfg = conv_config(cout_pg, cin_pg, x.dtype, KH > 1)
    tiles = groups * triton.cdiv(cin_pg, cfg["BLOCK_CO"]) if cfg["USE_DOT"] else triton.cdiv(C, cfg["BLOCK_CO"])
    dx = torch.empty((B, C, H, W), device=x.device, dtype=x.dtype)
    _launch(
        _conv_block_bwd_dx, (triton.cdiv(P, cfg["BLOCK_P"]), B, tiles),
        dy, w_t, dout, mask, dx, *w_t.stride(), *sm, H, W,
        C_OUT=c_out, C_IN=C, CIN_PG=cout_pg, COUT_PG=cin_pg, KH=KH, KW=KW,
        OFF_H=KH - 1 - KH // 2, OFF_W=KW - 1 - KW // 2, HAS_MASK=padding_mask is not None, RESIDUAL=residual,
        USE_DOT=cfg["USE_DOT"], BLOCK_CO=cfg["BLOCK_CO"], BLOCK_CI=cfg["BLOCK_CI"], BLOCK_P=cfg["BLOCK_P"],
        PRECISION=precision, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )

    cfg = conv_config(cin_pg, cout_pg, x.dtype, KH > 1)
    if cfg["USE_DOT"]:  # the dw accumulator is per tap: 32-channel tiles keep it clear of spills
        cfg["BLOCK_CO"] = min(cfg["BLOCK_CO"], 32)
        programs = groups * triton.cdiv(cout_pg, cfg["BLOCK_CO"]) * KH * KW * triton.cdiv(cin_pg, cfg["BLOCK_CI"])
    else:
        programs = triton.cdiv(c_out, cfg["BLOCK_CO"]) * KH * KW * cin_pg
    nsplit = _dw_splits(x, programs, B * triton.cdiv(P, cfg["BLOCK_P"]))
    dw_part = torch.empty((nsplit, c_out, cin_pg, KH, KW), device=x.device, dtype=torch.float32)
    db_part = torch.empty((nsplit, c_out), device=x.device, dtype=torch.float32)
    _launch(
        _conv_block_bwd_dw, (programs, nsplit),
        x, dy, mask, dw_part, db_part, *x.stride(), *sm, B, H, W, nsplit,
        C_OUT=c_out, CIN_PG=cin_pg, COUT_PG=cout_pg, KH=KH, KW=KW, OFF_H=KH // 2, OFF_W=KW // 2,
        HAS_MASK=padding_mask is not None, HAS_BIAS=bias_grad,
        USE_DOT=cfg["USE_DOT"], BLOCK_CO=cfg["BLOCK_CO"], BLOCK_CI=cfg["BLOCK_CI"], BLOCK_P=cfg["BLOCK_P"],
        PRECISION=precision, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    dw = dw_part.sum(0).to(weight.dtype)
    db = db_part.sum(0).to(weight.dtype) if bias_grad else None
    return dx, dw, db


class ConvBlockFunction(torch.autograd.Function):
    """Autograd wrapper over 2-D views: x (B, C, H, W), weight (C_out, C/groups, KH, KW)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding_mask: Tensor | None, groups: int,
                residual: bool, eps: float) -> Tensor:
        out, y, mean, rstd = conv_block_forward(x, weight, bias, padding_mask, groups, residual, eps)
        ctx.save_for_backward(x, weight, padding_mask, y, mean, rstd)
        ctx.groups, ctx.residual = groups, residual
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        x, weight, padding_mask, y, mean, rstd = ctx.saved_tensors
        dx, dw, db = conv_block_backward(
            dout, x, weight, ctx.needs_input_grad[2], padding_mask, y, mean, rstd, ctx.groups, ctx.residual
        )
        return dx, dw, db, None, None, None, None


def conv_block(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    padding_mask: Tensor | None = None,
    groups: int = 1,
    residual: bool = False,
    eps: float = 1e-5,
) -> Tensor:
    """Fused conv-decoder layer with the reference's semantics.

    Args:
        x: (B, C, T) for a 1-D weight (C_out, C/groups, K), or (B, C, H, W) for a 2-D weight.
        weight, bias: the convolution's parameters. Under autocast x, weight and bias are cast to its
            dtype (and the output stays in it); otherwise weight and bias are cast to x's dtype.
        padding_mask: (B, T) or (B, H, W) bool, True at padded positions (zeroed before the conv).
        groups: convolution groups.
        residual: add the zeroed input; needs C_out == C.
        eps: LayerNorm epsilon.

    Returns:
        (B, C_out, T) or (B, C_out, H, W), contiguous.
    """
    if padding_mask is not None and tuple(padding_mask.shape) != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"padding_mask {tuple(padding_mask.shape)} does not match x {tuple(x.shape)}")
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        x = x.to(torch.get_autocast_dtype(dev))
    weight = weight.to(x.dtype)
    bias = bias.to(x.dtype) if bias is not None else None
    one_d = weight.dim() == 3
    x4, w4, m4 = _as_2d(x, weight, padding_mask)
    out = ConvBlockFunction.apply(x4, w4, bias, m4, groups, residual, eps)
    return out.squeeze(2) if one_d else out
