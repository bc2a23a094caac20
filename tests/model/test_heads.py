"""Pooling and classification heads, through the inference encoder."""

import copy

import pytest
import torch
from realdata import byte_tokens, pad_waveforms, tiny_config

from d2v.model import HeadConfig, build_encoder, build_head
from d2v.model.heads import CTCHead, FirstTokenHead, MeanLinearHead, MeanPoolHead, pool

LABELS = ["zero", "one", "two"]


def _tokens_with_padding():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 6, 4, generator=g)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, 4:] = True
    pad[2, 1:] = True  # only the first token is real
    return tokens, pad


def test_mean_pool_ignores_padding_and_extra_tokens():
    tokens, pad = _tokens_with_padding()
    out = pool(tokens, pad, "mean", num_extra_tokens=1)
    torch.testing.assert_close(out[0], tokens[0, 1:].mean(0))
    torch.testing.assert_close(out[1], tokens[1, 1:4].mean(0))
    assert (out[2] == 0).all()  # no real non-extra token: zeros, not NaN
    bad = tokens.clone()
    bad[pad] = float("inf")  # padding may hold anything
    bad[:, 0] = 1e6  # the CLS token never enters the mean
    torch.testing.assert_close(pool(bad, pad, "mean", 1), out)
    torch.testing.assert_close(pool(tokens, None, "mean", 0), tokens.mean(1))
    torch.testing.assert_close(pool(tokens, pad, "cls", 1), tokens[:, 0])
    with pytest.raises(ValueError, match="pooling"):
        pool(tokens, pad, "max", 0)


def test_mean_pool_head():
    tokens, pad = _tokens_with_padding()
    head = MeanPoolHead(4, 5, num_extra_tokens=1).eval()
    torch.manual_seed(0)
    big = MeanPoolHead(256, 256, 1)
    assert (big.fc.bias == 0).all() and abs(float(big.fc.weight.detach().std()) - 0.02) < 1e-3
    feats = head(tokens, pad, pre_logits=True)
    assert feats.shape == (3, 4)
    torch.testing.assert_close(feats, head.fc_norm(pool(tokens, pad, "mean", 1)))
    logits = head(tokens, pad)
    assert logits.shape == (3, 5)
    torch.testing.assert_close(logits, head.fc(feats))
    assert head.fc_norm.eps == 1e-6


def test_first_token_head_reads_only_the_first_token():
    tokens, pad = _tokens_with_padding()
    head = FirstTokenHead(4, 2).eval()
    out = head(tokens, pad)
    assert out.shape == (3, 2)
    other = tokens.clone()
    other[:, 1:] = torch.randn(3, 5, 4)
    torch.testing.assert_close(head(other, pad), out)
    torch.testing.assert_close(head(tokens, pad, pre_logits=True), torch.tanh(head.dense(tokens[:, 0])))


def test_build_head():
    cfg = tiny_config("image").encoder
    assert isinstance(build_head(cfg, HeadConfig("mean_pool", LABELS), 1), MeanPoolHead)
    assert isinstance(build_head(cfg, HeadConfig("first_token", LABELS), 1), FirstTokenHead)
    with pytest.raises(ValueError, match="head type"):
        build_head(cfg, HeadConfig("attention", LABELS), 1)
    with pytest.raises(ValueError, match="label"):
        HeadConfig("mean_pool", [])


@pytest.fixture(scope="module")
def inputs(digit_images, spoken_digits, glosses):
    return {
        "image": (digit_images[0][:3], None),
        "audio": pad_waveforms(spoken_digits[:3]),
        "text": (byte_tokens(glosses[:3], vocab=4000), None),
    }


@pytest.mark.parametrize("modality, head_type", [("image", "mean_pool"), ("audio", "mean_pool"),
                                                 ("text", "first_token")])
def test_forward_head_shapes(modality, head_type, inputs):
    torch.manual_seed(0)
    enc = build_encoder(tiny_config(modality).encoder, HeadConfig(head_type, LABELS)).eval()
    x, pad = inputs[modality]
    tokens, tpad = enc.forward_features(x, pad)
    logits = enc.forward_head(tokens, tpad)
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()
    assert enc.forward_head(tokens, tpad, pre_logits=True).shape == (3, 32)
    torch.testing.assert_close(enc(x, pad), logits)
    emb = enc.pool(tokens, tpad)
    assert emb.shape == (3, 32)


def test_audio_logits_are_padding_invariant(inputs, spoken_digits):
    torch.manual_seed(0)
    enc = build_encoder(tiny_config("audio").encoder, HeadConfig("mean_pool", LABELS)).eval()
    logits = enc(*inputs["audio"])
    for i, w in enumerate(spoken_digits[:3]):
        torch.testing.assert_close(logits[i], enc(torch.from_numpy(w)[None])[0], atol=1e-5, rtol=1e-5)


