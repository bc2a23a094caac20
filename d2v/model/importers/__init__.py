"""Importers of foreign weights, and `d2v convert`: a HuggingFace Data2Vec directory in, a d2v
checkpoint directory out.

`hf.py` maps a parsed config and state dict onto a d2v encoder without touching files; `convert`
reads the source (config, weights, preprocessor_config.json) with `checkpoint.read_foreign_weights`,
checks the result against the built encoder and writes it with `save_checkpoint`. What the mapping
drops or cannot vouch for is reported as a `ConversionWarning`.
"""

import argparse
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import sentencepiece as spm
import torch

from d2v.model.checkpoint import (
    CheckpointConfig,
    CheckpointError,
    read_config,
    read_foreign_weights,
    save_checkpoint,
)
from d2v.model.importers.hf import HFImport, build_from_hf, map_hf, map_hf_audio, map_hf_text

__all__ = [
    "ConversionWarning",
    "HFImport",
    "add_convert_arguments",
    "build_from_hf",
    "convert",
    "map_hf",
    "map_hf_audio",
    "map_hf_text",
    "run_convert",
]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DType = Literal["float32", "float16", "bfloat16"]


class ConversionWarning(UserWarning):
    """The converted checkpoint works, but differs from its source in a way the user should know."""


def _check_out(out: Path) -> None:
    """Refuse to replace anything but an empty directory or an existing d2v checkpoint."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    try:
        read_config(out)
    except CheckpointError as e:
        raise CheckpointError(f"refusing to replace {out}: it exists and is not a valid d2v checkpoint ({e})") from None


def _check_tokenizer(path: Path, imported: HFImport) -> list[str]:
    """Validate a sentencepiece model for a text import; returns warnings about its special ids."""
    if not path.is_file():
        raise CheckpointError(f"tokenizer {path} is not a file")
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a sentencepiece model: {e}") from None
    vocab = imported.encoder.text.vocab_size
    if sp.get_piece_size() > vocab:
        raise ValueError(f"tokenizer {path} has {sp.get_piece_size()} pieces but the model embeds only {vocab}")
    pre = imported.preprocessing
    found = {"bos_id": sp.bos_id(), "pad_id": sp.pad_id(), "eos_id": sp.eos_id(), "unk_id": sp.unk_id()}
    differ = [f"{k} {v} (model {pre[k]})" for k, v in found.items() if v >= 0 and v != pre[k]]
    if differ:
        return [f"tokenizer {path.name} special ids differ from the model's: {', '.join(differ)}"]
    return []


def convert(
    src: str | Path,
    out: str | Path,
    name: str | None = None,
    tokenizer: str | Path | None = None,
    dtype: DType | None = None,
) -> Path:
    """Convert a HuggingFace Data2VecText / Data2VecAudio directory into a d2v checkpoint.

    Args:
        src: HF directory with config.json and model.safetensors (or shards, or pytorch_model.bin);
            an optional preprocessor_config.json sets audio normalization and sample rate.
        out: checkpoint directory to write; an existing one is replaced, anything else is refused.
        name: the checkpoint's name (default: the source directory's name).
        tokenizer: sentencepiece model for text models; without it the checkpoint takes token ids only.
        dtype: store weights as "float32", "float16" or "bfloat16" (default float32).

    Returns:
        The checkpoint directory.

    Raises:
        CheckpointError: unreadable source, missing or leftover weights, or an unsafe `out`.
        ValueError: an unsupported model type (e.g. data2vec-vision) or setting.
    """
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    src, out = Path(src), Path(out)
    config, state, preprocessor = read_foreign_weights(src)
    try:
        imported = map_hf(config, state, preprocessor)
    except ValueError as e:  # CheckpointError included: name the source
        raise type(e)(f"{src}: {e}") from None
    notes = list(imported.warnings)
    if imported.encoder.modality != "text" and tokenizer is not None:
        raise ValueError(f"a tokenizer applies to text models only, not {imported.model_type}")
    if imported.encoder.modality == "text":
        if tokenizer is None:
            notes.append("no tokenizer given: the checkpoint takes token ids only (pass a sentencepiece model "
                          "with --tokenizer to accept text)")
        else:
            notes += _check_tokenizer(Path(tokenizer), imported)
    _check_out(out)
    model = build_from_hf(imported)
    provenance = {
        "command": "d2v convert",
        "source": str(src),
        "source_model_type": imported.model_type,
        "converted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    cfg = CheckpointConfig(name or src.resolve().name, imported.encoder, None, imported.preprocessing, provenance)
    path = save_checkpoint(out, model, cfg, tokenizer, DTYPES[dtype] if dtype else None)
    for note in notes:
        warnings.warn(note, ConversionWarning, stacklevel=2)
    return path


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `d2v convert` arguments: SRC, --out, --name, --tokenizer, --dtype."""
    parser.add_argument("src", metavar="SRC", type=Path,
                        help="HuggingFace Data2VecText or Data2VecAudio directory (config.json + weights)")
    parser.add_argument("--out", metavar="DIR", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--name", help="checkpoint name (default: the source directory's name)")
    parser.add_argument("--tokenizer", metavar="PATH", type=Path,
                        help="sentencepiece model for text models (without it the model takes token ids only)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="store weights in this dtype (default float32)")


def run_convert(args: argparse.Namespace) -> int:
    """Run `d2v convert`; errors print one line to stderr and return 2, warnings print and continue."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConversionWarning)
            path = convert(args.src, args.out, args.name, args.tokenizer, args.dtype)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"d2v convert: error: {e}", file=sys.stderr)
        return 2
    for w in caught:
        if issubclass(w.category, ConversionWarning):
            print(f"d2v convert: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(f"wrote {path}")
    return 0
