"""The inference checkpoint directory, and the only place `d2v.model` reads weight files.

    <checkpoint>/
      config.json          format, format_version, name, modality, encoder, head, preprocessing, provenance
      model.safetensors    encoder (+ head) weights; no teacher, no decoder
      tokenizer files      text models: what preprocessing.tokenizer names (d2v.tokenizer.spec), e.g.
                           tokenizer.model, tokenizer.json, vocab.json + merges.txt

Loading never unpickles: weights come from safetensors, and foreign `pytorch_model.bin` files are
read with `torch.load(weights_only=True)`. Every check runs before the model is allocated, in this
order, and each failure is a one-line `CheckpointError` naming the file and what is wrong:

1. config.json, field by field (`checkpoint_config.read_config`);
2. the safetensors header (names, shapes, dtypes; the file's length) against the encoder the config
   describes, built on the meta device: missing/unexpected keys, shape mismatches, and floats stored
   as anything but float16, bfloat16 or float32 (e.g. int8) are refused;
3. the weights themselves: a NaN or Inf anywhere is refused, naming the first such tensor.

Saving is atomic (`d2v.atomic.atomic_directory`): the directory is built aside and swapped into
place, so a kill at any moment leaves the old or the new checkpoint, never neither.
"""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from d2v.atomic import atomic_directory
from d2v.legacy_temporaries import clean_temporaries
from d2v.model.builder import build_encoder
from d2v.model.checkpoint_config import (
    CONFIG,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS,
    CheckpointConfig,
    CheckpointError,
    default_preprocessing,
    read_config,
)
from d2v.model.config import EncoderConfig
from d2v.model.encoder import Data2VecEncoder
from d2v.model.safetensors_header import FLOAT_STORAGE, HeaderError, TensorInfo, read_header
from d2v.tokenizer import TokenizerError, TokenizerFiles, TokenizerSpec

__all__ = [
    "FLOAT_DTYPES",
    "FLOAT_STORAGE",
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointConfig",
    "CheckpointError",
    "check_checkpoint",
    "check_finite",
    "check_state_dict",
    "check_stored_dtypes",
    "default_preprocessing",
    "expected_state",
    "load_checkpoint",
    "read_config",
    "read_foreign_weights",
    "read_weights_header",
    "save_checkpoint",
]

FLOAT_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in FLOAT_STORAGE}
"""The one table from a dtype's name to torch's: `d2v convert --dtype`, fine-tuning's `save_dtype`,
`d2v serve --dtype`."""


def save_checkpoint(
    path: str | Path,
    model: Data2VecEncoder,
    config: CheckpointConfig,
    tokenizer: TokenizerFiles | str | Path | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the checkpoint directory atomically, replacing any existing one.

    Args:
        model: the encoder (with its head when fine-tuned); its state must fit `config`.
        tokenizer: text models: the tokenizer's files (`d2v.tokenizer.TokenizerFiles`; a path is d2v's
            own sentencepiece model); they are copied under their canonical names and named in
            preprocessing.tokenizer.
        dtype: store floating-point weights in this dtype (e.g. torch.float16), else as they are.
    """
    path = Path(path)
    data = config.to_dict()
    if tokenizer is not None and not isinstance(tokenizer, TokenizerFiles):
        tokenizer = TokenizerFiles(TokenizerSpec.canonical("sentencepiece"), {"model": Path(tokenizer)})
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_temporaries(path.parent, [path.name])
    with atomic_directory(path) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "d2v_format": FORMAT})
        copied = None if tokenizer is None else tokenizer.copy_to(tmp)
        if config.modality == "text":  # name the tokenizer only when this checkpoint holds one
            field = None if copied is None else copied.spec.to_field()
            data["preprocessing"] = {**data["preprocessing"], "tokenizer": field}
        (tmp / CONFIG).write_text(json.dumps(data, indent=2) + "\n")
    return path


def check_state_dict(expected: dict[str, Any], found: dict[str, Any], where: str) -> None:
    """Raise a `CheckpointError` listing missing keys, unexpected keys and shape mismatches.

    Args:
        expected, found: name -> anything with a `.shape` (tensors, `TensorInfo`s)."""
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(found))
        if tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{where} does not fit its config: " + "; ".join(problems))


def _dtype_name(dtype: torch.dtype | str) -> str:
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def check_stored_dtypes(expected: dict[str, torch.Tensor], found: dict[str, Any], where: str) -> None:
    """Refuse weights stored in a dtype they cannot be loaded from: a floating-point weight must be
    stored as float16, bfloat16 or float32; any other tensor (integer buffers) exactly as the model
    holds it.

    Args:
        found: name -> anything with a `.dtype` (tensors, `TensorInfo`s)."""
    for k, model_tensor in expected.items():
        if k not in found:
            continue
        want, got = _dtype_name(model_tensor.dtype), _dtype_name(found[k].dtype)
        if model_tensor.is_floating_point():
            if got not in FLOAT_STORAGE:
                raise CheckpointError(f"{where}: {k} is stored as {got}, but the model holds it as {want} "
                                      f"(floating-point weights must be stored as {', '.join(FLOAT_STORAGE)})")
        elif got != want:
            raise CheckpointError(f"{where}: {k} is stored as {got}, but the model holds it as {want}")


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse NaN or Inf in any floating-point tensor, naming the first one (in name order)."""
    for k in sorted(state):
        t = state[k]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{where}: {k} holds {bad} non-finite value(s) (NaN or Inf) of {t.numel()}; "
                                  f"the weights are unusable")


