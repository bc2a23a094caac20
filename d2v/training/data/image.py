"""Images of any common format and mode, converted to the model's channels and size.

- Formats: whatever Pillow decodes (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM, ...); the EXIF orientation
  is applied.
- Modes and the evaluation transform: `d2v.preprocessing.prepare_image`, the one transform that
  `d2v serve` and `d2v embed` apply too (centred square, bicubic; alpha dropped; 16-bit greys scaled
  from their full range), so a model is served exactly the tensors it was evaluated on.
- Pretraining augmentation (the reference's): random resized crop (area scale (s, 1), aspect ratio
  (3/4, 4/3), bicubic) and a random horizontal flip, passed to the same transform as its box and flip.
  Then the checkpoint's mean/std normalization.
"""

import math

import numpy as np
import torch
from PIL import Image, ImageOps

from d2v.preprocessing import Box, center_box, convert_mode, prepare_image
from d2v.training.data.manifest import Record, report_skip
from d2v.training.data.sampler import Example

__all__ = ["ImageDataset", "center_box", "convert_mode", "load_image", "random_resized_box"]


def load_image(path: str, channels: int) -> Image.Image:
    """Decode fully (so truncated files fail here) and convert to `channels`."""
    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        return convert_mode(img, channels)


def random_resized_box(width: int, height: int, rng: np.random.Generator, scale: tuple[float, float],
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Box:
    """torchvision `RandomResizedCrop.get_params`: a box of random area and aspect ratio."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            x0 = int(rng.integers(0, width - w + 1))
            y0 = int(rng.integers(0, height - h + 1))
            return (x0, y0, x0 + w, y0 + h)
    return center_box(width, height)


class ImageDataset(torch.utils.data.Dataset):
    """Records -> normalized image tensors (C, size, size); items are (index, seed) pairs, the seed
    drawing the augmentation, so any sample is reproducible anywhere."""

    def __init__(self, records: list[Record], labels: list[str] | None, size: int, channels: int,
                 mean: list[float], std: list[float], train: bool, crop_scale_min: float = 0.2,
                 hflip: bool = True):
        self.records = records
        self.label_ids = {name: i for i, name in enumerate(labels or [])}
        self.size, self.channels, self.train = size, channels, train
        self.mean, self.std = list(mean), list(std)
        self.scale = (crop_scale_min, 1.0)
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, int]) -> Example | None:
        index, seed = item
        rec = self.records[index]
        try:
            img = load_image(rec.source, self.channels)
        except Exception as e:  # noqa: BLE001 - any decoder failure: report the file and skip it
            report_skip(rec.source, f"cannot read the image ({type(e).__name__}: {e})")
            return None
        if self.train:
            rng = np.random.default_rng(seed)
            box = random_resized_box(img.width, img.height, rng, self.scale)
            flip = self.hflip and bool(rng.random() < 0.5)
        else:
            box, flip = center_box(img.width, img.height), False
        x = torch.from_numpy(prepare_image(img, self.size, self.channels, self.mean, self.std, box, flip))
        return Example(x, self.label_ids.get(rec.label, -1) if rec.label is not None else -1)
