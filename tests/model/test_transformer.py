"""The post-LN block (fairseq AltBlock): exact formula, the FFN-output target, padding, init."""

import math

import pytest
import torch
import torch.nn.functional as F

from d2v.model import build_encoder
from d2v.model.config import EncoderConfig
from d2v.model.transformer import Attention, Block, DropPath, bert_init_


def _naive_attention(attn: Attention, x, padding_mask=None, bias=None):
    """Per head with explicit q/k/v slices of the fused qkv weight (rows: q, then k, then v; heads
    in order within each)."""
    B, T, D = x.shape
    H = attn.num_heads
    Dh = D // H
    W, b = attn.qkv.weight, attn.qkv.bias
    out = torch.zeros(B, T, D)
    for h in range(H):
        sl = [slice(i * D + h * Dh, i * D + (h + 1) * Dh) for i in range(3)]
        q, k, v = (x @ W[s].T + b[s] for s in sl)  # (B, T, Dh)
        logits = q @ k.transpose(1, 2) / math.sqrt(Dh)
        if bias is not None:
            logits = logits + bias[:, h] if bias.shape[1] > 1 else logits + bias[:, 0]
        if padding_mask is not None:
            logits = logits.masked_fill(padding_mask[:, None, :], float("-inf"))
        out[..., h * Dh:(h + 1) * Dh] = logits.softmax(-1) @ v
    return attn.proj(out)


def _block(seed=0, dim=16, heads=4, **kw):
    torch.manual_seed(seed)
    blk = Block(dim, heads, **kw)
    blk.apply(bert_init_)
    for n in (blk.norm1, blk.norm2):  # non-trivial affine parameters
        n.weight.data.uniform_(0.5, 1.5)
        n.bias.data.normal_(0, 0.1)
    return blk.eval()


def test_attention_matches_naive_per_head():
    blk = _block()
    x = torch.randn(2, 7, 16)
    pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
    bias = -torch.rand(2, 4, 7, 7)
    torch.testing.assert_close(blk.attn(x, pad, bias), _naive_attention(blk.attn, x, pad, bias),
                               atol=1e-5, rtol=1e-5)


def test_block_is_post_ln_and_returns_ffn_output():
    blk = _block()
    x = torch.randn(3, 5, 16)
    out, t = blk(x)
    a = _naive_attention(blk.attn, x)
    r = F.layer_norm(x + a, (16,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    t_ref = blk.mlp.fc2(F.gelu(blk.mlp.fc1(r)))
    out_ref = F.layer_norm(r + t_ref, (16,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
    torch.testing.assert_close(t, t_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)


def test_block_padding_invariance():
    """Appending padded tokens (with garbage) leaves the real tokens' outputs unchanged."""
    blk = _block(dropout=0.1, attention_dropout=0.1, post_mlp_dropout=0.1)  # eval: dropouts off
    x = torch.randn(1, 6, 16)
    bias = -torch.rand(1, 4, 9, 9)
    out, t = blk(x, None, bias[:, :, :6, :6])
    xp = torch.cat([x, 1e3 * torch.randn(1, 3, 16)], dim=1)
    pad = torch.tensor([[False] * 6 + [True] * 3])
    outp, tp = blk(xp, pad, bias)
    assert torch.isfinite(outp).all()
    torch.testing.assert_close(outp[:, :6], out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tp[:, :6], t, atol=1e-5, rtol=1e-5)


def test_block_dropout_only_in_training():
    blk = _block(dropout=0.5, attention_dropout=0.5, post_mlp_dropout=0.5, activation_dropout=0.5)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(blk(x)[0], blk(x)[0])
    blk.train()
    torch.manual_seed(0)
    a = blk(x)[0]
    torch.manual_seed(1)
    assert not torch.allclose(a, blk(x)[0])


def test_drop_path():
    x = torch.ones(1000, 3, 2)
    assert DropPath(0.0).train()(x) is x
    assert DropPath(0.5).eval()(x) is x
    torch.manual_seed(0)
    y = DropPath(0.25).train()(x)
    per_sample = y[:, 0, 0]
    # whole samples are dropped or scaled by 1/(1-p)
    values = per_sample.unique()
    assert len(values) == 2 and values[0] == 0 and float(values[1]) == pytest.approx(1.0 / 0.75)
    assert (y == y[:, :1, :1]).all()
    assert 0.15 < float((per_sample == 0).float().mean()) < 0.35
    assert Block(8, 2, drop_path=0.0).drop_path.__class__.__name__ == "Identity"


def test_drop_path_rates_are_linear_over_all_blocks():
    cfg = EncoderConfig("image", 32, 2, depth=3, prenet_depth=2, drop_path=0.4, image=None)
    cfg.image.image_size, cfg.image.patch_size = 16, 8
    enc = build_encoder(cfg)
    blocks = list(enc.input_encoder.context_encoder.blocks) + list(enc.blocks)
    rates = [b.drop_path.p if isinstance(b.drop_path, DropPath) else 0.0 for b in blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_bert_init():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 256)
    emb = torch.nn.Embedding(300, 64, padding_idx=1)
    with torch.no_grad():
        lin.apply(bert_init_)
        emb.apply(bert_init_)
    lin.requires_grad_(False)
    emb.requires_grad_(False)
    assert abs(float(lin.weight.std()) - 0.02) < 1e-3
    assert (lin.bias == 0).all()
    assert (emb.weight[1] == 0).all()
    assert abs(float(emb.weight[2:].std()) - 0.02) < 1e-3
