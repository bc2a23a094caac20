"""Datasets for training: the on-disk layout (`manifest`), readers per modality (`image`, `audio`,
`text`), the deterministic batch order (`sampler`), and the demo datasets of `d2v data` (`demo`)."""

from torch.utils.data import Dataset

from d2v.model.checkpoint import default_preprocessing
from d2v.model.config import EncoderConfig
from d2v.model.modality import receptive_field
from d2v.training.data.audio import AudioDataset, load_audio
from d2v.training.data.image import ImageDataset, load_image
from d2v.training.data.manifest import Record, dataset_labels, read_records, read_split, report_skip
from d2v.training.data.sampler import EpochBatches, Example, PretrainBatches, derive_seed
from d2v.training.data.text import PackedTextDataset, TextDataset, Tokenizer, record_text, train_tokenizer

__all__ = [
    "AudioDataset",
    "EpochBatches",
    "Example",
    "ImageDataset",
    "PackedTextDataset",
    "PretrainBatches",
    "Record",
    "TextDataset",
    "Tokenizer",
    "build_dataset",
    "dataset_labels",
    "derive_seed",
    "load_audio",
    "load_image",
    "read_records",
    "read_split",
    "record_text",
    "report_skip",
    "train_tokenizer",
]


def build_dataset(
    encoder: EncoderConfig,
    records: list[Record],
    labels: list[str] | None,
    train: bool,
    *,
    crop_scale_min: float = 0.2,
    hflip: bool = True,
    max_seconds: float = 5.0,
    trim_silence: bool = False,
    tokenizer: Tokenizer | None = None,
    max_tokens: int = 128,
) -> Dataset:
    """The reader for the encoder's modality, fed the way its checkpoint says (default_preprocessing).

    Args:
        train: draw augmentations (image crops and flips, audio crop offsets); else deterministic.
    """
    pre = default_preprocessing(encoder)
    if encoder.modality == "image":
        return ImageDataset(records, labels, pre["image_size"], pre["channels"], pre["mean"], pre["std"], train,
                            crop_scale_min, hflip)
    if encoder.modality == "audio":
        rate = encoder.audio.sample_rate
        return AudioDataset(records, labels, rate, int(max_seconds * rate), receptive_field(encoder.audio.conv_layers),
                            train, trim_silence)
    if tokenizer is None:
        raise ValueError("text data needs a tokenizer")
    return TextDataset(records, labels, tokenizer, min(max_tokens, encoder.text.max_positions))
