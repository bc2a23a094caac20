"""Real media files for server tests: scikit-learn's photographs and digits as image files,
espeak-ng speech as WAV/FLAC/OGG at several sample rates."""

import base64
import io

import numpy as np
import soundfile as sf
from PIL import Image
from realdata import speak


def photo(i: int = 0, size: int | None = 96) -> Image.Image:
    from sklearn.datasets import load_sample_images

    img = Image.fromarray(load_sample_images().images[i])  # china.jpg, flower.jpg (427 x 640 RGB)
    return img.resize((size * 3 // 2, size)) if size else img


def digit(i: int) -> Image.Image:
    from sklearn.datasets import load_digits

    x = load_digits().images[i]  # (8, 8) in [0, 16]
    return Image.fromarray((x * 255 / 16).astype(np.uint8), mode="L").resize((32, 32), Image.Resampling.NEAREST)


def image_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def audio_bytes(wav: np.ndarray, rate: int, fmt: str = "WAV", channels: int = 1, subtype: str | None = None) -> bytes:
    """An audio file of `wav`: 16-bit PCM (WAV, FLAC) or Vorbis (OGG) unless `subtype` says otherwise
    (e.g. "FLOAT": the float32 samples exactly)."""
    data = np.stack([wav] * channels, axis=1) if channels > 1 else wav
    buf = io.BytesIO()
    subtype = subtype or {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}[fmt]
    sf.write(buf, data, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def spoken(word: str, rate: int = 16000, fmt: str = "WAV", speed: int = 160, channels: int = 1) -> bytes:
    return audio_bytes(speak(word, speed=speed, rate=rate), rate, fmt, channels)


def b64(data: bytes, mime: str | None = None) -> str:
    s = base64.b64encode(data).decode()
    return f"data:{mime};base64,{s}" if mime else s
