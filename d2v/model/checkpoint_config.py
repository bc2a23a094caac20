"""A checkpoint's (or an export's) config.json, read and validated without torch.

`read_config` is what every command that reads a checkpoint goes through (export, embed, finetune,
serve, convert's check of its output): the format and version, the encoder and head sections field
by field (`config_from_dict`), the top-level modality and the preprocessing section. Every problem is
a `CheckpointError` of one line naming the file and the field, e.g.
`models/x/config.json: encoder.num_heads must be a positive integer, got 0`. The onnxruntime server
reads export directories through it too, so this module must not import torch.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d2v.model.config import ConfigError, EncoderConfig, HeadConfig, config_from_dict, head_from_dict
from d2v.tokenizer.spec import BOS_ID, EOS_ID, TOKENIZER_MODEL, UNK_ID, TokenizerError, TokenizerSpec

__all__ = [
    "CONFIG",
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS",
    "CheckpointConfig",
    "CheckpointError",
    "check_preprocessing",
    "default_preprocessing",
    "load_config_file",
    "read_config",
]

FORMAT = "d2v.checkpoint"
FORMAT_VERSION = 1
CONFIG, WEIGHTS = "config.json", "model.safetensors"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class CheckpointError(ValueError):
    """A checkpoint directory is missing, malformed, or does not fit its config."""


def _image_preprocessing(cfg: EncoderConfig) -> dict[str, Any]:
    c = cfg.image
    mean = (IMAGENET_MEAN * c.in_chans)[: c.in_chans] if c.in_chans != 3 else IMAGENET_MEAN
    std = (IMAGENET_STD * c.in_chans)[: c.in_chans] if c.in_chans != 3 else IMAGENET_STD
    return {"image_size": c.image_size, "channels": c.in_chans, "mean": mean, "std": std}


def _audio_preprocessing(cfg: EncoderConfig) -> dict[str, Any]:
    return {"sample_rate": cfg.audio.sample_rate, "normalize": cfg.audio.normalize}


def _text_preprocessing(cfg: EncoderConfig) -> dict[str, Any]:
    return {"tokenizer": TOKENIZER_MODEL, "max_tokens": cfg.text.max_positions, "bos_id": BOS_ID,
            "pad_id": cfg.text.pad_id, "eos_id": EOS_ID, "unk_id": UNK_ID}


_PREPROCESSING = {"image": _image_preprocessing, "audio": _audio_preprocessing, "text": _text_preprocessing}


def default_preprocessing(cfg: EncoderConfig) -> dict[str, Any]:
    """How to feed the model: image size/channels/mean/std; audio rate and normalization; text
    tokenizer file, token limit and special ids."""
    return _PREPROCESSING[cfg.modality](cfg)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_preprocessing(pre: Any, encoder: EncoderConfig) -> None:
    """Check the keys of a preprocessing section that the readers use (other keys are left alone).

    Raises:
        ConfigError: naming the field, e.g. `preprocessing.image_size must be ...`."""
    if not isinstance(pre, dict):
        raise ConfigError(f"preprocessing must be an object, got {pre!r:.60}")

    def need(key: str, ok: bool, what: str, required: bool = False) -> None:
        if key not in pre:
            if required:
                raise ConfigError(f"preprocessing.{key} is missing")
            return
        if not ok:
            raise ConfigError(f"preprocessing.{key} must be {what}, got {pre[key]!r:.60}")

    get = pre.get
    if encoder.modality == "image":
        c = encoder.image
        need("image_size", get("image_size") == c.image_size and _is_int(get("image_size")),
             f"the encoder's image size {c.image_size}", required=True)
        need("channels", get("channels") == c.in_chans and _is_int(get("channels")),
             f"the encoder's channel count {c.in_chans}")
        for key, least in (("mean", None), ("std", 0)):
            v = get(key)
            ok = (isinstance(v, list) and len(v) == c.in_chans and all(_is_number(x) for x in v)
                  and (least is None or all(x > least for x in v)))
            need(key, ok, f"a list of {c.in_chans} " + ("numbers" if least is None else "positive numbers"),
                 required=True)
    elif encoder.modality == "audio":
        need("sample_rate", _is_int(get("sample_rate")) and get("sample_rate", 0) > 0, "a positive integer",
             required=True)
        need("normalize", isinstance(get("normalize"), bool), "true or false")
        trim = get("trim_silence")
        need("trim_silence", trim is None or (isinstance(trim, dict) and all(_is_number(v) and v >= 0
                                                                             for v in trim.values())),
             "an object of non-negative numbers or null")
    elif encoder.modality == "text":
        try:  # its files are checked where they are read (checkpoint.check_checkpoint, d2v.tokenizer)
            TokenizerSpec.from_field(get("tokenizer"))
        except TokenizerError as e:
            raise ConfigError(str(e)) from None
        need("max_tokens", _is_int(get("max_tokens")) and get("max_tokens", 0) >= 1, "a positive integer")
        for key in ("bos_id", "pad_id", "eos_id", "unk_id"):
            need(key, _is_int(get(key)) and 0 <= get(key) < encoder.text.vocab_size,
                 f"a token id below the vocabulary size {encoder.text.vocab_size}")


@dataclass
class CheckpointConfig:
    """The contents of config.json."""

    name: str
    encoder: EncoderConfig
    head: HeadConfig | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.preprocessing:
            self.preprocessing = default_preprocessing(self.encoder)

    @property
    def modality(self) -> str:
        return self.encoder.modality

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "modality": self.modality,
            "encoder": self.encoder.to_dict(),
            "head": None if self.head is None else self.head.to_dict(),
            "preprocessing": self.preprocessing,
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = CONFIG) -> "CheckpointConfig":
        """Validate and parse the dict form.

        Raises:
            CheckpointError: `<where>: <field> <what is wrong>`."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise CheckpointError(f"{where} is not a d2v checkpoint config (format={found!r}, expected {FORMAT!r})")
        version = data.get("format_version")
        if not _is_int(version) or version > FORMAT_VERSION:
            raise CheckpointError(f"{where} has format_version {version!r}; this d2v reads up to {FORMAT_VERSION}")
        try:
            if "encoder" not in data:
                raise ConfigError("the encoder section is missing")
            encoder = config_from_dict(data["encoder"], "encoder")
            if not isinstance(encoder, EncoderConfig):
                raise ConfigError("encoder holds a pretraining config (an 'encoder' inside); expected the encoder itself")
            head_data = data.get("head")
            head = None if head_data is None else head_from_dict(head_data)
            if data.get("modality") != encoder.modality:
                raise ConfigError(f"modality {data.get('modality')!r} does not match encoder {encoder.modality!r}")
            name = data.get("name")
            if name is not None and not (isinstance(name, str) and name):
                raise ConfigError(f"name must be a non-empty string, got {name!r:.60}")
            for key in ("preprocessing", "provenance"):
                if data.get(key) is not None and not isinstance(data[key], dict):
                    raise ConfigError(f"{key} must be an object, got {data[key]!r:.60}")
            pre = data.get("preprocessing") or {}
            if pre:
                check_preprocessing(pre, encoder)
        except ConfigError as e:
            raise CheckpointError(f"{where}: {e}") from None
        return cls(name or "model", encoder, head, pre, data.get("provenance") or {})


def load_config_file(file: Path) -> Any:
    """The parsed JSON of a config file.

    Raises:
        CheckpointError: the file cannot be read or is not JSON."""
    try:
        return json.loads(file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{file} is not valid JSON: nested too deeply") from None
    except OSError as e:
        raise CheckpointError(f"{file} cannot be read: {e.strerror or e}") from None


def read_config(path: str | Path) -> CheckpointConfig:
    """Read and validate `<path>/config.json`.

    Raises:
        CheckpointError: the directory or file is missing, or the config is invalid (file and field named)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory (expected a d2v checkpoint directory)")
    cfg_file = path / CONFIG
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} is not a d2v checkpoint: {CONFIG} is missing")
    return CheckpointConfig.from_dict(load_config_file(cfg_file), str(cfg_file))
