"""Images of any common format and mode, converted to the model's channels and size.

- Formats: whatever Pillow decodes (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM, ...); the EXIF orientation
  is applied.
- Modes: palette, grey, 16-bit and float greys, CMYK, YCbCr, ... are converted to RGB (3 channels)
  or L (1 channel); an alpha channel is dropped.
- Pretraining augmentation (as the reference): random resized crop (area scale (s, 1), aspect ratio
  (3/4, 4/3), bicubic) and a random horizontal flip; evaluation takes the centred square and resizes
  it, bicubic. Then the checkpoint's mean/std normalization.
"""

import math

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from d2v.training.data.manifest import Record, report_skip
from d2v.training.data.sampler import Example

__all__ = ["ImageDataset", "center_box", "convert_mode", "load_image", "random_resized_box"]

Box = tuple[float, float, float, float]


def convert_mode(img: Image.Image, channels: int) -> Image.Image:
    """Any Pillow mode -> "RGB" (channels 3) or "L" (channels 1)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # high-bit-depth greys: scale to 8 bits
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        img = Image.fromarray(a.round().astype(np.uint8), "L")
    if img.mode in ("P", "PA") or (img.mode != "RGBA" and "transparency" in img.info):
        img = img.convert("RGBA")
    if channels == 1:
        return img.convert("L")
    if channels == 3:
        return img.convert("RGB")
    raise ValueError(f"images with {channels} channels are not supported (1 or 3)")


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


def center_box(width: int, height: int) -> Box:
    """The centred square with the shorter side."""
    s = min(width, height)
    x0, y0 = (width - s) / 2, (height - s) / 2
    return (x0, y0, x0 + s, y0 + s)


def image_tensor(img: Image.Image, size: int, box: Box, flip: bool, mean: Tensor, std: Tensor) -> Tensor:
    """Crop `box`, resize to size x size (bicubic), flip, scale to [0, 1], normalize: (C, size, size)."""
    img = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    a = np.asarray(img, dtype=np.float32) / 255.0
    x = torch.from_numpy(a).reshape(size, size, -1).permute(2, 0, 1)  # (C, H, W)
    return (x - mean[:, None, None]) / std[:, None, None]


class ImageDataset(torch.utils.data.Dataset):
    """Records -> normalized image tensors (C, size, size); items are (index, seed) pairs, the seed
    drawing the augmentation, so any sample is reproducible anywhere."""

    def __init__(self, records: list[Record], labels: list[str] | None, size: int, channels: int,
                 mean: list[float], std: list[float], train: bool, crop_scale_min: float = 0.2,
                 hflip: bool = True):
        self.records = records
        self.label_ids = {name: i for i, name in enumerate(labels or [])}
        self.size, self.channels, self.train = size, channels, train
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)
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
        x = image_tensor(img, self.size, box, flip, self.mean, self.std)
        return Example(x, self.label_ids.get(rec.label, -1) if rec.label is not None else -1)
