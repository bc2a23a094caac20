"""Ahead-of-time compile every Triton kernel for sm_80 (A100) and sm_90 (H100/H200), no GPU needed.

Each case runs a real launcher on CPU tensors of the models' shapes with its launch intercepted, and
compiles exactly what the JIT would on a GPU: the same constexprs, launch options, and argument
specialization (ints equal to 1 become constants, 16-divisible ints and 16-aligned pointers get
divisibility hints). Then it checks:

- the attention kernels' matrix work runs on tensor cores (PTX `mma.sync` on sm_80, `wgmma` on sm_90),
  and so does the conv block's GEMM path in half precision;
- no kernel spills registers: `cuobjdump -res-usage` shows STACK:0 and LOCAL:0 (ptxas spills go to
  the stack frame, so STACK > 0 is the spill signal; `ptxas -v` reports the same bytes as spill stores).

The compiles run in fresh processes (`spawn`) without TRITON_INTERPRET: the interpreter, which the other
kernel tests use, replaces `@triton.jit` functions and cannot be undone in a process. The full sweep over
every dtype (fp32 too) x head dim x bias kind and every decoder shape is marked slow (5 to 10 minutes
on 2 cores); the default cases are the base models' shapes (about a minute).
"""

import multiprocessing
import os
import re
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

TARGETS = (80, 90)


# --------------------------------------------------------------------------------- cases (launch builders)


def _capture(module, fn, *args):
    """Run a launcher with its `_launch` intercepted; return the launches it would make."""
    launches = []

    def record(kernel, grid, *a, num_warps, num_stages, **constexprs):
        launches.append((kernel, a, constexprs, num_warps, num_stages))

    original, module._launch = module._launch, record
    try:
        fn(*args)
    finally:
        module._launch = original
    return launches


def _attention_case(dtype_name: str, head_dim: int, bias: str | None, tf32: bool = False):
    """Forward + backward launches for a padded batch at the image length (197 tokens)."""
    import torch

    from d2v.kernels import triton_attention as ta

    dtype = getattr(torch, dtype_name)
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    B, H, T = 2, 4, 197
    qkv = torch.randn(B, T, 3, H, head_dim).to(dtype).permute(2, 0, 3, 1, 4)  # the model's layout
    q, k, v = qkv.unbind(0)
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[1, 150:] = True
    b = None
    if bias is not None:  # "alibi": (1, H, T, T), accumulated over the batch; "full": (B, H, T, T)
        b = ta.prepare_bias(torch.zeros(1 if bias == "alibi" else B, H, T, T), dtype)
    launches = _capture(ta, ta.attention_forward, q, k, v, pad, b)
    o = torch.randn(B, H, T, head_dim).to(dtype)
    lse = torch.zeros(B, H, T)
    launches += _capture(ta, ta.attention_backward, o, q, k, v, o, lse, pad, b, b is not None)
    return launches


