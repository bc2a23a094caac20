"""Shared fixtures: small batches of real data (scikit-learn digits, espeak-ng speech, WordNet
glosses), and imported models (fairseq and HF, converted and exported once per session). Plain
helpers live in realdata.py and imported.py."""

import numpy as np
import pytest
import torch
from imported import Imported
from realdata import WORDNET, missing, speak


@pytest.fixture(scope="session")
def imported(tmp_path_factory) -> Imported:
    """Every imported model kind (`imported.KINDS`), converted and exported on first use."""
    return Imported(tmp_path_factory.mktemp("imported"))


@pytest.fixture(scope="session")
def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Eight real handwritten digits, upsampled to (8, 3, 32, 32) in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:8], dtype=torch.float32) / 16.0  # (8, 8, 8)
    x = torch.nn.functional.interpolate(x[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.tensor(d.target[:8])


@pytest.fixture(scope="session")
def spoken_digits() -> list[np.ndarray]:
    """Five spoken words of different lengths at 16 kHz."""
    return [speak(w, speed=s) for w, s in [("seven", 160), ("three", 120), ("zero", 200), ("eight", 140), ("one", 170)]]


@pytest.fixture(scope="session")
def glosses() -> list[str]:
    """Real English sentences: the first 64 WordNet noun glosses."""
    f = WORDNET / "data.noun"
    if not f.is_file():
        missing("wordnet-base")
    out = []
    for line in f.read_text(errors="replace").splitlines():
        if line.startswith(" ") or "|" not in line:
            continue
        out.append(line.split("|", 1)[1].strip())
        if len(out) == 64:
            break
    return out