def read_weights_header(file: Path) -> dict[str, TensorInfo]:
    """The names, dtypes and shapes in a safetensors file (its data unread); the file must be whole.

    Raises:
        CheckpointError: `<file> is not a readable safetensors file: <why>`."""
    try:
        return read_header(file)
    except (HeaderError, OSError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CheckpointError(f"{file} is not a readable safetensors file: {reason}") from None


def _layer_count(cfg: EncoderConfig) -> int:
    """Modules the config asks for that each hold at least one tensor: blocks, conv layers."""
    n = cfg.depth + cfg.prenet_depth
    if cfg.modality == "audio":
        n += len(cfg.audio.conv_layers) + cfg.audio.conv_pos_depth
    return n


def expected_state(config: CheckpointConfig, header: dict[str, TensorInfo], where: str) -> dict[str, torch.Tensor]:
    """The state dict (on the meta device: shapes and dtypes, no memory) of the encoder that
    `config` describes, after checking that `header` can fill it.

    Raises:
        CheckpointError: the file cannot hold the config's model (too few tensors for its layers,
            missing or unexpected keys, shape mismatches, wrong dtypes)."""
    layers = _layer_count(config.encoder)
    if layers > len(header):
        raise CheckpointError(f"{where} does not fit its config: the config asks for {layers} layers, the file "
                              f"holds {len(header)} tensors")
    with torch.device("meta"):
        expected = build_encoder(config.encoder, config.head).state_dict()
    check_state_dict(expected, header, where)
    check_stored_dtypes(expected, header, where)
    return expected


def _check(path: Path) -> tuple[CheckpointConfig, dict[str, torch.Tensor]]:
    config = read_config(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{path} is not a complete d2v checkpoint: {WEIGHTS} is missing")
    if config.modality == "text":  # the files are read where the text is (d2v.tokenizer.load_tokenizer)
        spec = TokenizerSpec.from_field(config.preprocessing.get("tokenizer"))  # read_config checked the field
        if spec is not None:
            try:
                spec.locate(path)
            except TokenizerError as e:
                raise CheckpointError(str(e)) from None
    return config, expected_state(config, read_weights_header(weights), str(weights))


def check_checkpoint(path: str | Path) -> CheckpointConfig:
    """Everything `load_checkpoint` checks before it reads the weights (config.json, the files, the
    weights header against the config), in milliseconds and without allocating the model.

    Raises:
        CheckpointError: one line naming the file and the problem."""
    return _check(Path(path))[0]


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = torch.float32
) -> tuple[Data2VecEncoder, CheckpointConfig]:
    """Rebuild the encoder from config.json and load model.safetensors into it (eval mode), after
    validating the config, the file's header against it, and the weights (see the module doc).

    Args:
        dtype: cast floating-point weights to this dtype (None keeps the model's float32).

    Raises:
        CheckpointError: one line naming the file and the problem.
    """
    path = Path(path)
    config, expected = _check(path)
    weights = path / WEIGHTS
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {e}") from None
    check_finite(state, str(weights))
    model = build_encoder(config.encoder, config.head)
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
