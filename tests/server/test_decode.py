"""Decoding of real images, audio and text into model inputs, and the typed errors naming the input."""

import io

import numpy as np
import pytest
from media import audio_bytes, b64, digit, image_bytes, photo, spoken
from PIL import Image
from realdata import speak

from d2v.server.decode import InputError, InputTooLarge, UnsupportedMedia, make_input_decoder, media_bytes

PRE_IMAGE = {"modality": "image", "encoder": {"image": {"image_size": 32, "patch_size": 4}},
             "preprocessing": {"image_size": 32, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}}
PRE_AUDIO = {"modality": "audio", "encoder": {"audio": {"conv_layers": [[8, 10, 5]] + [[8, 3, 2]] * 4 + [[8, 2, 2]] * 2}},
             "preprocessing": {"sample_rate": 16000, "normalize": True}}


def image_decoder(max_pixels: int = 10_000_000):
    return make_input_decoder(PRE_IMAGE, None, max_pixels, 10, 0)


def audio_decoder(seconds: float = 10.0):
    return make_input_decoder(PRE_AUDIO, None, 1, seconds, 0)


@pytest.mark.parametrize("fmt,mode", [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("WEBP", "RGB"),
                                      ("BMP", "L"), ("GIF", "P"), ("TIFF", "CMYK"), ("PNG", "I;16")])
def test_image_formats_and_modes(fmt, mode):
    if mode == "I;16":  # 16-bit samples span 0..65535 (an 8-bit digit's values scaled up, as a 16-bit scan's)
        img = Image.fromarray(np.asarray(digit(3), dtype=np.uint16) * 257)
    else:
        img = photo(0).convert(mode)
    x = image_decoder()(b64(image_bytes(img, fmt)), 0).data
    assert x.shape == (3, 32, 32) and x.dtype == np.float32 and np.isfinite(x).all()
    assert x.std() > 0.1  # a real picture, not a blank


def test_image_exif_orientation_is_applied():
    img = photo(1, size=64)  # 96 x 64, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    tagged = image_bytes(img, "PNG", exif=exif)
    upright = image_bytes(img.transpose(Image.Transpose.ROTATE_270), "PNG")
    dec = image_decoder()
    np.testing.assert_allclose(dec(b64(tagged), 0).data, dec(b64(upright), 0).data, atol=1e-6)


def test_image_pixel_limit_is_checked_before_decoding():
    big = image_bytes(Image.new("L", (4000, 3000)), "PNG")  # 12 Mpx of zeros: a few kB compressed
    with pytest.raises(InputTooLarge, match="input 2: image of 4000x3000"):
        image_decoder(max_pixels=1_000_000)(b64(big), 2)


def test_image_errors_name_the_input():
    dec = image_decoder()
    with pytest.raises(InputError, match="input 1: not a readable image"):
        dec(b64(b"this is not an image at all"), 1)
    with pytest.raises(InputError, match="input 0: not valid base64"):
        dec("!!not base64!!", 0)
    with pytest.raises(UnsupportedMedia, match="audio/wav"):
        dec(b64(spoken("one"), "audio/wav"), 0)
    truncated = image_bytes(photo(0), "JPEG")[:200]
    with pytest.raises(InputError):
        dec(b64(truncated), 0)


def test_data_uri_and_plain_base64_give_the_same_bytes():
    data = image_bytes(digit(0))
    assert media_bytes(b64(data, "image/png"), 0, "image") == media_bytes(b64(data), 0, "image") == data


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_audio_any_rate_and_format_is_resampled(rate, fmt):
    ref = speak("seven", rate=16000)
    x = audio_decoder()(b64(spoken("seven", rate=rate, fmt=fmt)), 0)
    assert x.data.dtype == np.float32 and abs(len(x.data) - len(ref)) <= 16000 * 0.01
    n = min(len(ref), len(x.data))
    corr = np.corrcoef(ref[:n], x.data[:n])[0, 1]
    assert corr > (0.9 if fmt != "OGG" else 0.5)  # the same speech after resampling (and lossy coding)


def test_audio_stereo_becomes_mono():
    mono = audio_decoder()(b64(spoken("three")), 0).data
    stereo = audio_decoder()(b64(spoken("three", channels=2)), 0).data
    np.testing.assert_allclose(stereo, mono, atol=1e-4)


