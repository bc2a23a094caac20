"""Image reader: every common format and mode becomes the model's channels and size; augmentation
is reproducible from its seed; a corrupt file is reported and skipped."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from d2v.training.data.image import ImageDataset, center_box, convert_mode, load_image, random_resized_box
from d2v.training.data.manifest import Record

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photograph (scikit-learn's china.jpg), reduced to 96 x 64."""
    from sklearn.datasets import load_sample_images

    return Image.fromarray(load_sample_images().images[0]).resize((96, 64))


def _variants(photo: Image.Image) -> dict[str, Image.Image]:
    grey16 = Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    return {
        "RGB": photo, "L": photo.convert("L"), "RGBA": rgba, "P": photo.convert("P"), "CMYK": photo.convert("CMYK"),
        "LA": photo.convert("LA"), "1": photo.convert("1"), "I;16": grey16, "F": photo.convert("F"),
        "YCbCr": photo.convert("YCbCr"),
    }


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK", "LA", "1", "I;16", "F", "YCbCr"])
def test_every_mode_converts(photo, mode):
    img = _variants(photo)[mode]
    assert img.mode == mode
    rgb, grey = convert_mode(img, 3), convert_mode(img, 1)
    assert (rgb.mode, rgb.size) == ("RGB", photo.size)
    assert (grey.mode, grey.size) == ("L", photo.size)
    if mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):  # colour survives (within palette / colour-space rounding)
        diff = np.abs(np.asarray(rgb, dtype=float) - np.asarray(photo, dtype=float)).mean()
        assert diff < 20


@pytest.mark.parametrize(("fmt", "suffix", "mode"), [
    ("PNG", ".png", "RGBA"), ("PNG", ".png", "P"), ("PNG", ".png", "I;16"), ("JPEG", ".jpg", "RGB"),
    ("JPEG", ".jpg", "L"), ("JPEG", ".jpg", "CMYK"), ("BMP", ".bmp", "RGB"), ("GIF", ".gif", "P"),
    ("TIFF", ".tif", "RGB"), ("TIFF", ".tif", "F"), ("WEBP", ".webp", "RGB"), ("PPM", ".ppm", "RGB"),
])
def test_formats_decode_to_model_input(tmp_path, photo, fmt, suffix, mode):
    path = tmp_path / f"img{suffix}"
    _variants(photo)[mode].save(path, format=fmt)
    ds = ImageDataset([Record(str(path), "a")], ["a"], 32, 3, MEAN, STD, train=False)
    x, label = ds[(0, 0)]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert label == 0
    grey = ImageDataset([Record(str(path))], None, 16, 1, [0.5], [0.5], train=False)[(0, 0)]
    assert grey.x.shape == (1, 16, 16) and grey.label == -1


def test_exif_orientation_applied(tmp_path, photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "rotated.jpg"
    photo.save(path, exif=exif)
    assert load_image(str(path), 3).size == (photo.height, photo.width)


def test_augmentation_reproducible_and_varied(tmp_path, photo):
    path = tmp_path / "p.png"
    photo.save(path)
    ds = ImageDataset([Record(str(path))], None, 32, 3, MEAN, STD, train=True, crop_scale_min=0.2)
    a, b, c = ds[(0, 7)].x, ds[(0, 7)].x, ds[(0, 8)].x
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    evaluation = ImageDataset([Record(str(path))], None, 32, 3, MEAN, STD, train=False)
    assert torch.equal(evaluation[(0, 1)].x, evaluation[(0, 2)].x)  # no randomness in evaluation


def test_random_resized_box_bounds():
    rng = np.random.default_rng(0)
    for _ in range(200):
        x0, y0, x1, y1 = random_resized_box(96, 64, rng, (0.2, 1.0))
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 64
        assert (x1 - x0) * (y1 - y0) >= 0.2 * 96 * 64 * 0.9  # area scale (up to rounding)
    assert center_box(96, 64) == (16.0, 0.0, 80.0, 64.0)


def test_corrupt_and_missing_files_are_reported_and_skipped(tmp_path, photo, caplog):
    good = tmp_path / "good.png"
    photo.save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image")
    records = [Record(str(good)), Record(str(truncated)), Record(str(garbage)), Record(str(tmp_path / "gone.png"))]
    ds = ImageDataset(records, None, 32, 3, MEAN, STD, train=True)
    with caplog.at_level(logging.WARNING, logger="d2v.training.data"):
        items = [ds[(i, 0)] for i in range(len(records))]
    assert items[0] is not None and items[1:] == [None, None, None]
    for bad in records[1:]:
        assert any(bad.source in r.getMessage() and "cannot read the image" in r.getMessage() for r in caplog.records)
