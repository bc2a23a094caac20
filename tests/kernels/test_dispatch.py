"""The dispatch point in d2v.kernels: same signatures as the reference, Triton only on CUDA tensors with
triton present, the kill switch, the reference under export/tracing, and an import that never touches
the GPU driver. A stub kernel module stands in for the Triton one, so this runs without a GPU."""

import inspect
import os
import subprocess
import sys
import types

import pytest
import torch

from d2v import kernels
from d2v.kernels import reference


@pytest.mark.parametrize("name", ["attention", "conv_block"])
def test_public_ops_have_the_reference_signature(name):
    assert inspect.signature(getattr(kernels, name)) == inspect.signature(getattr(reference, name))


@pytest.fixture
def stub(monkeypatch):
    """Pretend triton is present and every tensor is on a GPU; record what reaches the 'Triton' ops."""
    calls: list[str] = []
    module = types.SimpleNamespace(
        attention=lambda *a: calls.append("attention") or reference.attention(*a),
        conv_block=lambda *a: calls.append("conv_block") or reference.conv_block(*a),
    )
    monkeypatch.setattr(kernels, "HAS_TRITON", True)
    monkeypatch.setattr(kernels, "_on_gpu", lambda t: True)
    monkeypatch.setattr(kernels, "_kernel_module", lambda name: module)
    return calls


def small_inputs():
    """Half-precision attention inputs (fp32 attention always runs the reference) and an fp32 conv."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 8, generator=g).to(torch.bfloat16) for _ in range(3))
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    x = torch.randn(2, 8, 5, generator=g)
    w = torch.randn(8, 4, 3, generator=g)
    return q, k, v, pad, x, w


def call_both(q, k, v, pad, x, w):
    a = kernels.attention(q, k, v, key_padding_mask=pad)
    c = kernels.conv_block(x, w, None, pad, groups=2, residual=True)
    return a, c


def test_triton_path_is_taken_for_gpu_tensors(stub):
    call_both(*small_inputs())
    assert stub == ["attention", "conv_block"]


def test_cpu_tensors_run_the_reference(monkeypatch):
    monkeypatch.setattr(kernels, "HAS_TRITON", True)
    monkeypatch.setattr(kernels, "_kernel_module", lambda name: pytest.fail("Triton used for CPU tensors"))
    q, k, v, pad, x, w = small_inputs()
    a, c = call_both(q, k, v, pad, x, w)
    torch.testing.assert_close(a, reference.attention(q, k, v, pad))
    torch.testing.assert_close(c, reference.conv_block(x, w, None, pad, 2, True))


def test_attention_dropout_wide_heads_and_fp32_run_the_reference(stub):
    q, k, v, pad, _, _ = small_inputs()
    kernels.attention(q, k, v, pad, dropout_p=0.1)
    wide = torch.randn(1, 1, 4, 160).half()
    kernels.attention(wide, wide, wide)
    kernels.attention(q.double(), k.double(), v.double())
    kernels.attention(q.float(), k.float(), v.float())
    assert stub == []


def test_exportable_context_forces_the_reference(stub):
    with kernels.exportable():
        assert kernels.is_exportable()
        call_both(*small_inputs())
    assert not kernels.is_exportable()
    assert stub == []


@pytest.mark.parametrize("flag", ["torch.onnx.is_in_onnx_export", "torch.compiler.is_exporting",
                                  "torch.compiler.is_compiling"])
def test_export_and_compile_flags_force_the_reference(stub, monkeypatch, flag):
    module, attr = flag.rsplit(".", 1)
    monkeypatch.setattr(eval(module), attr, lambda: True)
    call_both(*small_inputs())
    assert stub == []


def test_jit_trace_sees_only_the_reference(stub):
    q, k, v, pad, _, _ = small_inputs()
    torch.jit.trace(lambda q, k, v: kernels.attention(q, k, v, pad), (q, k, v), check_trace=False)
    assert stub == []


class Tiny(torch.nn.Module):
    def forward(self, q, k, v, pad, x, w):
        return call_both(q, k, v, pad, x, w)


def test_torch_export_sees_only_the_reference(stub):
    """torch.export (which the dynamo-based ONNX exporter runs) traces the reference."""
    torch.export.export(Tiny(), small_inputs())
    assert stub == []


def test_onnx_export_sees_only_the_reference(stub, tmp_path):
    pytest.importorskip("onnx")
    torch.onnx.export(Tiny(), small_inputs(), str(tmp_path / "tiny.onnx"), dynamo=False)
    assert stub == []


def run_python(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("D2V_DISABLE_TRITON", "TRITON_INTERPRET")}
    out = subprocess.run([sys.executable, "-c", code], env=environment | env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_kill_switch_disables_triton():
    import importlib.util

    if "D2V_DISABLE_TRITON" not in os.environ:
        assert kernels.HAS_TRITON == (importlib.util.find_spec("triton") is not None)
    assert run_python("import d2v.kernels as k; print(k.HAS_TRITON)", D2V_DISABLE_TRITON="1") == "False"


def test_import_never_touches_the_gpu_driver():
    """Importing d2v (and the Triton kernel modules themselves) creates no Triton driver, initializes no
    CUDA context and loads no libcuda."""
    code = """
