"""Fused Triton kernels against PyTorch on the models' shapes: attention vs every SDPA backend that
accepts the case and FlexAttention, and the conv-decoder block vs eager PyTorch. Prints time, TFLOP/s and GB/s next to the
GPU's ceilings and each case's roofline time.

    python bench/kernels.py [--dtype bf16|fp16] [--mode fwd|train|both] [--reps 50] [--markdown]
    python bench/kernels.py --smoke    # any machine: one tiny case on the CPU through the same code

FLOPs and bytes are the algorithm's minimum (dense T x T attention even where keys are padding; the
block reads its input and writes its output once). Without a CUDA GPU it prints the roofline estimate
at the H100 ceilings (CEILINGS, from NVIDIA's datasheets) and exits 0. `--smoke` then runs one tiny padded
ALiBi attention case in fp32 on the CPU through every SDPA backend (those that refuse it say so) and
eager FlexAttention, so a machine without a GPU checks the code the GPU run takes (not its speed).
"""

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from d2v.kernels import reference

# Dense fp16/bf16 tensor-core peak and HBM bandwidth, from NVIDIA's datasheets.
CEILINGS = {"H100": (989e12, 3.35e12), "H200": (989e12, 4.8e12), "A100": (312e12, 2.0e12)}
ROOFLINE_GPU = "H100"


@dataclass
class AttentionCase:
    name: str
    batch: int
    heads: int
    tokens: int
    head_dim: int = 64
    padded: bool = True  # a batch of varied lengths (the mean is 3/4 of the longest)
    alibi: bool = False  # audio: ALiBi bias (1, H, T, T) with a learned scale (its grad in training)

    def flops(self, train: bool) -> float:
        fwd = 4.0 * self.batch * self.heads * self.tokens**2 * self.head_dim
        return fwd * (3.5 if train else 1.0)  # backward = 2.5x forward (FlashAttention-2's count)

    def bytes(self, train: bool, elt: int) -> float:
        act = self.batch * self.heads * self.tokens * self.head_dim * elt
        bias = self.heads * self.tokens**2 * elt if self.alibi else 0
        fwd = 4 * act + bias  # q, k, v and the bias in; out out
        dbias = self.heads * self.tokens**2 * 4 if self.alibi else 0  # fp32 bias grad
        return fwd + (8 * act + bias + dbias if train else 0)  # q, k, v, out, dout in; dq, dk, dv out


