"""Shared fixtures: small batches of real data (scikit-learn digits, espeak-ng speech, WordNet
glosses) and tiny model configs."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from d2v.model import ModelConfig, preset

WORDNET = Path("/usr/share/wordnet")


def tiny_config(modality: str, dim: int = 32, depth: int = 2, heads: int = 2) -> ModelConfig:
    """The tiny preset shrunk further for tests: dim 32, 2 shared blocks."""
    cfg = preset(modality, "tiny")
    cfg.encoder.embed_dim, cfg.encoder.depth, cfg.encoder.num_heads = dim, depth, heads
    cfg.decoder.dim = dim
    cfg.decoder.groups = 1 if cfg.decoder.groups == 1 else 4
    cfg.target.top_k = depth
    cfg.mask.clone_batch = 3
    return cfg


@pytest.fixture(scope="session")
def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Eight real handwritten digits, upsampled to (8, 3, 32, 32) in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:8], dtype=torch.float32) / 16.0  # (8, 8, 8)
    x = torch.nn.functional.interpolate(x[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.tensor(d.target[:8])


def speak(text: str, voice: str = "en", speed: int = 160, rate: int = 16000) -> np.ndarray:
    """Real speech from espeak-ng, resampled to `rate`, as float32 mono."""
    import soundfile as sf
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make setup installs it)")
    out = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                         check=True, capture_output=True).stdout
    import io

    wav, sr = sf.read(io.BytesIO(out), dtype="float32")
    g = np.gcd(sr, rate)
    return resample_poly(wav, rate // g, sr // g).astype(np.float32)


@pytest.fixture(scope="session")
def spoken_digits() -> list[np.ndarray]:
    """Five spoken words of different lengths at 16 kHz."""
    return [speak(w, speed=s) for w, s in [("seven", 160), ("three", 120), ("zero", 200), ("eight", 140), ("one", 170)]]


def pad_waveforms(wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) zero-padded batch and its (B, L) padding mask (True at padding)."""
    n = max(len(w) for w in wavs)
    x = torch.zeros(len(wavs), n)
    pad = torch.ones(len(wavs), n, dtype=torch.bool)
    for i, w in enumerate(wavs):
        x[i, : len(w)] = torch.from_numpy(w)
        pad[i, : len(w)] = False
    return x, pad


@pytest.fixture(scope="session")
def glosses() -> list[str]:
    """Real English sentences: WordNet noun glosses (falls back to a fixed list)."""
    f = WORDNET / "data.noun"
    if not f.is_file():
        pytest.skip("wordnet-base is not installed (make setup installs it)")
    out = []
    for line in f.read_text(errors="replace").splitlines():
        if line.startswith(" ") or "|" not in line:
            continue
        out.append(line.split("|", 1)[1].strip())
        if len(out) == 64:
            break
    return out


def byte_tokens(texts: list[str], vocab: int, max_len: int = 40, pad_id: int = 1) -> torch.Tensor:
    """Token ids from UTF-8 bytes (offset past the 4 specials, folded into `vocab`): <s> text </s>,
    padded with `pad_id`. Real text without a trained tokenizer."""
    rows = [[0] + [4 + b % (vocab - 4) for b in t.encode()[: max_len - 2]] + [2] for t in texts]
    n = max(len(r) for r in rows)
    return torch.tensor([r + [pad_id] * (n - len(r)) for r in rows])