def test_audio_is_trimmed_when_the_checkpoint_asks():
    from d2v.preprocessing import TRIM_SILENCE, trim_silence

    clip = spoken("three")  # espeak-ng leaves ~0.3 s of silence around the word
    plain = audio_decoder()(b64(clip), 0).data
    config = {**PRE_AUDIO, "preprocessing": {**PRE_AUDIO["preprocessing"], "trim_silence": TRIM_SILENCE}}
    trimmed = make_input_decoder(config, None, 1, 10, 0)(b64(clip), 0)
    assert len(trimmed.data) < len(plain) - 16000 * 0.1 and trimmed.length == len(trimmed.data)
    np.testing.assert_array_equal(trimmed.data, trim_silence(plain, 16000))


def test_audio_limits_and_errors():
    dec = audio_decoder(seconds=1.0)
    long = audio_bytes(np.zeros(16000 * 3, np.float32), 16000)
    with pytest.raises(InputTooLarge, match="input 4: 3.0 s of audio exceeds the limit of 1 s"):
        dec(b64(long), 4)
    with pytest.raises(InputError, match="too short"):
        dec(b64(audio_bytes(np.zeros(100, np.float32), 16000)), 0)
    with pytest.raises(InputError, match="not a readable audio file"):
        dec(b64(b"RIFF....WAVEfmt garbage"), 0)
    with pytest.raises(UnsupportedMedia):
        dec(b64(image_bytes(digit(1)), "image/png"), 0)


def test_text_tokenizes_and_truncates(model_dirs):
    import json

    d = model_dirs["text"]
    config = json.loads((d / "config.json").read_text())
    dec = make_input_decoder(config, d, 1, 1, 0)
    x = dec("a domesticated carnivorous mammal", 0)
    assert x.data[0] == 0 and x.data[-1] == 2 and x.data.dtype == np.int64 and x.tokens == len(x.data)
    long = " ".join(["the quick brown fox jumps over the lazy dog"] * 20)
    assert len(dec(long, 0).data) == config["preprocessing"]["max_tokens"]
    with pytest.raises(InputTooLarge, match="input 3: .* tokens exceed the limit"):
        dec(long, 3, truncate=False)
    with pytest.raises(InputError, match="empty text"):
        dec("   ", 0)
    assert len(make_input_decoder(config, d, 1, 1, 10)(long, 0).data) == 10  # --max-tokens below the model's


def test_text_takes_token_ids(model_dirs, tmp_path):
    import json
    import shutil

    d = model_dirs["text"]
    config = json.loads((d / "config.json").read_text())
    vocab, limit = config["encoder"]["text"]["vocab_size"], config["preprocessing"]["max_tokens"]
    dec = make_input_decoder(config, d, 1, 1, 0)
    x = dec([0, 7, 8, 2], 0)
    assert x.data.tolist() == [0, 7, 8, 2] and x.data.dtype == np.int64 and x.length == x.tokens == 4
    text = dec("a domesticated carnivorous mammal", 0).data.tolist()
    assert dec(text, 0).data.tolist() == text  # the ids a text gives are taken as they are
    long = [0, *[9] * (limit + 10), 2]
    assert dec(long, 0).data.tolist() == [0, *[9] * (limit - 2), 2]  # cut, keeping the final </s>
    assert dec(long[:-1], 0).data.tolist() == long[:limit]  # no final </s>: a plain cut
    with pytest.raises(InputTooLarge, match=f"input 2: {limit + 12} token ids exceed the limit of {limit}"):
        dec(long, 2, truncate=False)
    for ids, message in [([], "input 1: empty list of token ids"), ([0, vocab], f"token id {vocab} is outside"),
                         ([0, -3], "token id -3 is outside"), ([0, 1, 2], "token id 1 is the padding id"),
                         ([0, 2.0], "token ids must be integers"), ([0, True], "token ids must be integers")]:
        with pytest.raises(InputError, match=message):
            dec(ids, 1)
    with pytest.raises(InputError, match="input 0: image models take files .*, not token ids"):
        image_decoder()([1, 2, 3], 0)

    # a text model converted without a tokenizer: served, but only on token ids
    bare = tmp_path / "bare"
    shutil.copytree(d, bare)
    (bare / "tokenizer.model").unlink()
    config["preprocessing"]["tokenizer"] = None
    dec = make_input_decoder(config, bare, 1, 1, 0)
    assert dec([0, 7, 2], 0).data.tolist() == [0, 7, 2]
    with pytest.raises(InputError, match="input 3: this model has no tokenizer: send token ids"):
        dec("some text", 3)


