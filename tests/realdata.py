"""Real data and tiny configs for tests: scikit-learn digits, espeak-ng speech, WordNet glosses.
Plain functions (importable from any test as `from realdata import ...`); fixtures in conftest.py."""

import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from d2v.model import ModelConfig, preset

WORDNET = Path("/usr/share/wordnet")


def missing(package: str) -> None:
    """A Debian package the real test data needs is absent: fail in CI (where `make test` installs
    it), skip elsewhere."""
    msg = f"the Debian package {package} is not installed (`make setup` installs it)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)

def tiny_config(modality: str, dim: int = 32, depth: int = 2, heads: int = 2) -> ModelConfig:
    """The tiny preset shrunk further for tests: dim 32, 2 shared blocks."""
    cfg = preset(modality, "tiny")
    cfg.encoder.embed_dim, cfg.encoder.depth, cfg.encoder.num_heads = dim, depth, heads
    cfg.decoder.dim = dim
    cfg.decoder.groups = 1 if cfg.decoder.groups == 1 else 4
    cfg.target.top_k = depth
    cfg.mask.clone_batch = 3
    return cfg


def speak(text: str, voice: str = "en", speed: int = 160, rate: int = 16000) -> np.ndarray:
    """Real speech from espeak-ng, resampled to `rate`, as float32 mono."""
    import soundfile as sf
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        missing("espeak-ng")
    out = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                         check=True, capture_output=True).stdout
    wav, sr = sf.read(io.BytesIO(out), dtype="float32")
    g = np.gcd(sr, rate)
    return resample_poly(wav, rate // g, sr // g).astype(np.float32)


def pad_waveforms(wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) zero-padded batch and its (B, L) padding mask (True at padding)."""
    n = max(len(w) for w in wavs)
    x = torch.zeros(len(wavs), n)
    pad = torch.ones(len(wavs), n, dtype=torch.bool)
    for i, w in enumerate(wavs):
        x[i, : len(w)] = torch.from_numpy(w)
        pad[i, : len(w)] = False
    return x, pad


def byte_tokens(texts: list[str], vocab: int, max_len: int = 40, pad_id: int = 1) -> torch.Tensor:
    """Token ids from UTF-8 bytes (offset past the 4 specials, folded into `vocab`): <s> text </s>,
    padded with `pad_id`. Real text without a trained tokenizer."""
    rows = [[0] + [4 + b % (vocab - 4) for b in t.encode()[: max_len - 2]] + [2] for t in texts]
    n = max(len(r) for r in rows)
    return torch.tensor([r + [pad_id] * (n - len(r)) for r in rows])
