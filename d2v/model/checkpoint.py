"""The inference checkpoint directory, and the only place `d2v.model` reads files.

    <checkpoint>/
      config.json          format, format_version, name, modality, encoder, head, preprocessing, provenance
      model.safetensors    encoder (+ head) weights; no teacher, no decoder
      tokenizer.model      text models only: the sentencepiece model

Loading never unpickles: weights come from safetensors, and foreign `pytorch_model.bin` files are
read with `torch.load(weights_only=True)`. Problems are reported as `CheckpointError` naming the
file and what is wrong (missing/unexpected keys, shape mismatches), never as a deep traceback.
Saving is atomic: the directory is written under a temporary name and renamed into place.
"""

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from d2v.model.builder import build_encoder
from d2v.model.config import EncoderConfig, HeadConfig, config_from_dict
from d2v.model.encoder import Data2VecEncoder

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointConfig",
    "CheckpointError",
    "check_state_dict",
    "default_preprocessing",
    "load_checkpoint",
    "read_config",
    "read_foreign_weights",
    "save_checkpoint",
]

FORMAT = "d2v.checkpoint"
FORMAT_VERSION = 1
CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.model"
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
    return {"tokenizer": TOKENIZER, "max_tokens": cfg.text.max_positions, "bos_id": 0,
            "pad_id": cfg.text.pad_id, "eos_id": 2, "unk_id": 3}


_PREPROCESSING = {"image": _image_preprocessing, "audio": _audio_preprocessing, "text": _text_preprocessing}


def default_preprocessing(cfg: EncoderConfig) -> dict[str, Any]:
    """How to feed the model: image size/channels/mean/std; audio rate and normalization; text
    tokenizer file, token limit and special ids."""
    return _PREPROCESSING[cfg.modality](cfg)


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
    def from_dict(cls, data: dict[str, Any], where: str = "config.json") -> "CheckpointConfig":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise CheckpointError(f"{where} is not a d2v checkpoint config (format={found!r}, expected {FORMAT!r})")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(f"{where} has format_version {version!r}; this d2v reads up to {FORMAT_VERSION}")
        try:
            encoder = config_from_dict(data["encoder"])
            head = None if data.get("head") is None else HeadConfig(**data["head"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: invalid encoder/head section: {e}") from None
        if data.get("modality") != encoder.modality:
            raise CheckpointError(f"{where}: modality {data.get('modality')!r} does not match encoder {encoder.modality!r}")
        return cls(data.get("name") or "model", encoder, head, data.get("preprocessing") or {},
                   data.get("provenance") or {})


def save_checkpoint(
    path: str | Path,
    model: Data2VecEncoder,
    config: CheckpointConfig,
    tokenizer: str | Path | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the checkpoint directory atomically, replacing any existing one.

    Args:
        model: the encoder (with its head when fine-tuned); its state must fit `config`.
        tokenizer: the sentencepiece model file (text models).
        dtype: store floating-point weights in this dtype (e.g. torch.float16), else as they are.
    """
    path = Path(path)
    data = config.to_dict()
    if config.modality == "text":  # name the tokenizer only when this checkpoint holds one
        name = None if tokenizer is None else TOKENIZER
        data["preprocessing"] = {**data["preprocessing"], "tokenizer": name}
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "d2v_format": FORMAT})
        (tmp / CONFIG).write_text(json.dumps(data, indent=2) + "\n")
        if tokenizer is not None:
            shutil.copyfile(tokenizer, tmp / TOKENIZER)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_config(path: str | Path) -> CheckpointConfig:
    """Read and validate `<path>/config.json`."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory (expected a d2v checkpoint directory)")
    cfg_file = path / CONFIG
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} is not a d2v checkpoint: {CONFIG} is missing")
    try:
        data = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {e}") from None
    return CheckpointConfig.from_dict(data, str(cfg_file))


def check_state_dict(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where: str) -> None:
    """Raise a `CheckpointError` listing missing keys, unexpected keys and shape mismatches."""
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(found))
        if found[k].shape != expected[k].shape
    ]
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{where} does not fit its config: " + "; ".join(problems))


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = torch.float32
) -> tuple[Data2VecEncoder, CheckpointConfig]:
    """Rebuild the encoder from config.json and load model.safetensors into it (eval mode).

    Args:
        dtype: cast floating-point weights to this dtype (None keeps the model's float32).
    """
    path = Path(path)
    config = read_config(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{path} is not a complete d2v checkpoint: {WEIGHTS} is missing")
    tok = config.preprocessing.get("tokenizer")
    if config.modality == "text" and tok and not (path / tok).is_file():
        raise CheckpointError(f"{path}: the tokenizer file {tok!r} named in {CONFIG} is missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {e}") from None
    model = build_encoder(config.encoder, config.head)
    expected = model.state_dict()
    check_state_dict(expected, state, str(weights))
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    if dtype is not None:
        model.to(dtype)
    return model.to(device).eval(), config


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None


def read_foreign_weights(
    path: str | Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read a HuggingFace-style directory: config.json plus model.safetensors (or sharded
    safetensors with an index) or pytorch_model.bin, the latter loaded with weights_only=True.

    Returns:
        The config, the state dict, and preprocessor_config.json when present (else None)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory")
    cfg_file = path / CONFIG
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: {CONFIG} is missing")
    config = _read_json(cfg_file)
    pre_file = path / "preprocessor_config.json"
    preprocessor = _read_json(pre_file) if pre_file.is_file() else None
    state: dict[str, torch.Tensor] = {}
    index = path / "model.safetensors.index.json"
    try:
        if (path / WEIGHTS).is_file():
            state = load_file(str(path / WEIGHTS))
        elif index.is_file():
            for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
                state.update(load_file(str(path / shard)))
        elif (path / "pytorch_model.bin").is_file():
            state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(f"{path}: no model.safetensors, sharded safetensors or pytorch_model.bin")
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is reported with the file
        raise CheckpointError(f"{path}: cannot read the weights: {e}") from None
    return config, state, preprocessor
