"""Input preprocessing shared by the training readers, the server's decoders and batch jobs, so that
a model sees at serving time what it saw in training. numpy and Pillow only (the server imports it
without torch).

- `trim_silence` (audio): cut leading and trailing silence, keeping a margin. A checkpoint trained on
  trimmed clips records `"trim_silence": {"threshold": T, "margin_s": M}`; its inputs are then
  trimmed the same way wherever they arrive.
- `prepare_image` (images): the one image transform. Evaluation (training's validation and test
  sets, `d2v serve`, `d2v embed`) takes the centred square of the shorter side and resizes it to the
  model's size (bicubic); training's augmentation passes its own random box and flip. Before that,
  `convert_mode` brings any Pillow mode to the model's channels: RGB (or L for 1-channel models) the
  way the reference's loader does (`Image.convert("RGB")`: alpha is dropped, palette images take
  their colours, CMYK/YCbCr are converted), except 16-bit and 32-bit integer greys, which are scaled
  from their full 16-bit range (0..65535 -> 0..255) instead of being clipped at 255 by Pillow. Then
  /255 and the checkpoint's mean/std. See docs/data.md for why this transform.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["TRIM_SILENCE", "Box", "apply_audio_preprocessing", "center_box", "convert_mode", "prepare_image",
           "trim_silence"]

Box = tuple[float, float, float, float]
"""(left, upper, right, lower) in pixels, as Pillow takes it."""

_WIDE_GREYS = ("I;16", "I;16L", "I;16B", "I;16N", "I")

TRIM_SILENCE: dict[str, float] = {"threshold": 0.01, "margin_s": 0.05}
"""The default: samples below 1% of the clip's peak are silence; keep 50 ms around the sound."""


def trim_silence(wav: np.ndarray, sample_rate: int, threshold: float = TRIM_SILENCE["threshold"],
                 margin_s: float = TRIM_SILENCE["margin_s"]) -> np.ndarray:
    """(L,) -> (L',): from `margin_s` before the first sample whose magnitude exceeds `threshold` x the
    peak to `margin_s` after the last one. Silent clips are returned unchanged; trimming twice changes
    nothing more."""
    peak = float(np.abs(wav).max(initial=0.0))
    loud = np.flatnonzero(np.abs(wav) > threshold * (peak + 1e-9))
    if not len(loud):
        return wav
    margin = int(margin_s * sample_rate)
    return wav[max(int(loud[0]) - margin, 0): int(loud[-1]) + margin]


def apply_audio_preprocessing(wav: np.ndarray, sample_rate: int, preprocessing: dict[str, Any]) -> np.ndarray:
    """What a checkpoint's preprocessing asks of a waveform already at its rate (trimming)."""
    trim = preprocessing.get("trim_silence")
    if trim:
        wav = trim_silence(wav, sample_rate, **{**TRIM_SILENCE, **trim})
    return wav


def convert_mode(img: "Image.Image", channels: int) -> "Image.Image":
    """Any Pillow mode -> "RGB" (channels 3) or "L" (channels 1); an image already in that mode is
    returned as it is.

    Alpha is dropped (the colour under it is kept, as the reference's `convert("RGB")` does);
    16-bit greys (and 32-bit integer ones, clipped to 0..65535) are scaled by 255/65535 and rounded;
    float greys ("F") keep Pillow's reading (values on the 0..255 scale, clipped)."""
    from PIL import Image

    if channels not in (1, 3):
        raise ValueError(f"images with {channels} channels are not supported (1 or 3)")
    target = "L" if channels == 1 else "RGB"
    if img.mode == target:
        return img
    if img.mode in _WIDE_GREYS:
        a = np.clip(np.asarray(img, dtype=np.float64), 0, 65535) / 257.0
        img = Image.fromarray(np.round(a).astype(np.uint8), "L")
    elif img.mode in ("P", "PA") or (img.mode != "RGBA" and "transparency" in img.info):
        img = img.convert("RGBA")  # palette transparency as alpha (dropped below): no Pillow warning
    return img.convert(target)


def center_box(width: int, height: int) -> Box:
    """The centred square with the shorter side."""
    s = min(width, height)
    x0, y0 = (width - s) / 2, (height - s) / 2
    return (x0, y0, x0 + s, y0 + s)


def prepare_image(img: "Image.Image", size: int, channels: int, mean: Sequence[float], std: Sequence[float],
                  box: Box | None = None, flip: bool = False) -> np.ndarray:
    """A decoded image (EXIF orientation already applied) -> the model's input, float32 (C, size, size).

    Args:
        box: the region to take; default the evaluation's centred square (`center_box`).
        flip: mirror left-right after resizing (training augmentation).
    """
    from PIL import Image

    img = convert_mode(img, channels)
    img = img.resize((size, size), Image.Resampling.BICUBIC, box=box or center_box(img.width, img.height))
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    x = np.asarray(img, dtype=np.float32).reshape(size, size, channels).transpose(2, 0, 1) / np.float32(255.0)
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)
