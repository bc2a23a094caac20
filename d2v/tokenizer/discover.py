"""Which tokenizer a directory or a list of files holds: what `d2v convert` picks up from a
HuggingFace directory by itself, and what `--tokenizer` (repeatable) names.

A directory, in this order of preference:
  tokenizer.json                               -> hf_tokenizer (what `transformers` itself loads)
  vocab.json + merges.txt                      -> byte_bpe (RoBERTa / GPT-2)
  dict.txt + encoder.json + vocab.bpe          -> fairseq_gpt2
  sentencepiece.bpe.model, spiece.model, sentencepiece.model, tokenizer.model -> sentencepiece
Its tokenizer_config.json / special_tokens_map.json, when present, name the special tokens, the
added tokens read in text, and add_prefix_space, as `transformers` reads them.

Files, by what they are: one sentencepiece model; one tokenizer.json; a vocabulary `.json` with its
merges `.txt`; or a fairseq dict `.txt`, a GPT-2 encoder `.json` and its merges `.bpe`.

A sentencepiece model's id convention comes from its special ids: <s> 0, <pad> 1, </s> 2, <unk> 3
is d2v's own (ids as they are); <unk> 0, <s> 1, </s> 2 without <pad> is XLM-R's (fairseq's offset);
anything else is refused.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from d2v.tokenizer.spec import (
    BYTE_BPE,
    DEFAULT_SPECIAL_TOKENS,
    FAIRSEQ_GPT2,
    HF_TOKENIZER,
    ROBERTA_ADDED_TOKENS,
    SENTENCEPIECE,
    TOKENIZER_MODEL,
    AddedToken,
    TokenizerError,
    TokenizerFiles,
    TokenizerSpec,
)

__all__ = ["ACCEPTED", "find_in_directory", "find_tokenizer", "sentencepiece_ids"]

SENTENCEPIECE_NAMES = ("sentencepiece.bpe.model", "spiece.model", "sentencepiece.model", TOKENIZER_MODEL)
ACCEPTED = ("a sentencepiece model, a tokenizer.json, vocab.json + merges.txt, dict.txt + encoder.json + vocab.bpe, "
            "or a directory holding one of them")


def sentencepiece_ids(path: Path) -> str:
    """"sentencepiece" or "fairseq": the id convention of a sentencepiece model, from its special ids."""
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except Exception as e:  # noqa: BLE001 - sentencepiece raises RuntimeError, OSError, ...
        raise TokenizerError(f"{path} is not a sentencepiece model ({' '.join(str(e).split())[:300]})") from None
    found = (sp.bos_id(), sp.pad_id(), sp.eos_id(), sp.unk_id())
    if found == (0, 1, 2, 3):
        return "sentencepiece"
    if found == (1, -1, 2, 0):
        return "fairseq"
    raise TokenizerError(f"{path}: special ids <s> {found[0]}, <pad> {found[1]}, </s> {found[2]}, <unk> {found[3]} "
                         "are neither d2v's (<s> 0, <pad> 1, </s> 2, <unk> 3) nor XLM-R's (<unk> 0, <s> 1, </s> 2, "
                         "no <pad>)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path} is not valid JSON ({' '.join(str(e).split())[:200]})") from None


def _token_text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str) and value["content"]:
        return value["content"]
    return None


def _hf_settings(directory: Path) -> dict[str, Any]:
    """Special tokens, added tokens and add_prefix_space from a HF directory's tokenizer_config.json
    and special_tokens_map.json (only what they say)."""
    settings: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (directory / name).is_file():
            data = _read_json(directory / name)
            if isinstance(data, dict):
                config.update(data)
    special = {role: _token_text(config.get(f"{role}_token")) for role in DEFAULT_SPECIAL_TOKENS}
    settings["special_tokens"] = {**DEFAULT_SPECIAL_TOKENS, **{k: v for k, v in special.items() if v}}
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict) and decoder:
        added = []
        for key, t in sorted(decoder.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else -1):
            if not (str(key).isdigit() and isinstance(t, dict) and _token_text(t)):
                raise TokenizerError(f"{directory / 'tokenizer_config.json'}: added_tokens_decoder entry {key!r} "
                                     "is not a token")
            added.append(AddedToken(_token_text(t), int(key), bool(t.get("lstrip", False)),
                                    bool(t.get("rstrip", False)), bool(t.get("single_word", False))))
        settings["added_tokens"] = tuple(added)
    if isinstance(config.get("add_prefix_space"), bool):
        settings["add_prefix_space"] = config["add_prefix_space"]
    return settings


def _files(kind: str, paths: dict[str, Path], settings: dict[str, Any]) -> TokenizerFiles:
    """The tokenizer's files and its spec (files under their canonical names, as a checkpoint holds them)."""
    options: dict[str, Any] = {}
    if kind == SENTENCEPIECE:
        options["ids"] = sentencepiece_ids(paths["model"])
        if options["ids"] == "fairseq":
            options["added_tokens"] = settings.get("added_tokens", ROBERTA_ADDED_TOKENS)
    if kind in (HF_TOKENIZER, BYTE_BPE):
        options["special_tokens"] = settings.get("special_tokens", dict(DEFAULT_SPECIAL_TOKENS))
    if kind == BYTE_BPE:
        options["added_tokens"] = settings.get("added_tokens", ROBERTA_ADDED_TOKENS)
        options["add_prefix_space"] = settings.get("add_prefix_space", False)
    return TokenizerFiles(TokenizerSpec.canonical(kind, **options), paths)


