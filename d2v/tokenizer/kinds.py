"""The tokenizer kinds, each reading its files and turning text into the model's ids (no <s>, </s>):

- sentencepiece, ids "sentencepiece": the piece ids as they are (d2v's own models);
- sentencepiece, ids "fairseq": XLM-R's convention (<s> 0, <pad> 1, </s> 2, <unk> 3, piece i -> i + 1,
  <mask> after the last piece), the special tokens' text read as those tokens as `transformers` does;
- hf_tokenizer: a `tokenizers` library `tokenizer.json`, run as it is (its truncation and padding off);
- byte_bpe: RoBERTa/GPT-2 `vocab.json` + `merges.txt`, built as `transformers`' RobertaTokenizer builds
  it (byte-level pre-tokenizer, BPE, its special tokens);
- fairseq_gpt2: GPT-2's `encoder.json` + `vocab.bpe` (byte-level BPE), each GPT-2 id then looked up in
  a fairseq `dict.txt`, whose line i is id 4 + i (after <s> <pad> </s> <unk>); absent ids are <unk>.
  As in fairseq, text that looks like a special token is plain text.

BPE is the `tokenizers` library's; nothing here splits words by hand. Every failure to read a file is
a `TokenizerError` naming it.
"""

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from d2v.tokenizer.spec import (
    BYTE_BPE,
    FAIRSEQ_GPT2,
    HF_TOKENIZER,
    SENTENCEPIECE,
    AddedToken,
    TokenizerError,
    TokenizerFiles,
)

__all__ = ["Kind", "load_kind"]

FAIRSEQ_SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
"""fairseq's Dictionary: these four first, then the file's symbols (dict.txt) or pieces (XLM-R)."""
SPECIAL_ROLES = ("bos", "pad", "eos", "unk")


def _reason(e: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]


class Kind(ABC):
    """Text -> ids of one tokenizer kind."""

    vocab_size: int
    """Every id it produces is below this."""
    specials: dict[str, int | None]
    """The ids it gives "bos", "pad", "eos" and "unk" (None: it has no such token)."""

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """The ids of `text`, without <s> and </s>."""


def _hf_added(tokens: tuple[AddedToken, ...]) -> list[Any]:
    from tokenizers import AddedToken as HFAddedToken

    return [HFAddedToken(t.content, single_word=t.single_word, lstrip=t.lstrip, rstrip=t.rstrip, normalized=False,
                         special=True) for t in tokens]


class SentencePieceKind(Kind):
    def __init__(self, path: Path, ids: str, added: tuple[AddedToken, ...]):
        import sentencepiece as spm

        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
            n = self.sp.get_piece_size()
        except Exception as e:  # noqa: BLE001 - sentencepiece raises RuntimeError, OSError, TypeError...
            raise TokenizerError(f"{path} is not a sentencepiece model ({_reason(e)})") from None
        if n < 1:
            raise TokenizerError(f"{path} is not a sentencepiece model (it holds no pieces)")
        found = {"bos": self.sp.bos_id(), "pad": self.sp.pad_id(), "eos": self.sp.eos_id(), "unk": self.sp.unk_id()}
        self.fairseq = ids == "fairseq"
        if not self.fairseq:
            self.vocab_size = n
            self.specials = {k: (v if v >= 0 else None) for k, v in found.items()}
            self.splitter = None
            return
        if (found["unk"], found["bos"], found["eos"]) != (0, 1, 2):
            raise TokenizerError(f"{path}: fairseq ids need XLM-R's sentencepiece layout (<unk> 0, <s> 1, </s> 2); "
                                 f"this model has <unk> {found['unk']}, <s> {found['bos']}, </s> {found['eos']}")
        self.table = np.arange(1, n + 1, dtype=np.int64)  # piece i -> i + 1 ...
        self.table[0] = FAIRSEQ_SPECIALS["<unk>"]  # ... and sentencepiece's <unk> -> fairseq's
        added_ids = {}
        for t in added:
            ident = t.id
            if ident is None:
                ident = FAIRSEQ_SPECIALS.get(t.content, n + 1 if t.content == "<mask>" else None)
            if ident is None:
                piece = self.sp.piece_to_id(t.content)
                if piece == found["unk"]:
                    raise TokenizerError(f"{path}: the added token {t.content!r} has no id")
                ident = int(self.table[piece])
            added_ids[t.content] = ident
        self.vocab_size = max([n + 1, *(i + 1 for i in added_ids.values())])
        self.specials = dict(zip(SPECIAL_ROLES, range(4), strict=True))
        self.splitter = _splitter(added, added_ids) if added else None
        self.added = set(added_ids.values())

    def tokenize(self, text: str) -> list[int]:
        if not self.fairseq:
            return self.sp.encode(text)
        if self.splitter is None:
            return self.table[self.sp.encode(text)].tolist()
        out: list[int] = []
        enc = self.splitter.encode(text, add_special_tokens=False)
        for ident, token, (start, end) in zip(enc.ids, enc.tokens, enc.offsets, strict=True):
            if ident in self.added and token != _TEXT:
                out.append(ident)
            else:  # the text between special tokens, encoded on its own as transformers does
                out.extend(self.table[self.sp.encode(text[start:end])].tolist())
        return out


_TEXT = "\x00text"