def test_decode_needs_neither_torch_nor_fastapi():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; sys.modules['fastapi'] = None; "
            "import d2v.server.decode, d2v.server.config, d2v.server.schemas, d2v.tokenizer")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_image_io_roundtrip_sanity():
    # the PNG writer keeps pixels exactly, so decoding is deterministic
    data = image_bytes(digit(5))
    a, b = image_decoder()(b64(data), 0).data, image_decoder()(io.BytesIO(data).getvalue(), 0).data
    np.testing.assert_array_equal(a, b)


def sine(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_audio_sample_rates_out_of_range_are_refused_before_reading():
    """A 400 KB WAV at 1,999,993 Hz once cost seconds and ~2 GB to resample; now it is refused from
    its header, as is a rate too low to hold speech."""
    dec = audio_decoder(seconds=60)
    for rate in (1_999_993, 500):
        with pytest.raises(InputError, match=f"input 3: a sample rate of {rate} Hz is not supported"):
            dec(audio_bytes(sine(440, 16000, 12.5), rate), 3)


def test_awkward_sample_rates_resample_with_a_bounded_filter():
    """A prime rate cannot use an exact polyphase ratio (it would take a filter of millions of taps);
    the nearest bounded ratio keeps the length and the pitch."""
    import tracemalloc

    from scipy.signal import resample_poly

    from d2v.server.decode import MAX_RESAMPLE_FACTOR, resample_factors

    dec = audio_decoder()
    resample_poly(np.zeros(64, np.float32), 2, 3)  # scipy's own first-use allocations, outside the measure
    for rate in (191_999, 44_101, 17_011, 8_001, 1_009):
        up, down = resample_factors(rate, 16000)
        assert max(up, down) <= MAX_RESAMPLE_FACTOR and abs(up / down * rate / 16000 - 1) < 2e-4
        raw = audio_bytes(sine(440, rate, 2.0), rate)
        tracemalloc.start()
        x = dec(raw, 0).data
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 8 * 2**20, (rate, peak)  # an exact filter took ~100 MB at 191,999 Hz
        assert abs(len(x) - 32000) <= 32000 * 2e-4 + 1
        spectrum = np.abs(np.fft.rfft(x))
        assert abs(np.argmax(spectrum) * 16000 / len(x) - 440) < 1  # the same tone


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000, 192000])
def test_common_rates_resample_exactly_as_training_does(rate):
    from math import gcd

    from scipy.signal import resample_poly

    from d2v.server.decode import resample

    wav = sine(300, rate, 0.5)
    g = gcd(rate, 16000)
    np.testing.assert_array_equal(resample(wav, rate, 16000),
                                  resample_poly(wav, 16000 // g, rate // g).astype(np.float32))


def test_audio_channels_are_bounded_and_averaged():
    many = audio_bytes(sine(440, 16000, 0.5), 16000, channels=40)
    with pytest.raises(InputError, match="40 channels"):
        audio_decoder()(many, 0)
    four = audio_decoder()(audio_bytes(sine(440, 16000, 0.5), 16000, channels=4), 0).data
    one = audio_decoder()(audio_bytes(sine(440, 16000, 0.5), 16000), 0).data
    np.testing.assert_allclose(four, one, atol=1e-6)


def test_errors_do_not_show_object_reprs():
    with pytest.raises(InputError) as e:
        audio_decoder()(b64(b"RIFF....WAVEfmt garbage"), 0)
    assert "object at 0x" not in str(e.value) and "BytesIO" not in str(e.value)
    assert str(e.value).startswith("input 0: not a readable audio file (WAV, FLAC, OGG): ")
    with pytest.raises(InputError) as e:
        image_decoder()(b64(b"not an image"), 1)
    assert "object at 0x" not in str(e.value) and str(e.value).startswith("input 1: not a readable image")
