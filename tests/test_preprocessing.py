"""Shared input preprocessing: silence trimming, and the one image transform that training evaluation,
the server and batch jobs share."""

import numpy as np
import pytest
from PIL import Image
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


# ---- images: one transform for training evaluation, the server and batch jobs --------------------

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _photo(width: int = 96, height: int = 64) -> Image.Image:
    """A real photograph (scikit-learn's china.jpg), not square."""
    from sklearn.datasets import load_sample_images

    return Image.fromarray(load_sample_images().images[0]).resize((width, height))


def _with_alpha(img: Image.Image) -> Image.Image:
    """A left-to-right alpha ramp from fully transparent to opaque."""
    out = img.convert("RGBA")
    out.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, img.width).astype(np.uint8), (img.height, 1))))
    return out


def _grey16(img: Image.Image) -> Image.Image:
    """A 16-bit grey image using its whole range (a plain Pillow conversion saturates it at 255)."""
    return Image.fromarray((np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))


def _palette_with_transparency(img: Image.Image) -> Image.Image:
    p = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    p.info["transparency"] = int(np.asarray(p)[0, 0])  # the colour of the top-left pixel is transparent
    return p


IMAGES = {  # name: (image, file format, file suffix)
    "RGB landscape": (lambda: _photo(96, 64), "PNG", ".png"),
    "RGB portrait JPEG": (lambda: _photo(50, 80), "JPEG", ".jpg"),
    "RGBA": (lambda: _with_alpha(_photo()), "PNG", ".png"),
    "LA": (lambda: _with_alpha(_photo()).convert("LA"), "PNG", ".png"),
    "P": (lambda: _photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG", ".png"),
    "P with transparency": (lambda: _palette_with_transparency(_photo()), "PNG", ".png"),
    "GIF with transparency": (lambda: _palette_with_transparency(_photo(70, 90)), "GIF", ".gif"),
    "CMYK": (lambda: _photo().convert("CMYK"), "JPEG", ".jpg"),
    "CMYK TIFF": (lambda: _photo(64, 96).convert("CMYK"), "TIFF", ".tif"),
    "I;16": (lambda: _grey16(_photo(80, 48)), "PNG", ".png"),
    "L": (lambda: _photo().convert("L"), "PNG", ".png"),
}


def _file(tmp_path, name: str) -> tuple[Image.Image, bytes, str]:
    make, fmt, suffix = IMAGES[name]
    img = make()
    path = tmp_path / f"image{suffix}"
    img.save(path, format=fmt)
    return img, path.read_bytes(), str(path)


def _served(data: bytes, channels: int = 3) -> np.ndarray:
    from d2v.server.decode import make_input_decoder

    mean, std = (MEAN, STD) if channels == 3 else ([0.5], [0.25])
    config = {"modality": "image", "encoder": {"image": {"image_size": 32, "patch_size": 4}},
              "preprocessing": {"image_size": 32, "channels": channels, "mean": mean, "std": std}}
    return make_input_decoder(config, None, 10_000_000, 1, 0)(data, 0).data


def _trained(path: str, channels: int = 3) -> np.ndarray:
    from d2v.training.data.image import ImageDataset
    from d2v.training.data.manifest import Record

    mean, std = (MEAN, STD) if channels == 3 else ([0.5], [0.25])
    return ImageDataset([Record(path)], None, 32, channels, mean, std, train=False)[(0, 0)].x.numpy()


@pytest.mark.parametrize("name", list(IMAGES))
@pytest.mark.parametrize("channels", [3, 1])
def test_training_evaluation_and_serving_feed_the_model_identical_tensors(tmp_path, name, channels):
    img, data, path = _file(tmp_path, name)
    assert img.mode == {"RGB landscape": "RGB", "RGB portrait JPEG": "RGB", "GIF with transparency": "P",
                        "P with transparency": "P", "CMYK TIFF": "CMYK"}.get(name, name)
    served = _served(data, channels)
    assert served.shape == (channels, 32, 32) and served.dtype == np.float32
    np.testing.assert_array_equal(_trained(path, channels), served)  # bit for bit: one transform
    assert served.std() > 0.1  # a picture, not a blank


def test_the_evaluation_transform_crops_the_centre_drops_alpha_and_scales_16_bit(tmp_path):
    from d2v.preprocessing import center_box, prepare_image

    photo = _photo(96, 64)
    x = prepare_image(photo, 32, 3, MEAN, STD)
    np.testing.assert_array_equal(_served(_png(photo)), x)
    squashed = prepare_image(photo.resize((64, 64), Image.Resampling.BICUBIC), 32, 3, MEAN, STD)
    assert np.abs(x - squashed).max() > 1.0  # the centre at its aspect ratio, not the whole image squashed
    assert center_box(96, 64) == (16.0, 0.0, 80.0, 64.0) and center_box(50, 80) == (0.0, 15.0, 50.0, 65.0)

    rgba = _with_alpha(photo)
    np.testing.assert_array_equal(_served(_png(rgba)), x)  # alpha dropped: the colour under it, as the reference
    grey = photo.convert("L")
    np.testing.assert_array_equal(_served(_png(_grey16(grey)), 1), prepare_image(grey, 32, 1, [0.5], [0.25]))
    dark = Image.fromarray(np.full((8, 8), 1000, np.uint16))  # no stretching: 1000/65535 of full scale
    assert np.allclose(prepare_image(dark, 8, 1, [0.0], [1.0]), round(1000 / 257) / 255)


def _png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
