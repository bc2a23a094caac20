"""Request inputs -> model inputs, for each modality, with numpy only (no torch):

- images: Pillow (any format and mode it reads), size checked against a pixel limit *before* decoding
  (decompression bombs), EXIF orientation applied, then the evaluation transform that training uses
  (`d2v.preprocessing.prepare_image`: the model's channels, the centred square resized to its size,
  bicubic, its mean/std) -> float32 (C, H, W);
- audio: soundfile (WAV, FLAC, OGG/Vorbis, ...); sample rate, channels and duration checked from the
  header before reading; channels averaged to mono block by block; resampled to the model's rate with
  a polyphase filter of bounded size (`resample`) -> float32 (L,);
- text: the model's tokenizer (`d2v.tokenizer`: sentencepiece, tokenizer.json, byte-level BPE, fairseq),
  <s> ids </s>, truncated to the token limit (or 413); or a list of token ids, validated -> int64 (T,).

Failures are typed: `InputError` (400, undecodable), `InputTooLarge` (413), `UnsupportedMedia` (415),
each naming the input (its index in the request) and why.
"""

import base64
import binascii
import io
import re
from dataclasses import dataclass
from fractions import Fraction
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from d2v.model.modality import conv_frames, min_samples
from d2v.preprocessing import apply_audio_preprocessing, prepare_image

__all__ = ["INLINE_TEXT_CHARS", "MAX_SAMPLE_RATE", "MIN_SAMPLE_RATE", "Decoded", "InputDecoder", "InputError", "InputTooLarge",
           "UnsupportedMedia", "make_input_decoder", "media_bytes", "resample", "resample_factors"]


_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


class InputError(ValueError):
    """An input cannot be decoded (400). The message names the input, never a Python object's repr
    (Pillow and libsndfile put `<_io.BytesIO object at 0x...>` in theirs)."""

    def __init__(self, index: int | None, message: str):
        self.index = index
        where = "" if index is None else f"input {index}: "
        super().__init__(where + _OBJECT_REPR.sub("", message))


class InputTooLarge(InputError):
    """An input exceeds a limit (413)."""


class UnsupportedMedia(InputError):
    """An input is of a media type this model does not take (415)."""


@dataclass
class Decoded:
    """One model input: `data` is (C, H, W) float32, (L,) float32 or (T,) int64; `length` the size
    that batching budgets (1 image, L samples, T tokens); `tokens` what the model sees (usage);
    `seconds` the duration of an audio input as it was sent (before resampling and trimming)."""

    data: np.ndarray
    length: int
    tokens: int
    seconds: float = 0.0


_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?),", re.DOTALL)


def media_bytes(value: str | bytes, index: int, modality: str, content_type: str | None = None) -> bytes:
    """A base64 string or data: URI (or raw upload bytes) -> file bytes; a media type that is not the
    modality's (e.g. `data:audio/wav` for an image model) is a `UnsupportedMedia`."""
    mime = content_type
    if isinstance(value, str):
        m = _DATA_URI.match(value[:256])
        if m:
            mime = m.group("mime")
            if ";base64" not in (m.group("params") or ""):
                raise InputError(index, "data: URIs must be base64-encoded (';base64,')")
            value = value[m.end():]
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            try:  # tolerate whitespace/newlines and url-safe alphabets
                value = base64.urlsafe_b64decode(re.sub(r"\s+", "", value) + "==")
            except (binascii.Error, ValueError):
                raise InputError(index, f"not valid base64 or a data: URI ({modality} models take file bytes)")
        if not value:
            raise InputError(index, "empty input")
    major = (mime or "").split("/")[0].lower()
    if mime and major != modality and mime.lower() not in ("application/octet-stream", "application/ogg"):
        raise UnsupportedMedia(index, f"media type {mime!r} is not {modality} (this model takes {modality} inputs)")
    return value


class ImageDecoder:
    def __init__(self, pre: dict[str, Any], encoder: dict[str, Any], max_pixels: int):
        self.tokens = (int(encoder["image"]["image_size"]) // int(encoder["image"]["patch_size"])) ** 2 + 1
        self.size = int(pre["image_size"])
        self.channels = int(pre.get("channels", 3))
        if self.channels not in (1, 3):
            raise ValueError(f"preprocessing.channels is {self.channels}: image models take 1 or 3 channels")
        self.mean = [float(v) for v in pre["mean"]]
        self.std = [float(v) for v in pre["std"]]
        self.max_pixels = max_pixels

    def __call__(self, raw: bytes, index: int, truncate: bool = True) -> Decoded:
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(raw)) as img:  # reads the header only
                w, h = img.size
                if w * h > self.max_pixels:
                    raise InputTooLarge(index, f"image of {w}x{h} = {w * h} pixels exceeds the limit of "
                                        f"{self.max_pixels}")
                img.load()
                img = ImageOps.exif_transpose(img)
                x = prepare_image(img, self.size, self.channels, self.mean, self.std)
        except InputError:
            raise
        except Image.DecompressionBombError as e:  # Pillow's own limit, when it is below ours
            raise InputTooLarge(index, f"image too large: {e}") from None
        except UnidentifiedImageError as e:
            raise InputError(index, f"not a readable image: {e}") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise InputError(index, f"the image cannot be decoded: {e}") from None
        return Decoded(x, 1, self.tokens)


MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 192_000
"""Audio sample rates accepted (Hz): the cost of reading and resampling grows with the rate."""
MAX_CHANNELS = 32
MAX_RESAMPLE_FACTOR = 1000
"""The largest up or down factor of the polyphase filter: its length (20 x the factor, in taps) and so
the cost of resampling stay bounded whatever the rate."""
_BLOCK_FRAMES = 1 << 16


def resample_factors(rate: int, target: int) -> tuple[int, int]:
    """(up, down) with up / down = target / rate, both at most `MAX_RESAMPLE_FACTOR`.

    Exact where the reduced ratio allows it (every common rate: 8, 11.025, 22.05, 44.1, 48, 96 kHz...,
    the same filter as training's `resample_poly`); otherwise the nearest such ratio (a relative rate
    error below 2e-4 between 1 and 192 kHz, far below what a listener or a model notices). A
    prime rate like 191,999 Hz would otherwise design a filter of millions of taps (seconds and
    hundreds of MB for a single input)."""
    g = gcd(rate, target)
    up, down = target // g, rate // g
    if max(up, down) <= MAX_RESAMPLE_FACTOR:
        return up, down
    ratio = Fraction(target, rate)
    near = ratio.limit_denominator(MAX_RESAMPLE_FACTOR) if ratio <= 1 else \
        1 / (1 / ratio).limit_denominator(MAX_RESAMPLE_FACTOR)
    return near.numerator, near.denominator


def resample(wav: np.ndarray, rate: int, target: int) -> np.ndarray:
    """(L,) float32 at `rate` -> (L',) float32 at `target` (polyphase, `resample_factors`)."""
    up, down = resample_factors(rate, target)
    if up == down:
        return wav
    from scipy.signal import resample_poly

    return resample_poly(wav, up, down).astype(np.float32)


def _libsndfile_reason(e: Exception) -> str:
    """soundfile's message without the file object's repr (`Error opening <_io.BytesIO object at ...>`)."""
    reason = getattr(e, "error_string", None) or str(e)
    return re.sub(r"\s*<[^<>]* object at 0x[0-9a-fA-F]+>:?\s*", " ", reason).strip() or "unknown format"


class AudioDecoder:
    def __init__(self, pre: dict[str, Any], encoder: dict[str, Any], max_seconds: float):
        self.rate = int(pre["sample_rate"])
        self.pre = pre
        self.max_seconds = max_seconds
        self.conv_layers = encoder["audio"]["conv_layers"]
        # the shortest clip the feature extractor turns into two frames (as the ONNX graphs require)
        self.min_samples = min_samples(self.conv_layers, 2)

    def _read(self, raw: bytes, index: int) -> tuple[np.ndarray, int]:
        """File bytes -> (mono float32 samples, sample rate), refusing what costs too much before reading."""
        import soundfile as sf

        try:
            with sf.SoundFile(io.BytesIO(raw)) as f:
                rate, channels = f.samplerate, f.channels
                if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
                    raise InputError(index, f"a sample rate of {rate} Hz is not supported: send audio sampled at "
                                     f"{MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz")
                if not 1 <= channels <= MAX_CHANNELS:
                    raise InputError(index, f"audio with {channels} channels is not supported (at most "
                                     f"{MAX_CHANNELS})")
                seconds = f.frames / rate
                if seconds > self.max_seconds:
                    raise InputTooLarge(index, f"{seconds:.1f} s of audio exceeds the limit of {self.max_seconds:g} s")
                if channels == 1:
                    return f.read(dtype="float32"), rate
                blocks = [b.mean(axis=1, dtype=np.float32)
                          for b in f.blocks(_BLOCK_FRAMES, dtype="float32", always_2d=True)]
                return (np.concatenate(blocks) if blocks else np.zeros(0, np.float32)), rate
        except InputError:
            raise
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
            raise InputError(index, f"not a readable audio file (WAV, FLAC, OGG): {_libsndfile_reason(e)}") from None

    def __call__(self, raw: bytes, index: int, truncate: bool = True) -> Decoded:
        wav, rate = self._read(raw, index)
        seconds = len(wav) / rate
        if rate != self.rate:
            wav = resample(wav, rate, self.rate)
        if not np.all(np.isfinite(wav)):
            raise InputError(index, "the audio holds NaN or infinite samples")
        wav = apply_audio_preprocessing(wav, self.rate, self.pre)
        if len(wav) < self.min_samples:
            raise InputError(index, f"audio of {len(wav)} samples is too short: the model needs at least "
                             f"{self.min_samples} at {self.rate} Hz")
        wav = np.ascontiguousarray(wav, dtype=np.float32)
        return Decoded(wav, len(wav), conv_frames(len(wav), self.conv_layers), seconds)


