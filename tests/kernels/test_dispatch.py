"""The dispatch point in d2v.kernels: same signatures as the reference, Triton only on CUDA tensors with
triton present, D2V_KERNELS (and the deprecated kill switch), the check against the reference before a
kernel is trusted, the reference under export/tracing, and an import that never touches the GPU
driver. A stub kernel module stands in for the Triton one, so this runs without a GPU."""

import inspect
import logging
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
    monkeypatch.setattr(kernels, "MODE", "auto")
    monkeypatch.setattr(kernels, "_checks", {})
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

    if "D2V_DISABLE_TRITON" not in os.environ and "D2V_KERNELS" not in os.environ:
        assert kernels.HAS_TRITON == (importlib.util.find_spec("triton") is not None)
    assert run_python("import d2v.kernels as k; print(k.HAS_TRITON)", D2V_DISABLE_TRITON="1") == "False"
    assert run_python("import d2v.kernels as k; print(k.HAS_TRITON, k.MODE)", D2V_KERNELS="reference") == \
        "False reference"


@pytest.mark.parametrize("env,mode,warning", [
    ({}, "auto", None),
    ({"D2V_KERNELS": "auto"}, "auto", None),
    ({"D2V_KERNELS": " Triton "}, "triton", None),
    ({"D2V_KERNELS": "reference"}, "reference", None),
    ({"D2V_DISABLE_TRITON": "1"}, "reference", FutureWarning),  # the former switch: an alias
    ({"D2V_DISABLE_TRITON": "0"}, "auto", None),
    ({"D2V_KERNELS": "triton", "D2V_DISABLE_TRITON": "1"}, "triton", None),  # the new variable wins
    ({"D2V_KERNELS": "fast"}, "reference", RuntimeWarning),  # unknown: the implementation always right
])
def test_kernel_mode_from_the_environment(env, mode, warning):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert kernels.kernel_mode(env) == mode
    assert [w.category for w in caught] == ([warning] if warning else [])
    if warning is FutureWarning:
        assert "D2V_KERNELS=reference" in str(caught[0].message)


def test_a_kernel_that_disagrees_with_the_reference_is_not_used(stub, monkeypatch, caplog):
    """Mode auto: the first GPU call checks the kernel against the reference; a wrong attention kernel
    is caught there, its answer never returned, and attention stays on the reference (logged, and
    reported by status()); the right conv kernel is trusted and used from then on."""
    calls = stub
    wrong = types.SimpleNamespace(
        attention=lambda *a: calls.append("attention") or reference.attention(*a) + 0.25,
        conv_block=lambda *a: calls.append("conv_block") or reference.conv_block(*a),
    )
    monkeypatch.setattr(kernels, "_kernel_module", lambda name: wrong)
    q, k, v, pad, x, w = small_inputs()
    assert kernels.status() == {"attention": "triton (unchecked)", "conv_block": "triton (unchecked)"}
    with caplog.at_level(logging.INFO, logger="d2v.kernels"):
        for _ in range(3):
            a, c = call_both(q, k, v, pad, x, w)
            torch.testing.assert_close(a, reference.attention(q, k, v, pad))
            torch.testing.assert_close(c, reference.conv_block(x, w, None, pad, 2, True))
    assert calls == ["attention", "conv_block", "conv_block", "conv_block"]  # 1 check each, then conv only
    status = kernels.status()
    assert status["conv_block"] == "triton"
    assert status["attention"].startswith("reference (fallback: the Triton attention kernel differs from the "
                                          "reference in bfloat16: largest difference 0.25")
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "falling back to the PyTorch reference for attention" in warned[0].getMessage()


def test_triton_mode_trusts_the_kernels_unchecked(stub, monkeypatch):
    monkeypatch.setattr(kernels, "MODE", "triton")
    wrong = types.SimpleNamespace(attention=lambda *a: reference.attention(*a) + 1.0)
    monkeypatch.setattr(kernels, "_kernel_module", lambda name: wrong)
    q, k, v, pad, _, _ = small_inputs()
    torch.testing.assert_close(kernels.attention(q, k, v, pad), reference.attention(q, k, v, pad) + 1.0)
    assert kernels.status()["attention"] == "triton"


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
    monkeypatch.setattr(kernels, "MODE", "triton")  # every call through the kernels, none answered by a check
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
