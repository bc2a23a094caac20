"""Input preprocessing that a checkpoint can ask for in its `preprocessing` section, shared by the
training readers and the server's decoders so that a model sees at serving time what it saw in
training. numpy only (the server imports it without torch).

- `trim_silence` (audio): cut leading and trailing silence, keeping a margin. A checkpoint trained on
  trimmed clips records `"trim_silence": {"threshold": T, "margin_s": M}`; its inputs are then
  trimmed the same way wherever they arrive.
"""

from typing import Any

import numpy as np

__all__ = ["TRIM_SILENCE", "apply_audio_preprocessing", "trim_silence"]

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
