"""Audio reader: any rate, channel count and common format becomes the model's mono waveform; the
crop/pad policy; a corrupt file is reported and skipped."""

import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from realdata import speak

from d2v.training.data.audio import AudioDataset, crop_waveform, load_audio
from d2v.training.data.manifest import Record


@pytest.fixture(scope="module")
def word() -> np.ndarray:
    return speak("seven", rate=16000)


@pytest.mark.parametrize(("fmt", "suffix", "rate", "channels"), [
    ("WAV", ".wav", 16000, 1), ("WAV", ".wav", 44100, 2), ("FLAC", ".flac", 8000, 1), ("FLAC", ".flac", 22050, 2),
    ("OGG", ".ogg", 48000, 1), ("AIFF", ".aiff", 11025, 2),
])
def test_rates_channels_formats(tmp_path, word, fmt, suffix, rate, channels):
    from scipy.signal import resample_poly

    g = np.gcd(rate, 16000)
    wav = resample_poly(word, rate // g, 16000 // g).astype(np.float32)
    data = np.stack([wav, 0.5 * wav], axis=1) if channels == 2 else wav
    path = tmp_path / f"clip{suffix}"
    sf.write(path, data, rate, format=fmt)
    out = load_audio(str(path), 16000)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - len(word)) <= 16000 * 0.002  # same duration
    n = min(len(out), len(word))
    corr = np.corrcoef(out[:n], word[:n])[0, 1]
    assert corr > (0.95 if rate >= 16000 else 0.8)  # 8 kHz keeps only the band below 4 kHz
    if fmt != "OGG" and rate >= 16000:  # lossless: the mono waveform comes back (the channel mean for stereo)
        scale = 0.75 if channels == 2 else 1.0
        err = np.abs(out[:n] - scale * word[:n]).mean() / np.abs(word).mean()
        assert err < 0.05


def test_crop_and_pad_policy():
    wav = np.arange(1000, dtype=np.float32)
    centred = crop_waveform(wav, 600, 400, None)
    assert len(centred) == 600 and centred[0] == 200  # centred crop in evaluation
    a = crop_waveform(wav, 600, 400, np.random.default_rng(1))
    b = crop_waveform(wav, 600, 400, np.random.default_rng(1))
    assert len(a) == 600 and np.array_equal(a, b)
    short = crop_waveform(wav[:100], 600, 400, None)
    assert len(short) == 400 and np.array_equal(short[:100], wav[:100]) and not short[100:].any()


def test_dataset_labels_and_crops(tmp_path, word):
    path = tmp_path / "seven.wav"
    sf.write(path, word, 16000)
    ds = AudioDataset([Record(str(path), "seven")], ["one", "seven"], 16000, 4000, 400, train=True)
    ex = ds[(0, 3)]
    assert ex.label == 1 and ex.x.shape == (4000,) and ex.x.dtype == torch.float32
    assert torch.equal(ex.x, ds[(0, 3)].x) and not torch.equal(ex.x, ds[(0, 4)].x)


def test_corrupt_files_reported_and_skipped(tmp_path, word, caplog):
    good = tmp_path / "good.flac"
    sf.write(good, word, 16000)
    truncated = tmp_path / "truncated.wav"
    sf.write(truncated, word, 16000)
    truncated.write_bytes(truncated.read_bytes()[:30])
    garbage = tmp_path / "noise.flac"
    garbage.write_bytes(np.random.default_rng(0).bytes(3000))
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    records = [Record(str(p)) for p in (good, truncated, garbage, empty)]
    ds = AudioDataset(records, None, 16000, 16000, 400, train=False)
    with caplog.at_level(logging.WARNING, logger="d2v.training.data"):
        items = [ds[(i, 0)] for i in range(len(records))]
    assert items[0] is not None and items[1:] == [None, None, None]
    for bad in records[1:]:
        assert any(bad.source in r.getMessage() and "cannot read the audio" in r.getMessage() for r in caplog.records)
