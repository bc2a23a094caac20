"""Importers of foreign weights, and `d2v convert`: a HuggingFace Data2Vec directory (or a model
id in the local HF cache) or a fairseq data2vec 2.0 `.pt` file in, a d2v checkpoint directory out.

`hf.py` and `fairseq.py` map a parsed config and state dict onto a d2v encoder (and head) without
touching files; `convert` reads the source (HF: config, weights, preprocessor_config.json,
vocab.json, tokenizer_config.json with `checkpoint.read_foreign_weights`; fairseq: the `.pt` with
`safe_pickle.load_fairseq_checkpoint`, which never runs code from the file), checks the result
against the built encoder and writes it with `save_checkpoint`. What the mapping drops or cannot
vouch for is reported as a `ConversionWarning`. `hub.py` finds "org/name" in the local HF cache.
"""

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from d2v.model.checkpoint import (
    FLOAT_DTYPES,
    CheckpointConfig,
    CheckpointError,
    read_config,
    read_foreign_weights,
    save_checkpoint,
)
from d2v.model.convert_arguments import add_convert_arguments
from d2v.model.importers.fairseq import dictionary_symbols, fairseq_model_name, map_fairseq, read_dictionary
from d2v.model.importers.hf import HFImport, build_from_hf, map_hf, map_hf_audio, map_hf_text
from d2v.model.importers.hub import is_hub_id, resolve_hub_id
from d2v.model.importers.imported import Imported, build_imported
from d2v.model.importers.safe_pickle import load_fairseq_checkpoint
from d2v.tokenizer import TextTokenizer, TokenizerFiles, find_in_directory, find_tokenizer, model_special_ids
from d2v.tokenizer.discover import ACCEPTED

__all__ = [
    "ConversionWarning",
    "HFImport",
    "Imported",
    "add_convert_arguments",
    "build_from_hf",
    "build_imported",
    "convert",
    "map_fairseq",
    "map_hf",
    "map_hf_audio",
    "map_hf_text",
    "run_convert",
]

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


def _tokenizer(src: Path, given: Sequence[str | Path] | None, imported: Imported) -> TokenizerFiles | None:
    """The text model's tokenizer: `--tokenizer` paths, else what the HF directory holds (a fairseq
    `.pt` file: `--tokenizer` only); read and checked against the model (vocabulary size, <s> <pad>
    </s> ids). None when there is none."""
    files = find_tokenizer(given) if given else find_in_directory(src) if src.is_dir() else None
    if files is not None:
        bos, pad, eos = model_special_ids(imported.preprocessing)
        TextTokenizer(files).check_model(imported.encoder.text.vocab_size, bos, pad, eos)
    return files


def _read_text(file: Path, what: str) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {what} {file}: {e}") from None


def _read_json_file(file: Path) -> dict | None:
    """A JSON object from `file`, or None when the file does not exist."""
    if not file.is_file():
        return None
    try:
        data = json.loads(_read_text(file, "the JSON file"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} does not hold a JSON object")
    return data


def read_labels(file: str | Path) -> list[str]:
    """A labels file: one class name per line, in logit order (blank lines are skipped)."""
    file = Path(file)
    labels = [line.strip() for line in _read_text(file, "the labels file").splitlines() if line.strip()]
    if not labels:
        raise ValueError(f"the labels file {file} holds no labels")
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"the labels file {file} repeats {', '.join(dup[:5])}")
    return labels


def _resolve(src: Path) -> tuple[Path, str | None]:
    """A path as it is, or an "org/name" model id resolved in the local HF cache (-> snapshot, id)."""
    if src.exists() or not is_hub_id(str(src)):
        return src, None
    return resolve_hub_id(str(src)), str(src)


def _import_fairseq(src: Path, ema: bool, labels: list[str] | None, dictionary: Path | None) -> Imported:
    checkpoint = load_fairseq_checkpoint(src)
    symbols, beside = None, src.parent / "dict.ltr.txt"
    if dictionary is not None:
        symbols = read_dictionary(_read_text(dictionary, "the dictionary"), str(dictionary))
    elif (fairseq_model_name(checkpoint) == "wav2vec_ctc" and dictionary_symbols(checkpoint.get("task_state")) is None
          and beside.is_file()):  # where fairseq's fine-tuning data keeps it
        symbols = read_dictionary(_read_text(beside, "the dictionary"), str(beside))
    try:
        imported = map_fairseq(checkpoint, ema=ema, labels=labels, dictionary=symbols)
    except ValueError as e:  # CheckpointError included: name the source
        raise type(e)(f"{src}: {e}") from None
    if dictionary is None and symbols is not None:
        imported.warnings.append(f"the CTC vocabulary comes from {beside} (the checkpoint holds no dictionary)")
    return imported


def _import_hf(src: Path, labels: list[str] | None) -> Imported:
    config, state, preprocessor = read_foreign_weights(src)
    vocab = _read_json_file(src / "vocab.json")
    tokenizer_config = _read_json_file(src / "tokenizer_config.json")
    try:
        return map_hf(config, state, preprocessor, vocab, tokenizer_config, labels)
    except ValueError as e:  # CheckpointError included: name the source
        raise type(e)(f"{src}: {e}") from None


