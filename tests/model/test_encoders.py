"""Modality input encoders through the inference encoder: shapes, finiteness, padding invariance,
input validation, and the masked path (masked tokens never influence visible ones)."""

import math

import numpy as np
import pytest
import torch
from realdata import byte_tokens, pad_waveforms, tiny_config

from d2v.model import build_encoder
from d2v.model.encoders.audio import normalize_waveform
from d2v.model.encoders.image import sincos_2d
from d2v.model.masking import mask_info

D = 32


def _encoder(modality, **kw):
    torch.manual_seed(0)
    return build_encoder(tiny_config(modality, **kw).encoder).eval()


@pytest.fixture(scope="module")
def audio_batch(spoken_digits):
    return pad_waveforms(spoken_digits)


@pytest.fixture(scope="module")
def text_batch(glosses):
    return byte_tokens(glosses[:6], vocab=4000, max_len=40)


# --- shapes and finiteness ------------------------------------------------------------------------


def test_image_shapes(digit_images):
    x, _ = digit_images
    enc = _encoder("image")
    out, pad = enc.forward_features(x)
    assert out.shape == (8, 1 + 8 * 8, D) and pad is None  # CLS + 8x8 patches of 4x4 pixels
    assert torch.isfinite(out).all()


def test_audio_shapes(audio_batch, spoken_digits):
    wav, wav_pad = audio_batch
    enc = _encoder("audio")
    out, pad = enc.forward_features(wav, wav_pad)
    lengths = enc.input_encoder.output_lengths(torch.tensor([len(w) for w in spoken_digits]))
    assert out.shape == (5, int(lengths.max()), D)
    assert torch.isfinite(out).all()
    assert ((~pad).sum(1) == lengths).all()
    assert (out[pad] == 0).all()  # padded tokens are zeroed
    assert (lengths == torch.tensor([(len(w) - 400) // 320 + 1 for w in spoken_digits])).all()


def test_audio_output_lengths_match_the_extractor():
    enc = _encoder("audio")
    for n in [400, 401, 719, 720, 1000, 3217]:
        frames = enc.input_encoder.local_features(torch.randn(1, n))[0].shape[1]
        assert frames == int(enc.input_encoder.output_lengths(torch.tensor([n]))[0])
    assert int(enc.input_encoder.output_lengths(torch.tensor([399]))[0]) == 0


def test_text_shapes(text_batch):
    enc = _encoder("text")
    out, pad = enc.forward_features(text_batch)
    assert out.shape == (*text_batch.shape, D)
    assert torch.isfinite(out).all()
    assert torch.equal(pad, text_batch.eq(1))
    assert (out[pad] == 0).all()


# --- padding invariance ---------------------------------------------------------------------------


def test_audio_padding_invariance(audio_batch, spoken_digits):
    wav, wav_pad = audio_batch
    enc = _encoder("audio")
    out, pad = enc.forward_features(wav, wav_pad)
    for i, w in enumerate(spoken_digits):
        alone, alone_pad = enc.forward_features(torch.from_numpy(w)[None])
        assert alone_pad is None
        n = alone.shape[1]
        assert int((~pad[i]).sum()) == n
        torch.testing.assert_close(out[i, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_audio_padding_content_is_ignored(audio_batch):
    wav, wav_pad = audio_batch
    enc = _encoder("audio")
    out, _ = enc.forward_features(wav, wav_pad)
    noisy = wav.masked_fill(wav_pad, 0.0) + wav_pad * torch.randn(wav.shape) * 10
    torch.testing.assert_close(enc.forward_features(noisy, wav_pad)[0], out, atol=1e-5, rtol=1e-5)


def test_text_padding_invariance(text_batch):
    enc = _encoder("text")
    out, pad = enc.forward_features(text_batch)
    for i in range(text_batch.shape[0]):
        n = int((~pad[i]).sum())
        alone, _ = enc.forward_features(text_batch[i:i + 1, :n])
        torch.testing.assert_close(out[i, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_text_positions_start_after_pad_id(text_batch):
    """RoBERTa offset: real token t (0-based) gets position row pad_id + 1 + t; padding gets pad_id."""
    enc = _encoder("text")
    emb = enc.input_encoder.local_encoder
    tokens = text_batch[:2]
    pad = tokens.eq(1)
    out = emb(tokens, pad)
    n = int((~pad[1]).sum())
    x = emb.embed_tokens(tokens[1, :n]) + emb.embed_positions(torch.arange(n) + 2)
    torch.testing.assert_close(out[1, :n], emb.layernorm(x))
    assert emb.embed_positions.num_embeddings == 128 + 1 + 1


def test_fully_padded_rows_are_finite(audio_batch, text_batch):
    """An utterance shorter than one frame and an all-padding text row: finite zeros, and the other
    rows are unchanged."""
    wav, wav_pad = audio_batch
    wav, wav_pad = wav.clone(), wav_pad.clone()
    wav_pad[2, 300:] = True  # 300 samples: no complete frame
    wav[2, 300:] = 0.0
    enc = _encoder("audio")
    out, pad = enc.forward_features(wav, wav_pad)
    assert pad[2].all() and torch.isfinite(out).all() and (out[2] == 0).all()
    ref, _ = enc.forward_features(*audio_batch)
    torch.testing.assert_close(out[[0, 1, 3, 4]], ref[[0, 1, 3, 4]], atol=1e-5, rtol=1e-5)

    tokens = text_batch.clone()
    tokens[3] = 1
    enc = _encoder("text")
    out, pad = enc.forward_features(tokens)
    assert pad[3].all() and torch.isfinite(out).all() and (out[3] == 0).all()
    torch.testing.assert_close(out[:3], enc.forward_features(text_batch)[0][:3])


def test_normalize_waveform_ignores_padding(spoken_digits):
    wav, pad = pad_waveforms(spoken_digits[:2])
    norm = normalize_waveform(wav, pad)
    assert (norm[pad] == 0).all()
    for i, w in enumerate(spoken_digits[:2]):
        w = torch.from_numpy(w).double()
        ref = (w - w.mean()) / torch.sqrt(w.var(unbiased=False) + 1e-5)
        torch.testing.assert_close(norm[i, : len(w)].double(), ref, atol=1e-5, rtol=1e-4)


# --- images ---------------------------------------------------------------------------------------


def _mae_sincos(embed_dim, grid_size):
    """MAE's get_2d_sincos_pos_embed (no CLS slot), in numpy."""
    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32))
    grid = np.stack(grid, axis=0).reshape(2, 1, grid_size, grid_size)
    return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)


def test_sincos_matches_mae():
    for dim, size in [(32, 8), (768, 14)]:
        ref = torch.from_numpy(_mae_sincos(dim, size)).float()
        torch.testing.assert_close(sincos_2d(dim, size), ref, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(30, 4)


def test_image_positions_are_fixed_and_cls_has_none(digit_images):
    x, _ = digit_images
    enc = _encoder("image")
    ie = enc.input_encoder
    assert "pos_embed" not in dict(enc.named_parameters()) and "pos_embed" not in enc.state_dict()
    feats, _ = ie.local_features(x[:2])
    torch.testing.assert_close(feats, ie.local_encoder(x[:2]) + sincos_2d(D, 8)[None])
    assert ie.cls_token.shape == (1, 1, D)


def test_input_validation(digit_images):
    img = _encoder("image")
    with pytest.raises(ValueError, match="expected images"):
        img.forward_features(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="expected images"):
        img.forward_features(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="expected waveforms"):
        _encoder("audio").forward_features(torch.zeros(2, 1, 1600))
    text = _encoder("text")
    with pytest.raises(ValueError, match="integer"):
        text.forward_features(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="exceed"):
        text.forward_features(torch.zeros(1, 129, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        text.forward_features(torch.tensor([[0, 4000]]))


# --- the masked path (pretraining) ----------------------------------------------------------------


def _local(modality, x, pad=None):
    enc = _encoder(modality)
    feats, fpad = enc.input_encoder.local_features(x, pad)
    return enc, feats, fpad


def _inputs(modality, digit_images, audio_batch, text_batch):
    return {"image": (digit_images[0][:3], None), "audio": (audio_batch[0][:3], audio_batch[1][:3]),
            "text": (text_batch[:3], None)}[modality]


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_all_visible_mask_equals_no_mask(modality, digit_images, audio_batch, text_batch):
    enc, feats, fpad = _local(modality, *_inputs(modality, digit_images, audio_batch, text_batch))
    ie = enc.input_encoder
    full = ie.contextualize(feats, fpad)
    masked = ie.contextualize(feats, fpad, mask_info(torch.zeros(feats.shape[:2], dtype=torch.bool), fpad))
    valid = torch.ones(full.x.shape[:2], dtype=torch.bool) if fpad is None else ~full.padding_mask
    for b in range(feats.shape[0]):
        n = int(valid[b].sum())
        torch.testing.assert_close(masked.x[b, :n], full.x[b][valid[b]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_masked_tokens_do_not_reach_visible_ones(modality, digit_images, audio_batch, text_batch):
    """Masked tokens are dropped (and, for audio, zeroed before the conv positions), so their
    content cannot change the visible outputs."""
    enc, feats, fpad = _local(modality, *_inputs(modality, digit_images, audio_batch, text_batch))
    ie = enc.input_encoder
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(feats.shape[:2], generator=g) < 0.5
    if fpad is not None:
        mask &= ~fpad
    info = mask_info(mask, fpad)
    out = ie.contextualize(feats, fpad, info)
    noisy = feats + mask.unsqueeze(-1) * torch.randn(feats.shape, generator=g) * 5
    out2 = ie.contextualize(noisy, fpad, info)
    keep = torch.ones(out.x.shape[:2], dtype=torch.bool) if out.padding_mask is None else ~out.padding_mask
    torch.testing.assert_close(out2.x[keep], out.x[keep], atol=1e-5, rtol=1e-5)
    n_extra = ie.num_extra_tokens
    assert out.x.shape[1] == n_extra + info.ids_keep.shape[1]


def test_audio_alibi_uses_original_positions(audio_batch):
    enc, feats, fpad = _local("audio", audio_batch[0][:2], audio_batch[1][:2])
    ie = enc.input_encoder
    mask = torch.zeros(feats.shape[:2], dtype=torch.bool)
    mask[:, 1::3] = True
    mask &= ~fpad
    info = mask_info(mask, fpad)
    with torch.no_grad():
        tokens = ie.contextualize(feats, fpad, info)
    torch.testing.assert_close(tokens.bias, ie.alibi(info.ids_keep))
    assert tokens.bias.shape == (2, 2, info.ids_keep.shape[1], info.ids_keep.shape[1])
    # ids 0 and 2 (frame 1 is masked): distance 2, slope 2^-4 for head 0 of 2
    assert math.isclose(float(tokens.bias[0, 0, 0, 1]), -2 * 2.0 ** -4)


def test_local_norm_eps_can_differ_from_norm_eps():
    """fairseq's text embedding and positional-conv LayerNorms use 1e-5 whatever model.norm_eps is;
    without the override they follow norm_eps, as before."""
    text = tiny_config("text").encoder
    text.norm_eps = 1e-6
    assert build_encoder(text).encoders["text"].local_encoder.layernorm.eps == 1e-6
    text.text.embed_norm_eps = 1e-5
    enc = build_encoder(text)
    assert enc.encoders["text"].local_encoder.layernorm.eps == 1e-5 and enc.blocks[0].norm1.eps == 1e-6
    audio = tiny_config("audio").encoder
    audio.norm_eps = 1e-6
    assert build_encoder(audio).encoders["audio"].positional_encoder.eps == 1e-6
    audio.audio.conv_pos_norm_eps = 1e-5
    assert build_encoder(audio).encoders["audio"].positional_encoder.eps == 1e-5


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_input_encoders_follow_the_protocol(modality):
    from d2v.model.encoders import InputEncoder

    enc = _encoder(modality).input_encoder
    assert isinstance(enc, InputEncoder)
    assert (enc.grid is not None) == (modality == "image")