class TextDecoder:
    """Text -> `<s> ids </s>` with the model's tokenizer (`d2v.tokenizer`), or token ids as they are.

    A model without a tokenizer takes token ids only. Ids are the model's whole input (send <s> and
    </s> yourself, as `transformers`' input_ids have them): each must lie in the vocabulary and not be
    the padding id; a list longer than the token limit is cut (keeping a final </s>) or refused (413)."""

    def __init__(self, pre: dict[str, Any], encoder: dict[str, Any], directory: Path, max_tokens: int):
        from d2v.tokenizer import load_tokenizer, model_special_ids

        self.vocab_size = int(encoder["text"]["vocab_size"])
        self.tokenizer = load_tokenizer(directory, pre, self.vocab_size)
        self.bos, self.pad, self.eos = model_special_ids(pre)
        limit = int(pre.get("max_tokens", 512))
        self.max_tokens = min(limit, max_tokens) if max_tokens > 0 else limit

    def __call__(self, raw: str | list[int], index: int, truncate: bool = True) -> Decoded:
        if isinstance(raw, list):
            return self.token_ids(raw, index, truncate)
        if not isinstance(raw, str):
            raise InputError(index, "text models take strings or lists of token ids")
        if self.tokenizer is None:
            raise InputError(index, "this model has no tokenizer: send token ids (a list of integers), not text")
        if not raw.strip():
            raise InputError(index, "empty text")
        ids = self.tokenizer.tokenize(raw)
        if len(ids) + 2 > self.max_tokens:
            if not truncate:
                raise InputTooLarge(index, f"{len(ids) + 2} tokens exceed the limit of {self.max_tokens} "
                                    "(send truncate=true to cut it)")
            ids = ids[: self.max_tokens - 2]
        x = np.asarray([self.bos, *ids, self.eos], dtype=np.int64)
        return Decoded(x, len(x), len(x))

    def token_ids(self, ids: list[Any], index: int, truncate: bool = True) -> Decoded:
        """Validate a list of token ids: not empty, integers in the vocabulary, no padding id, within
        the token limit (cut when `truncate`, keeping a final </s>; else 413)."""
        if not ids:
            raise InputError(index, "empty list of token ids")
        for i in ids:
            if type(i) is not int:
                raise InputError(index, f"token ids must be integers, not {type(i).__name__} ({str(i)[:20]!r})")
            if not 0 <= i < self.vocab_size:
                raise InputError(index, f"token id {i} is outside the model's vocabulary [0, {self.vocab_size})")
        if self.pad in ids:
            raise InputError(index, f"token id {self.pad} is the padding id; it cannot be an input token")
        if len(ids) > self.max_tokens:
            if not truncate:
                raise InputTooLarge(index, f"{len(ids)} token ids exceed the limit of {self.max_tokens} "
                                    "(send truncate=true to cut them)")
            ids = ids[: self.max_tokens - 1] + [self.eos] if ids[-1] == self.eos else ids[: self.max_tokens]
        x = np.asarray(ids, dtype=np.int64)
        return Decoded(x, len(x), len(x))


INLINE_TEXT_CHARS = 2048
"""Text requests of at most this many characters (or token ids) in all are cheap enough to tokenize on
the event loop (the tokenizers are native code: 10-60 us for a sentence here), which costs less than
handing them to a decode thread and back (~0.2-0.35 ms measured on a shared 2-core machine, more when
other work delays either thread). Longer text and every media file go to the decode pool."""


class InputDecoder:
    """Decodes one request input for a model: text strings or token-id lists, or media as base64/data
    URI/upload bytes. `inline_chars`: the engine decodes requests of at most that many characters (or
    token ids) in all on its event loop instead of in the decode pool (text: `INLINE_TEXT_CHARS`; media:
    0, never)."""

    def __init__(self, modality: str, impl: ImageDecoder | AudioDecoder | TextDecoder):
        self.modality = modality
        self.impl = impl
        self.inline_chars = INLINE_TEXT_CHARS if modality == "text" else 0

    def __call__(self, value: str | bytes | list[int], index: int, truncate: bool = True,
                 content_type: str | None = None) -> Decoded:
        if isinstance(value, list) and self.modality != "text":
            raise InputError(index, f"{self.modality} models take files (base64 or data: URIs), not token ids")
        if self.modality == "text":
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(index, "uploaded text is not UTF-8") from None
            return self.impl(value, index, truncate)
        return self.impl(media_bytes(value, index, self.modality, content_type), index, truncate)


def make_input_decoder(config: dict[str, Any], directory: Path, max_pixels: int, max_audio_seconds: float,
                       max_tokens: int) -> InputDecoder:
    """A decoder from a checkpoint's (or export's) config.json contents."""
    modality, pre = config["modality"], config.get("preprocessing") or {}
    if modality == "image":
        impl = ImageDecoder(pre, config["encoder"], max_pixels)
    elif modality == "audio":
        impl = AudioDecoder(pre, config["encoder"], max_audio_seconds)
    else:
        impl = TextDecoder(pre, config["encoder"], directory, max_tokens)
    return InputDecoder(modality, impl)