def _splitter(added: tuple[AddedToken, ...], ids: dict[str, int]) -> Any:
    """A `tokenizers` Tokenizer that only finds the added tokens in text: every stretch of text between
    them comes out as one `_TEXT` token whose offsets give it back."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    vocab = {**ids, _TEXT: max(ids.values()) + 1}
    tok = Tokenizer(WordLevel(vocab, unk_token=_TEXT))
    tok.add_special_tokens(_hf_added(added))
    return tok


def _hf_specials(tok: Any, special_tokens: dict[str, str]) -> dict[str, int | None]:
    return {role: tok.token_to_id(special_tokens[role]) for role in SPECIAL_ROLES}


def _hf_vocab_size(tok: Any) -> int:
    return max(tok.get_vocab(with_added_tokens=True).values(), default=-1) + 1


class HFTokenizerKind(Kind):
    def __init__(self, path: Path, special_tokens: dict[str, str]):
        from tokenizers import Tokenizer

        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - tokenizers raises its own Exception type
            raise TokenizerError(f"{path} is not a tokenizers tokenizer.json ({_reason(e)})") from None
        self.tok.no_truncation()
        self.tok.no_padding()
        self.vocab_size = _hf_vocab_size(self.tok)
        self.specials = _hf_specials(self.tok, special_tokens)

    def tokenize(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids


def _byte_level_bpe(vocab: Path, merges: Path, add_prefix_space: bool) -> Any:
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import BPE

    try:
        json.loads(vocab.read_text(encoding="utf-8"))
        model = BPE.from_file(str(vocab), str(merges))
    except Exception as e:  # noqa: BLE001 - JSON, UTF-8 and tokenizers' own errors
        raise TokenizerError(f"{vocab} + {merges} are not a byte-level BPE vocabulary and merges ({_reason(e)})") \
            from None
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=True)
    return tok


class ByteBPEKind(Kind):
    def __init__(self, vocab: Path, merges: Path, add_prefix_space: bool, added: tuple[AddedToken, ...],
                 special_tokens: dict[str, str]):
        self.tok = _byte_level_bpe(vocab, merges, add_prefix_space)
        for t in added:
            if t.id is not None and self.tok.token_to_id(t.content) not in (None, t.id):
                raise TokenizerError(f"{vocab}: the added token {t.content!r} has id "
                                     f"{self.tok.token_to_id(t.content)}, not {t.id}")
        self.tok.add_special_tokens(_hf_added(added))
        self.vocab_size = _hf_vocab_size(self.tok)
        self.specials = _hf_specials(self.tok, special_tokens)

    def tokenize(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids


def read_fairseq_dict(path: Path) -> dict[str, int]:
    """A fairseq dict.txt as fairseq's Dictionary reads it: symbol -> id, the four specials first, then
    each line's symbol in order ('<symbol> <count>', optionally '#fairseq:overwrite'). Raises
    `TokenizerError` naming the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path} is not a fairseq dict.txt ({_reason(e)})") from None
    index = dict(FAIRSEQ_SPECIALS)
    for number, line in enumerate(lines, start=1):
        try:
            word, count = line.rstrip().rsplit(" ", 1)
            overwrite = count == "#fairseq:overwrite"
            if overwrite:
                word, count = word.rsplit(" ", 1)
            int(count)
        except ValueError:
            raise TokenizerError(f"{path}:{number} is not a fairseq dict.txt line ('<symbol> <count>')") from None
        if word in index:
            if not overwrite:
                raise TokenizerError(f"{path}:{number}: the symbol {word!r} appears twice")
            continue
        index[word] = len(index)
    if len(index) == len(FAIRSEQ_SPECIALS):
        raise TokenizerError(f"{path} is not a fairseq dict.txt (it is empty)")
    return index


class FairseqGPT2Kind(Kind):
    def __init__(self, dictionary: Path, encoder: Path, bpe: Path):
        self.tok = _byte_level_bpe(encoder, bpe, add_prefix_space=False)
        index = read_fairseq_dict(dictionary)
        self.table = np.full(_hf_vocab_size(self.tok), FAIRSEQ_SPECIALS["<unk>"], dtype=np.int64)
        for symbol, ident in index.items():  # GPT-2 BPE ids are written as decimal numbers
            if symbol.isdigit() and int(symbol) < len(self.table):
                self.table[int(symbol)] = ident
        self.vocab_size = len(index)
        self.specials = dict(zip(SPECIAL_ROLES, range(4), strict=True))

    def tokenize(self, text: str) -> list[int]:
        return self.table[self.tok.encode(text, add_special_tokens=False).ids].tolist()


def load_kind(files: TokenizerFiles) -> Kind:
    """Read a tokenizer's files. Raises `TokenizerError` naming the file that cannot be read."""
    spec, p = files.spec, files.paths
    if spec.kind == SENTENCEPIECE:
        return SentencePieceKind(p["model"], spec.ids, spec.added_tokens)
    if spec.kind == HF_TOKENIZER:
        return HFTokenizerKind(p["tokenizer"], spec.special_tokens)
    if spec.kind == BYTE_BPE:
        return ByteBPEKind(p["vocab"], p["merges"], spec.add_prefix_space, spec.added_tokens, spec.special_tokens)
    if spec.kind == FAIRSEQ_GPT2:
        return FairseqGPT2Kind(p["dict"], p["encoder"], p["bpe"])
    raise TokenizerError(f"unknown tokenizer kind {spec.kind!r}")
