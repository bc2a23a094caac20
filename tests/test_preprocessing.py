"""Shared input preprocessing: silence trimming."""

import numpy as np
from realdata import speak

from d2v.preprocessing import apply_audio_preprocessing, trim_silence


def test_trim_keeps_the_sound_and_a_margin():
    word = speak("seven", rate=16000)
    wav = np.concatenate([np.zeros(8000, np.float32), word, np.zeros(4000, np.float32)])
    out = trim_silence(wav, 16000)
    loud = np.flatnonzero(np.abs(wav) > 0.01 * np.abs(wav).max())
    assert out[0] == wav[loud[0] - 800] and len(out) == loud[-1] - loud[0] + 1600  # 50 ms either side (the end exclusive)
    np.testing.assert_array_equal(trim_silence(out, 16000), out)  # idempotent
    silent = np.zeros(5000, np.float32)
    assert trim_silence(silent, 16000) is silent


def test_applied_only_when_asked():
    wav = np.concatenate([np.zeros(4000, np.float32), np.ones(100, np.float32), np.zeros(4000, np.float32)])
    assert len(apply_audio_preprocessing(wav, 16000, {"sample_rate": 16000})) == len(wav)
    assert len(apply_audio_preprocessing(wav, 16000, {"trim_silence": {"threshold": 0.5, "margin_s": 0.01}})) == 419