import sys
import torch
def boom(*a, **k):
    raise AssertionError("CUDA initialized at import")
torch.cuda._lazy_init = boom
import d2v, d2v.kernels, d2v.model
print("triton" in sys.modules)
if d2v.kernels.HAS_TRITON:
    import d2v.kernels.triton_attention, d2v.kernels.triton_conv_block
    from triton.runtime.driver import driver
    assert driver._default is None and driver._active is None, "triton driver created at import"
assert not torch.cuda.is_initialized()
assert "libcuda.so" not in open("/proc/self/maps").read(), "libcuda loaded at import"
print("ok")
"""
    out = run_python(code).splitlines()
    assert out[-1] == "ok"
    assert out[0] == "False", "importing d2v must not import triton"


def test_model_blocks_give_the_same_results_and_grads_through_triton(monkeypatch):
    """The model's call sites (post-LN block with ALiBi and padding, the 1-D conv decoder) routed to the
    Triton kernels (interpreted, on CPU) match the reference path, parameter grads included (ALiBi's
    learned scale gets its grad through the kernel's dbias)."""
    pytest.importorskip("triton")
    from d2v.model.alibi import ALiBi
    from d2v.model.decoder import ConvDecoder
    from d2v.model.transformer import Block

    torch.manual_seed(0)
    block, alibi = Block(dim=32, num_heads=2), ALiBi(num_heads=2)
    decoder = ConvDecoder(32, 32, kernel=7, layers=2, groups=2, residual=True, out_dim=16)
    x = torch.randn(2, 21, 32)
    pad = torch.zeros(2, 21, dtype=torch.bool)
    pad[1, 13:] = True
    params = [*block.parameters(), *alibi.parameters(), *decoder.parameters()]

    def run():
        h, _ = block(x, pad, alibi(torch.arange(21)))
        out = decoder(h, pad)
        loss = out.masked_fill(pad[..., None], 0).square().sum()
        return out, torch.autograd.grad(loss, params)

    want, want_grads = run()
    monkeypatch.setattr(kernels, "HAS_TRITON", True)
    monkeypatch.setattr(kernels, "_on_gpu", lambda t: True)
    monkeypatch.setattr(kernels, "_ATTENTION_DTYPES", (torch.float32,))
    calls = []
    real = kernels._kernel_module
    monkeypatch.setattr(kernels, "_kernel_module", lambda name: calls.append(name) or real(name))
    got, got_grads = run()
    assert set(calls) == {"triton_attention", "triton_conv_block"}
    keep = ~pad[..., None]
    torch.testing.assert_close(got * keep, want * keep, atol=2e-5, rtol=2e-5)
    for p, g, w in zip(params, got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=5e-5, rtol=5e-5, msg=lambda m, shape=p.shape: f"{shape}: {m}")