def _conv_case(dtype_name: str, channels: int, spatial: tuple[int, ...], kernel: int, groups: int):
    """Forward + backward launches of a decoder layer (residual, bias, padding mask)."""
    import torch

    from d2v.kernels import triton_conv_block as tc

    dtype = getattr(torch, dtype_name)
    torch.set_float32_matmul_precision("highest")  # a worker may have run a TF32 attention case before
    B = 4
    x = torch.randn(B, channels, *spatial).to(dtype)
    w = torch.randn(channels, channels // groups, *([kernel] * len(spatial))).to(dtype)
    b = torch.randn(channels).to(dtype)
    x4, w4, m4 = tc._as_2d(x, w, torch.zeros(B, *spatial, dtype=torch.bool))
    launches = _capture(tc, tc.conv_block_forward, x4, w4, b, m4, groups, True, 1e-5)
    y = torch.randn(B, channels, *x4.shape[2:]).to(dtype)
    stats = torch.zeros(B, y[0, 0].numel())
    launches += _capture(tc, tc.conv_block_backward, y, x4, w4, True, m4, y, stats, stats, groups, True)
    return launches


CASES = {
    # Head dim 64 (every base model): ALiBi audio training (bias grad by atomics) and masked image/text.
    "attn-bf16-d64-alibi": lambda: _attention_case("bfloat16", 64, "alibi"),
    "attn-fp16-d64-mask": lambda: _attention_case("float16", 64, None),
    # Decoder layers: audio k7 g16 (24 ch/group: padded GEMM), image 3x3 g16 on the grid, depthwise (FMA).
    "conv-bf16-audio-k7": lambda: _conv_case("bfloat16", 384, (250,), 7, 16),
    "conv-fp16-image-3x3": lambda: _conv_case("float16", 768, (14, 14), 3, 16),
    "conv-fp16-depthwise-k9": lambda: _conv_case("float16", 384, (250,), 9, 384),
}
SLOW_CASES = {
    f"attn-{dt}-d{d}-{bias or 'mask'}{'-tf32' if tf32 else ''}": (
        lambda dt=dt, d=d, bias=bias, tf32=tf32: _attention_case(dt, d, bias, tf32)
    )
    for dt, tf32 in [("float16", False), ("bfloat16", False), ("float32", False), ("float32", True)]
    for d in (32, 48, 64, 96, 128)
    for bias in (None, "alibi", "full")
} | {
    f"conv-{dt}-{name}": (lambda dt=dt, shape=shape: _conv_case(dt, *shape))
    for dt in ("float16", "bfloat16", "float32")
    for name, shape in {
        "audio-base": (384, (250,), 7, 16), "audio-large": (768, (250,), 7, 16),
        "image": (768, (14, 14), 3, 16), "image-large-5x5": (1024, (14, 14), 5, 16),
        "text": (768, (128,), 9, 1), "depthwise": (384, (250,), 7, 384), "narrow-groups": (64, (100,), 7, 8),
    }.items()
}


# --------------------------------------------------------------------------------- compiling (in workers)


def _compile(kernel, args, constexprs, num_warps: int, num_stages: int, cc: int) -> dict:
    """Compile one launch as the JIT would specialize it; return its resource use and MMA flavour."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend, GPUTarget
    from triton.compiler import ASTSource

    signature, consts, attrs = {}, {}, {}
    values = list(args) + [constexprs[p.name] for p in kernel.params[len(args):]]
    for i, (param, value) in enumerate(zip(kernel.params, values, strict=True)):
        if param.is_constexpr:
            signature[param.name], consts[(i,)] = "constexpr", value
            continue
        ty, attr = native_specialize_impl(BaseBackend, value, False, True, True)
        signature[param.name] = ty
        if ty == "constexpr":
            consts[(i,)] = attr
        elif isinstance(attr, str):
            attrs[(i,)] = BaseBackend.parse_attr(attr)
    source = ASTSource(fn=kernel, signature=signature, constexprs=consts, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", cc, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([str(cuobjdump), "-res-usage", f.name], capture_output=True, text=True,
                               check=True).stdout
    res = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|LOCAL):(\d+)", usage)}
    ptx = compiled.asm["ptx"]
    return {
        "kernel": kernel.fn.__name__, "cc": cc, **res,
        "mma": "mma.sync" in ptx, "wgmma": "wgmma.mma_async" in ptx,
        "dot": constexprs.get("USE_DOT", True), "dtype": str(args[0].dtype),
    }


def _compile_case(name: str) -> list[dict]:
    """Worker: compile every launch of one case for every target."""
    import torch

    torch.manual_seed(0)
    builder = CASES.get(name) or SLOW_CASES[name]
    return [_compile(k, a, cx, w, s, cc) for k, a, cx, w, s in builder() for cc in TARGETS]


def _compile_all(names: list[str]) -> dict[str, list[dict] | str]:
    context = multiprocessing.get_context("spawn")
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"  # the spawned workers inherit the environment at start
    try:
        with ProcessPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1), mp_context=context) as ex:
            futures = {name: ex.submit(_compile_case, name) for name in names}
            out = {}
            for name, fut in futures.items():
                try:
                    out[name] = fut.result()
                except Exception as e:  # noqa: BLE001  (any compile error fails that case, not all)
                    out[name] = f"{type(e).__name__}: {e}"
            return out
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


@pytest.fixture(scope="module")
def compiled() -> dict:
    return _compile_all(list(CASES))


def check(results: list[dict] | str) -> None:
    assert not isinstance(results, str), f"compile failed: {results}"
    kernels = {r["kernel"] for r in results}
    assert {r["cc"] for r in results} == set(TARGETS)
    for r in results:
        where = f"{r['kernel']} sm_{r['cc']} ({r['dtype']})"
        assert r["STACK"] == 0 and r["LOCAL"] == 0, f"{where} spills registers: {r}"
        half = r["dtype"] in ("torch.float16", "torch.bfloat16")
        if half and r["kernel"] in ("_attn_fwd", "_attn_bwd_dkdv", "_attn_bwd_dq"):
            mma = r["mma"] if r["cc"] == 80 else r["wgmma"]
            assert mma, f"{where}: matrix work is not on tensor cores ({'mma.sync' if r['cc'] == 80 else 'wgmma'})"
        if half and r["dot"] and r["kernel"] in ("_conv_block_fwd", "_conv_block_bwd_dx", "_conv_block_bwd_dw"):
            assert r["mma"] or r["wgmma"], f"{where}: GEMM path is not on tensor cores"
    assert kernels, "no launches captured"


@pytest.mark.parametrize("name", list(CASES))
def test_kernels_compile_for_sm80_sm90_on_tensor_cores_without_spills(compiled, name):
    check(compiled[name])


def test_every_kernel_is_covered(compiled):
    """Every @triton.jit kernel of both modules is compiled by some default case."""
    seen = {r["kernel"] for results in compiled.values() if not isinstance(results, str) for r in results}
    assert seen == {
        "_attn_fwd", "_attn_bwd_preprocess", "_attn_bwd_dkdv", "_attn_bwd_dq",
        "_conv_block_fwd", "_conv_block_bwd_dy", "_conv_block_bwd_dx", "_conv_block_bwd_dw",
    }


@pytest.mark.slow
def test_full_sweep_compiles_without_spills():
    """Every dtype x head dim x bias kind and every decoder shape (minutes; `make test-slow`)."""
    results = _compile_all(list(SLOW_CASES))
    failures = []
    for name, res in results.items():
        try:
            check(res)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)