def test_pooling_choices_per_modality(inputs):
    enc = build_encoder(tiny_config("audio").encoder).eval()
    tokens, tpad = enc.forward_features(*inputs["audio"])
    with pytest.raises(ValueError, match="no CLS token"):
        enc.pool(tokens, tpad, "cls")
    image = build_encoder(tiny_config("image").encoder).eval()
    tokens, tpad = image.forward_features(inputs["image"][0])
    torch.testing.assert_close(image.pool(tokens, tpad, "cls"), tokens[:, 0])
    torch.testing.assert_close(image.pool(tokens, tpad, "mean"), tokens[:, 1:].mean(1))
    text = build_encoder(tiny_config("text").encoder).eval()
    tokens, tpad = text.forward_features(inputs["text"][0])
    torch.testing.assert_close(text.pool(tokens, tpad, "cls"), tokens[:, 0])  # <s>
    with pytest.raises(ValueError, match="no classification head"):
        text.forward_head(tokens, tpad)


def test_mean_linear_head_equals_projecting_every_frame():
    """HF's audio classifier projects every frame and then averages the real ones; pooling first is
    the same map."""
    tokens, pad = _tokens_with_padding()
    head = MeanLinearHead(4, 3, num_extra_tokens=0, projection_dim=5).eval()
    projected = head.projector(tokens).masked_fill(pad.unsqueeze(-1), 0.0)
    pooled = projected.sum(1) / (~pad).sum(1, keepdim=True)
    torch.testing.assert_close(head(tokens, pad, pre_logits=True), pooled)
    torch.testing.assert_close(head(tokens, pad), head.classifier(pooled))
    plain = MeanLinearHead(4, 3, num_extra_tokens=0).eval()  # no projector
    torch.testing.assert_close(plain(tokens, None), plain.classifier(tokens.mean(1)))


def test_ctc_head_emits_per_frame_and_blanks_padding():
    tokens, pad = _tokens_with_padding()
    head = CTCHead(4, 6, blank_id=2).eval()
    out = head(tokens, pad)
    assert out.shape == (3, 6, 6)
    torch.testing.assert_close(out[~pad], head.proj(tokens[~pad]))
    padded = out[pad]
    assert (padded[:, 2] == 0).all() and (padded[:, [0, 1, 3, 4, 5]] == -1e4).all()
    assert (padded.argmax(-1) == 2).all() and torch.isfinite(out).all()
    probs = torch.softmax(padded, -1)
    assert (probs[:, 2] == 1).all() and (copy.deepcopy(head).half()(tokens.half(), pad)[pad] == padded.half()).all()
    torch.testing.assert_close(head(tokens, None), head.proj(tokens))
    assert head(tokens, pad, pre_logits=True) is tokens


def test_ctc_head_init_is_xavier_uniform_with_zero_bias():
    """fairseq's Wav2VecCtc output layer: xavier-uniform weight (bound sqrt(6 / (fan_in + fan_out))), bias 0."""
    torch.manual_seed(0)
    head = CTCHead(768, 32, blank_id=0)
    bound = (6 / (768 + 32)) ** 0.5
    w = head.proj.weight
    assert (w.abs() <= bound).all() and w.abs().max() > 0.95 * bound
    assert float(w.detach().std()) == pytest.approx(bound / 3 ** 0.5, rel=0.05)  # uniform(-b, b) has std b / sqrt(3)
    assert (head.proj.bias == 0).all()


def test_new_head_configs():
    cfg = tiny_config("audio").encoder
    ctc = HeadConfig("ctc", ["_", "|", "a"], blank_id=0, word_delimiter="|", ignore_ids=[1])
    assert isinstance(build_head(cfg, ctc, 0), CTCHead)
    assert ctc.to_dict() == {"type": "ctc", "labels": ["_", "|", "a"], "pooling": "mean", "dropout": 0.0,
                             "blank_id": 0, "word_delimiter": "|", "ignore_ids": [1]}
    linear = HeadConfig("mean_linear", LABELS, projection_dim=8)
    assert isinstance(build_head(cfg, linear, 0), MeanLinearHead) and linear.to_dict()["projection_dim"] == 8
    # the older head types keep their config.json shape
    assert HeadConfig("mean_pool", LABELS).to_dict() == {"type": "mean_pool", "labels": LABELS, "pooling": "mean",
                                                         "dropout": 0.0}
    for kwargs, error in [({"blank_id": None}, "needs a blank_id"), ({"blank_id": 3}, "needs a blank_id"),
                          ({"blank_id": 0, "ignore_ids": [5]}, "ignore_ids"),
                          ({"blank_id": 0, "word_delimiter": "#"}, "not in the vocabulary")]:
        with pytest.raises(ValueError, match=error):
            HeadConfig("ctc", ["_", "|", "a"], **kwargs)
    with pytest.raises(ValueError, match="blank_id apply to ctc heads only"):
        HeadConfig("mean_pool", LABELS, blank_id=0)
    with pytest.raises(ValueError, match="projection_dim applies to mean_linear"):
        HeadConfig("mean_pool", LABELS, projection_dim=4)


@torch.no_grad()
def test_encoder_forward_head_with_ctc(spoken_digits):
    enc = build_encoder(tiny_config("audio").encoder, HeadConfig("ctc", ["_", "|", "a", "b"], blank_id=0)).eval()
    x, pad = pad_waveforms(spoken_digits[:2])
    tokens, frames = enc.forward_features(x, pad)
    emissions = enc.forward_head(tokens, frames)
    assert emissions.shape == (*tokens.shape[:2], 4)
    torch.testing.assert_close(enc(x, pad), emissions)