def convert(
    src: str | Path,
    out: str | Path,
    name: str | None = None,
    tokenizer: str | Path | Sequence[str | Path] | None = None,
    dtype: DType | None = None,
    labels: str | Path | list[str] | None = None,
    ema: bool = False,
    dictionary: str | Path | None = None,
) -> Path:
    """Convert a HuggingFace Data2VecText / Data2VecAudio model or a fairseq data2vec 2.0 checkpoint
    into a d2v checkpoint.

    Args:
        src: a HF directory with config.json and model.safetensors (or shards, or pytorch_model.bin;
            an optional preprocessor_config.json sets audio normalization and sample rate, vocab.json
            names a CTC model's outputs); an "org/name" id found in the local HF cache; or a fairseq
            `.pt` file (pretrained data2vec_multi, mae_image_classification, wav2vec_ctc).
        out: checkpoint directory to write; an existing one is replaced, anything else is refused.
        name: the checkpoint's name (default: the source directory's name, the model id's name, or
            the `.pt` file's stem).
        tokenizer: text models: a tokenizer's path or paths (see `d2v.tokenizer.find_tokenizer`); by
            default the one a HF `src` holds (tokenizer.json, vocab.json + merges.txt, a sentencepiece
            model). Its ids must be the model's, else it is refused; without any tokenizer the
            checkpoint takes token ids only.
        dtype: store weights as "float32", "float16" or "bfloat16" (default float32).
        labels: class names of a classifier, one per logit (a list, or a file with one per line);
            default: HF id2label, or "0".."N-1" for a fairseq image classifier.
        ema: fairseq pretrained checkpoints: take the EMA teacher's weights instead of the student's.
        dictionary: fairseq CTC models: the letter dictionary (dict.ltr.txt); default: the one in
            the checkpoint, else a dict.ltr.txt beside it.

    Returns:
        The checkpoint directory.

    Raises:
        CheckpointError: unreadable source, missing or leftover weights, or an unsafe `out`.
        ValueError: an unsupported model type (e.g. data2vec-vision, wav2vec 2.0) or setting; a
            tokenizer that cannot be read or does not fit the model (`d2v.tokenizer.TokenizerError`).
    """
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype!r}")
    out = Path(out)
    src, hub_id = _resolve(Path(src))
    if labels is not None and not isinstance(labels, list):
        labels = read_labels(labels)
    if src.is_file():
        imported = _import_fairseq(src, ema, labels, None if dictionary is None else Path(dictionary))
        default_name = src.stem
    else:
        if ema:
            raise ValueError(f"{src}: --ema applies to fairseq pretrained checkpoints; HF models hold no EMA teacher")
        if dictionary is not None:
            raise ValueError(f"{src}: --dict applies to fairseq CTC checkpoints; HF CTC models use their vocab.json")
        imported = _import_hf(src, labels)
        default_name = hub_id.split("/")[1] if hub_id else src.resolve().name
    notes = list(imported.warnings)
    given = [tokenizer] if isinstance(tokenizer, (str, Path)) else list(tokenizer or [])
    if imported.encoder.modality != "text" and given:
        raise ValueError(f"a tokenizer applies to text models only, not {imported.model_type}")
    files = None
    if imported.encoder.modality == "text":
        files = _tokenizer(src, given, imported)
        if files is None:
            found_in = f" or found in {src}" if src.is_dir() else ""
            notes.append(f"no tokenizer given{found_in}: the checkpoint takes token ids only (pass --tokenizer with "
                         f"{ACCEPTED} to accept text)")
    _check_out(out)
    model = build_imported(imported)
    provenance = {
        "command": "d2v convert",
        "source": hub_id or str(src),
        **({"resolved": str(src)} if hub_id else {}),
        "source_model_type": imported.model_type,
        **imported.provenance,
        "converted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    cfg = CheckpointConfig(name or default_name, imported.encoder, imported.head, imported.preprocessing, provenance)
    path = save_checkpoint(out, model, cfg, files, FLOAT_DTYPES[dtype] if dtype else None)
    for note in notes:
        warnings.warn(note, ConversionWarning, stacklevel=2)
    return path


def run_convert(args: argparse.Namespace) -> int:
    """Run `d2v convert`; errors print one line to stderr and return 2, warnings print and continue."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConversionWarning)
            path = convert(args.src, args.out, args.name, args.tokenizer, args.dtype,
                           args.labels, args.ema, args.dictionary)
    except (CheckpointError, ValueError, OSError) as e:
        message = " ".join(str(e).split("\n"))  # one line, whatever the source said
        print(f"d2v convert: error: {message}", file=sys.stderr)
        return 2
    for w in caught:
        if issubclass(w.category, ConversionWarning):
            print(f"d2v convert: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(f"wrote {path}")
    return 0