@dataclass
class ConvCase:
    name: str
    batch: int
    channels: int
    spatial: tuple[int, ...]
    kernel: int
    groups: int
    residual: bool = True
    padded: bool = True

    def positions(self) -> int:
        return self.batch * math.prod(self.spatial)

    def flops(self, train: bool) -> float:
        taps = self.kernel ** len(self.spatial)
        fwd = 2.0 * self.positions() * self.channels * (self.channels // self.groups) * taps
        return fwd * (3.0 if train else 1.0)  # backward: dx and dw, each a conv

    def bytes(self, train: bool, elt: int) -> float:
        act = self.positions() * self.channels * elt
        return act * (5 if train else 2)  # forward: x in, out out; backward: x and dout in, dx out


ATTENTION = [
    AttentionCase("image ViT-B 197 tok", batch=64, heads=12, tokens=197, padded=False),
    AttentionCase("audio 500 fr ALiBi", batch=16, heads=12, tokens=500, alibi=True),
    AttentionCase("audio 1500 fr ALiBi", batch=8, heads=12, tokens=1500, alibi=True),
    AttentionCase("text 128 tok", batch=64, heads=12, tokens=128),
    AttentionCase("text 512 tok", batch=16, heads=12, tokens=512),
]
CONV = [
    ConvCase("image 768 3x3 g16 14x14", batch=64, channels=768, spatial=(14, 14), kernel=3, groups=16),
    ConvCase("audio 384 k7 g16 500 fr", batch=16, channels=384, spatial=(500,), kernel=7, groups=16),
    ConvCase("audio 768 k7 g16 1500 fr", batch=8, channels=768, spatial=(1500,), kernel=7, groups=16),
    ConvCase("text 768 k9 dense 512 tok", batch=16, channels=768, spatial=(512,), kernel=9, groups=1,
             residual=False),
]


def roofline_ms(flops: float, nbytes: float, gpu: str) -> float:
    peak, bw = CEILINGS[gpu]
    return max(flops / peak, nbytes / bw) * 1e3


def print_roofline(modes: list[bool], elt: int, markdown: bool) -> None:
    peak, bw = CEILINGS[ROOFLINE_GPU]
    print(f"Roofline estimate at the {ROOFLINE_GPU} ceilings: {peak / 1e12:.0f} TFLOP/s dense bf16, "
          f"{bw / 1e12:.2f} TB/s HBM (minimum FLOPs and bytes; a kernel reaches 35-75% of them).")
    rows = [("kernel", "case", "mode", "GFLOP", "MB", "bound", "roofline ms")]
    for train in modes:
        mode = "fwd+bwd" if train else "fwd"
        for c in ATTENTION + CONV:
            kind = "attention" if isinstance(c, AttentionCase) else "conv block"
            f, b = c.flops(train), c.bytes(train, elt)
            bound = "compute" if f / peak > b / bw else "memory"
            rows.append((kind, c.name, mode, f"{f / 1e9:.1f}", f"{b / 1e6:.1f}", bound,
                         f"{roofline_ms(f, b, ROOFLINE_GPU):.3f}"))
    print_table(rows, markdown)


def print_table(rows: list[tuple], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(rows[0]) + " |")
        print("|" + "|".join(" --- " for _ in rows[0]) + "|")
        for r in rows[1:]:
            print("| " + " | ".join(str(x) for x in r) + " |")
        print()
        return
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
    print()


def time_ms(fn, reps: int) -> float:
    """Median of CUDA-event timings after warm-up (first calls compile Triton kernels); on a machine
    without CUDA (--smoke), of wall-clock timings."""
    for _ in range(3 if torch.cuda.is_available() else 1):
        fn()
    if not torch.cuda.is_available():
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def padding_mask(batch: int, tokens: int, device: torch.device) -> torch.Tensor:
    """Lengths spread evenly from half to all of `tokens` (one full row)."""
    lengths = torch.linspace(tokens // 2, tokens, batch, device=device).round().long()
    return torch.arange(tokens, device=device)[None, :] >= lengths[:, None]  # (B, T) True at padding


def flex_attention_impl(c: AttentionCase, pad: torch.Tensor | None, scale: torch.Tensor, dist: torch.Tensor):
    """PyTorch FlexAttention (compiled) with the same semantics: padding as a block mask over the keys,
    ALiBi as a score modification reading the learned per-head scale (so its gradient flows)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    # compiled on CUDA (FlexAttention's fast path); eager elsewhere (the smoke run checks semantics only)
    compiled = torch.compile(flex_attention, dynamic=False) if pad is None or pad.is_cuda else flex_attention
    block_mask = None
    if pad is not None:
        lengths = (~pad).sum(1)

        def keep_key(b, h, q_idx, kv_idx):
            return kv_idx < lengths[b]

        block_mask = create_block_mask(keep_key, c.batch, None, c.tokens, c.tokens, device=str(pad.device))

    def alibi(score, b, h, q_idx, kv_idx):
        return score - (q_idx - kv_idx).abs() * (0.05 * scale[h])

    def run(q, k, v, pad, b):  # ALiBi comes from the score modification, not from `b`
        return compiled(q, k, v, score_mod=alibi if c.alibi else None, block_mask=block_mask)

    run.takes_bias = False
    return run


def bench_attention(c: AttentionCase, train: bool, dtype: torch.dtype, reps: int, gpu: str | None,
                    dev: torch.device | None = None) -> list[tuple]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = dev or torch.device("cuda")
    shape = (c.batch, c.heads, c.tokens, c.head_dim)
    q, k, v = (torch.randn(shape, device=dev, dtype=dtype, requires_grad=train) for _ in range(3))
    pad = padding_mask(c.batch, c.tokens, dev) if c.padded else None
    scale = torch.ones(c.heads, device=dev, requires_grad=train)
    dist = (torch.arange(c.tokens, device=dev)[:, None] - torch.arange(c.tokens, device=dev)[None]).abs()

    def bias():
        return -dist[None, None].float() * (0.05 * scale)[None, :, None, None] if c.alibi else None

    def run(fn):
        def step():
            out = fn(q, k, v, pad, bias() if getattr(fn, "takes_bias", True) else None)
            if train:
                out.backward(torch.ones_like(out))
        return step

    impls = {}
    if dev.type == "cuda":
        from d2v.kernels import triton_attention

        impls["triton"] = triton_attention.attention
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                    SDPBackend.MATH):
        def sdpa(q, k, v, pad, b, backend=backend):
            with sdpa_kernel(backend):
                return reference.attention(q, k, v, pad, b)
        impls[f"sdpa {backend.name.lower()}"] = sdpa

    impls["flex attention"] = flex_attention_impl(c, pad, scale, dist)

    with torch.no_grad():
        want = reference.attention(q.float(), k.float(), v.float(), pad, bias())
    rows = []
    f, b = c.flops(train), c.bytes(train, q.element_size())
    for name, fn in impls.items():
        try:
            with torch.no_grad():
                err = (fn(q, k, v, pad, bias()).float() - want)
            if pad is not None:
                err = err.masked_fill(pad[:, None, :, None], 0)  # padded query rows are ignored by callers
            err = err.abs().max().item()
            ms = time_ms(run(fn), reps)
        except Exception as e:  # noqa: BLE001 - the backend rejects this case (mask, bias grad, dtype, compile)
            rows.append((c.name, name, "rejects", "", "", "", str(e).splitlines()[0][:60]))
            continue
        rows.append(result_row(c.name, name, ms, f, b, gpu, f"max err {err:.1e}"))
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def bench_conv(c: ConvCase, train: bool, dtype: torch.dtype, reps: int, gpu: str | None) -> list[tuple]:
    from d2v.kernels import triton_conv_block

    dev = torch.device("cuda")
    x = torch.randn(c.batch, c.channels, *c.spatial, device=dev, dtype=dtype, requires_grad=train)
    w = torch.randn(c.channels, c.channels // c.groups, *([c.kernel] * len(c.spatial)), device=dev, dtype=dtype)
    w = (w / w[0].numel() ** 0.5).requires_grad_(train)
    bias = torch.zeros(c.channels, device=dev, dtype=dtype, requires_grad=train)
    pad = None
    if c.padded:
        pad = padding_mask(c.batch, math.prod(c.spatial), dev).reshape(c.batch, *c.spatial)
    impls = {"triton": triton_conv_block.conv_block, "eager": reference.conv_block}
    want = reference.conv_block(x.float(), w.float(), bias.float(), pad, c.groups, c.residual).detach()
    rows = []
    f, b = c.flops(train), c.bytes(train, x.element_size())
    for name, fn in impls.items():
        def step(fn=fn):
            out = fn(x, w, bias, pad, c.groups, c.residual)
            if train:
                out.backward(torch.ones_like(out))
        with torch.no_grad():
            err = (fn(x, w, bias, pad, c.groups, c.residual).float() - want).abs().max().item()
        ms = time_ms(step if train else torch.no_grad()(step), reps)
        rows.append(result_row(c.name, name, ms, f, b, gpu, f"max err {err:.1e}"))
    return rows


def result_row(case: str, impl: str, ms: float, flops: float, nbytes: float, gpu: str | None, note: str):
    tflops, gbs = flops / ms / 1e9, nbytes / ms / 1e6
    if gpu is None:
        return (case, impl, f"{ms:.3f}", f"{tflops:.1f}", f"{gbs:.0f}", "", note)
    peak, bw = CEILINGS[gpu]
    roof = roofline_ms(flops, nbytes, gpu)
    return (case, impl, f"{ms:.3f}", f"{tflops:.1f} ({tflops * 1e14 / peak:.0f}%)",
            f"{gbs:.0f} ({gbs * 1e11 / bw:.0f}%)", f"{roof:.3f}", note)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--mode", choices=["fwd", "train", "both"], default="both")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--smoke", action="store_true",
                        help="one tiny attention case on the CPU through every SDPA backend and FlexAttention")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    modes = {"fwd": [False], "train": [True], "both": [False, True]}[args.mode]

    print_roofline(modes, 2, args.markdown)
    if args.smoke:
        case = AttentionCase("smoke 24 tok ALiBi", batch=3, heads=2, tokens=24, head_dim=16, alibi=True)
        print("Attention smoke test on the CPU, fp32, forward (code paths, not speed)")
        rows = [("case", "impl", "ms", "TFLOP/s", "GB/s", "roofline ms", "note")]
        rows += bench_attention(case, False, torch.float32, 1, None, torch.device("cpu"))
        print_table(rows, args.markdown)
        return 0 if any(r[1] == "flex attention" and r[2] != "rejects" for r in rows[1:]) else 1
    if not torch.cuda.is_available():
        print("No CUDA GPU here: the table above is the roofline estimate only. On a GPU machine run\n"
              "    python bench/kernels.py --markdown\n"
              "to time the Triton kernels against PyTorch SDPA (every backend) and the eager decoder block.")
        return 0
    try:
        import triton  # noqa: F401
    except ImportError:
        print("triton is not installed: pip install triton (see README); nothing to time.")
        return 0

    name = torch.cuda.get_device_name()
    gpu = next((g for g in CEILINGS if g in name), None)
    ceil = f"ceilings {CEILINGS[gpu][0] / 1e12:.0f} TFLOP/s, {CEILINGS[gpu][1] / 1e12:.2f} TB/s" if gpu else \
        "ceilings unknown for this GPU"
    print(f"GPU: {name} ({ceil}); dtype {args.dtype}; median of {args.reps} runs\n")
    header = ("case", "impl", "ms", "TFLOP/s", "GB/s", "roofline ms", "note")
    for train in modes:
        mode = "forward + backward" if train else "forward"
        print(f"Attention, {mode} (head dim 64; padded batches unless noted)")
        rows = [header]
        for c in ATTENTION:
            rows += bench_attention(c, train, dtype, args.reps, gpu)
        print_table(rows, args.markdown)
        print(f"Conv-decoder block, {mode}")
        rows = [header]
        for c in CONV:
            rows += bench_conv(c, train, dtype, args.reps, gpu)
        print_table(rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
