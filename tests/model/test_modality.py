"""The torch-free modality facts agree with the modules that embody them: frame counts with the
feature extractor's real output, extra tokens and CLS use with the built encoders, numpy pooling
with the model's pooling; and reading them never imports torch."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from realdata import tiny_config

from d2v.model import build_encoder, preset
from d2v.model.encoders.audio import FeatureExtractor
from d2v.model.heads import pool
from d2v.model.modality import (
    HAS_CLS_TOKEN,
    MODALITIES,
    NUM_EXTRA_TOKENS,
    conv_frames,
    min_samples,
    pool_numpy,
    receptive_field,
)

REFERENCE = preset("audio", "base").encoder.audio.conv_layers
ODD = [[4, 7, 3], [4, 5, 4], [4, 2, 1], [4, 3, 2]]  # kernels and strides that share no factor


@pytest.mark.parametrize("conv_layers", [preset("audio", "tiny").encoder.audio.conv_layers, ODD],
                         ids=["reference-stride", "odd"])
def test_frame_counts_are_the_extractors_output_lengths(conv_layers):
    torch.manual_seed(0)
    extractor = FeatureExtractor([[4, k, s] for _, k, s in conv_layers]).eval()
    one, two = min_samples(conv_layers, 1), min_samples(conv_layers, 2)
    lengths = sorted({1, 2, one - 1, one, one + 1, two - 1, two, two + 1, 3 * two - 1, 1000, 1601, 3217})
    with torch.no_grad():
        for n in lengths:
            frames = extractor(torch.randn(1, n)).shape[1] if n >= one else 0  # a conv refuses a too-short input
            assert conv_frames(n, conv_layers) == frames, n
    batched = extractor.output_lengths(torch.tensor(lengths))
    assert batched.tolist() == [conv_frames(n, conv_layers) for n in lengths]
    assert conv_frames(np.array(lengths), conv_layers).tolist() == batched.tolist()
    assert conv_frames(one - 1, conv_layers) == 0 and conv_frames(one, conv_layers) == 1
    assert conv_frames(two - 1, conv_layers) == 1 and conv_frames(two, conv_layers) == 2


def test_reference_extractor_numbers():
    assert receptive_field(REFERENCE) == 400  # 25 ms at 16 kHz, a frame every 320 samples (20 ms)
    assert min_samples(REFERENCE, 2) == 720
    assert receptive_field(preset("audio", "tiny").encoder.audio.conv_layers) == 400
    assert conv_frames(16_000, REFERENCE) == 49


@pytest.mark.parametrize("modality", MODALITIES)
def test_extra_tokens_and_cls_are_the_encoders(modality):
    enc = build_encoder(tiny_config(modality).encoder)
    assert enc.num_extra_tokens == NUM_EXTRA_TOKENS[modality]
    assert enc.input_encoder.has_cls_token == HAS_CLS_TOKEN[modality]


@pytest.mark.parametrize("extra", [0, 1])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("padded", [False, True])
def test_numpy_pooling_is_the_models(extra, pooling, padded):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 9, 5, generator=g)
    pad = None
    if padded:
        pad = torch.zeros(3, 9, dtype=torch.bool)
        pad[1, 6:] = True
        pad[2, 2:] = True
    expected = pool(tokens, pad, pooling, extra).numpy()
    got = pool_numpy(tokens.numpy(), None if pad is None else pad.numpy(), pooling, extra)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_modality_facts_need_no_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import d2v.model, d2v.model.config\n"
            "from d2v.model.modality import conv_frames, pool_numpy, NUM_EXTRA_TOKENS\n"
            "from d2v.model.config import Modality, MODALITIES\n"
            "assert conv_frames(720, [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2) == 2\n")
    subprocess.run([sys.executable, "-c", code], check=True)