def find_in_directory(directory: str | Path) -> TokenizerFiles | None:
    """The tokenizer a (HuggingFace) directory holds, by the order of preference above; None if none."""
    d = Path(directory)
    has = {p.name for p in d.iterdir() if p.is_file()} if d.is_dir() else set()
    if "tokenizer.json" in has:
        return _files(HF_TOKENIZER, {"tokenizer": d / "tokenizer.json"}, _hf_settings(d))
    if {"vocab.json", "merges.txt"} <= has:
        return _files(BYTE_BPE, {"vocab": d / "vocab.json", "merges": d / "merges.txt"}, _hf_settings(d))
    if {"dict.txt", "encoder.json", "vocab.bpe"} <= has:
        return _files(FAIRSEQ_GPT2, {"dict": d / "dict.txt", "encoder": d / "encoder.json", "bpe": d / "vocab.bpe"},
                      {})
    for name in SENTENCEPIECE_NAMES:
        if name in has:
            return _files(SENTENCEPIECE, {"model": d / name}, _hf_settings(d))
    return None


def _is_tokenizer_json(path: Path) -> bool:
    data = _read_json(path)
    return isinstance(data, dict) and "model" in data and isinstance(data["model"], dict)


def find_tokenizer(paths: Sequence[str | Path]) -> TokenizerFiles:
    """The tokenizer that `--tokenizer` values name: one directory, or its files (see above).

    Raises:
        TokenizerError: the paths do not exist, or do not make up one tokenizer of a known kind.
    """
    given = [Path(p) for p in paths]
    for p in given:
        if not p.exists():
            raise TokenizerError(f"--tokenizer {p}: no such file or directory")
    if len(given) == 1 and given[0].is_dir():
        found = find_in_directory(given[0])
        if found is None:
            raise TokenizerError(f"--tokenizer {given[0]}: the directory holds no tokenizer (expected {ACCEPTED})")
        return found
    if any(p.is_dir() for p in given):
        raise TokenizerError("--tokenizer: give one directory, or files, not both")
    by_suffix: dict[str, list[Path]] = {}
    for p in given:
        by_suffix.setdefault(p.suffix.lower(), []).append(p)
    shape = {k: len(v) for k, v in by_suffix.items()}
    one = {k: v[0] for k, v in by_suffix.items()}
    if shape == {".json": 1}:
        if not _is_tokenizer_json(one[".json"]):
            raise TokenizerError(f"--tokenizer {one['.json']} is not a tokenizer.json; a vocab.json needs its "
                                 "merges.txt (pass --tokenizer vocab.json --tokenizer merges.txt)")
        return _files(HF_TOKENIZER, {"tokenizer": one[".json"]}, {})
    if shape == {".json": 1, ".txt": 1}:
        return _files(BYTE_BPE, {"vocab": one[".json"], "merges": one[".txt"]}, {})
    if shape == {".json": 1, ".txt": 1, ".bpe": 1}:
        return _files(FAIRSEQ_GPT2, {"dict": one[".txt"], "encoder": one[".json"], "bpe": one[".bpe"]}, {})
    if len(given) == 1 and given[0].suffix.lower() not in (".json", ".txt", ".bpe"):
        return _files(SENTENCEPIECE, {"model": given[0]}, {})
    names = " + ".join(p.name for p in given)
    raise TokenizerError(f"--tokenizer {names}: cannot tell which tokenizer these make up; pass {ACCEPTED}")
