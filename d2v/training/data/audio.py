"""Audio of any common format, rate and channel count, as the model's mono waveform.

- Formats: what libsndfile reads (WAV, FLAC, OGG/Vorbis, Opus, AIFF, AU, CAF, and MP3 with
  libsndfile >= 1.1).
- Channels are averaged to mono; the rate is converted to the model's with a polyphase filter
  (scipy `resample_poly`).
- Length policy: a clip longer than `max_samples` is cropped to it, at a random offset while training
  and centred otherwise; a clip shorter than the feature extractor's receptive field (400 samples,
  25 ms, for the reference extractor) is zero-padded to it. Batches are zero-padded to their
  longest clip and carry a padding mask, which the model honours (the reference instead crops a
  pretraining batch to its shortest clip).
- Silence (`trim_silence`): leading and trailing silence cut as `d2v.preprocessing` does it;
  the checkpoint records it, and the server trims its inputs the same way.
"""

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from d2v.preprocessing import TRIM_SILENCE, trim_silence
from d2v.training.data.manifest import Record, report_skip
from d2v.training.data.sampler import Example

__all__ = ["AudioDataset", "crop_waveform", "load_audio"]


def load_audio(path: str, sample_rate: int) -> np.ndarray:
    """(L,) float32 mono at `sample_rate`."""
    data, sr = sf.read(path, dtype="float32", always_2d=True)  # (L, C)
    if data.shape[0] == 0:
        raise ValueError("the file holds no samples")
    wav = data.mean(axis=1)
    if sr != sample_rate:
        g = np.gcd(sr, sample_rate)
        wav = resample_poly(wav, sample_rate // g, sr // g).astype(np.float32)
    if not np.isfinite(wav).all():
        raise ValueError("the waveform holds NaN or infinite samples")
    return np.ascontiguousarray(wav, dtype=np.float32)


def crop_waveform(wav: np.ndarray, max_samples: int, min_samples: int,
                  rng: np.random.Generator | None) -> np.ndarray:
    """Crop to `max_samples` (random offset with `rng`, else centred), zero-pad to `min_samples`."""
    if len(wav) > max_samples:
        extra = len(wav) - max_samples
        start = int(rng.integers(0, extra + 1)) if rng is not None else extra // 2
        wav = wav[start:start + max_samples]
    if len(wav) < min_samples:
        wav = np.pad(wav, (0, min_samples - len(wav)))
    return wav


class AudioDataset(torch.utils.data.Dataset):
    """Records -> (L,) float32 waveforms at the model's rate; items are (index, seed) pairs."""

    def __init__(self, records: list[Record], labels: list[str] | None, sample_rate: int, max_samples: int,
                 min_samples: int, train: bool, trim: bool = False):
        self.records = records
        self.trim = trim
        self.label_ids = {name: i for i, name in enumerate(labels or [])}
        self.sample_rate, self.max_samples, self.min_samples = sample_rate, max_samples, min_samples
        self.train = train

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, int]) -> Example | None:
        index, seed = item
        rec = self.records[index]
        try:
            wav = load_audio(rec.source, self.sample_rate)
        except Exception as e:  # noqa: BLE001 - any decoder failure: report the file and skip it
            report_skip(rec.source, f"cannot read the audio ({type(e).__name__}: {e})")
            return None
        if self.trim:
            wav = trim_silence(wav, self.sample_rate, **TRIM_SILENCE)
        rng = np.random.default_rng(seed) if self.train else None
        wav = crop_waveform(wav, self.max_samples, self.min_samples, rng)
        return Example(torch.from_numpy(wav), self.label_ids.get(rec.label, -1) if rec.label is not None else -1)
