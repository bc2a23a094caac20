"""The `preprocessing.tokenizer` field of a text checkpoint's config.json: which kind of tokenizer,
which files inside the checkpoint directory, and the few settings that make its ids the model's.

    "tokenizer": "tokenizer.model"                  d2v's own sentencepiece model (the short form)
    "tokenizer": null                               no tokenizer: the model takes token ids only
    "tokenizer": {"kind": "sentencepiece", "files": {"model": "tokenizer.model"}, "ids": "fairseq",
                  "added_tokens": [...]}           an XLM-R-style sentencepiece model
    "tokenizer": {"kind": "hf_tokenizer", "files": {"tokenizer": "tokenizer.json"}, "special_tokens": {...}}
    "tokenizer": {"kind": "byte_bpe", "files": {"vocab": "vocab.json", "merges": "merges.txt"},
                  "special_tokens": {...}, "added_tokens": [...], "add_prefix_space": false}
    "tokenizer": {"kind": "fairseq_gpt2", "files": {"dict": "dict.txt", "encoder": "encoder.json",
                  "bpe": "vocab.bpe"}}

A file name must stay inside the directory that holds the config: an absolute path, a `..` part or
a symbolic link that resolves outside it is refused, naming the field. numpy-free and torch-free.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d2v.atomic import atomic_write

__all__ = [
    "BOS_ID",
    "CANONICAL_NAMES",
    "DEFAULT_SPECIAL_TOKENS",
    "EOS_ID",
    "KINDS",
    "PAD_ID",
    "ROBERTA_ADDED_TOKENS",
    "TOKENIZER_MODEL",
    "UNK_ID",
    "AddedToken",
    "TokenizerError",
    "TokenizerFiles",
    "TokenizerSpec",
]

TOKENIZER_MODEL = "tokenizer.model"
"""The file name of a sentencepiece model inside a checkpoint, an export or a run directory (the one
d2v trains when no tokenizer is given, and the short form of the config field)."""
BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
"""d2v's special token ids (fairseq's and RoBERTa's): the ids of the tokenizers d2v trains, and what a
text checkpoint whose preprocessing section names none uses."""

SENTENCEPIECE, HF_TOKENIZER, BYTE_BPE, FAIRSEQ_GPT2 = "sentencepiece", "hf_tokenizer", "byte_bpe", "fairseq_gpt2"
KINDS: dict[str, tuple[str, ...]] = {
    SENTENCEPIECE: ("model",),
    HF_TOKENIZER: ("tokenizer",),
    BYTE_BPE: ("vocab", "merges"),
    FAIRSEQ_GPT2: ("dict", "encoder", "bpe"),
}
"""Each kind and the roles of its files."""
CANONICAL_NAMES: dict[str, str] = {
    "model": TOKENIZER_MODEL, "tokenizer": "tokenizer.json", "vocab": "vocab.json", "merges": "merges.txt",
    "dict": "dict.txt", "encoder": "encoder.json", "bpe": "vocab.bpe",
}
"""The name each role's file gets inside a checkpoint or export directory."""
ID_SCHEMES = ("sentencepiece", "fairseq")
"""sentencepiece models: "sentencepiece" uses the piece ids as they are (d2v's own models: <s> 0,
<pad> 1, </s> 2, <unk> 3); "fairseq" is XLM-R's: <s> 0, <pad> 1, </s> 2, <unk> 3, piece i -> i + 1."""
DEFAULT_SPECIAL_TOKENS: dict[str, str] = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
FIELD = "preprocessing.tokenizer"


class TokenizerError(ValueError):
    """A tokenizer cannot be read, does not fit its model, or its config field is invalid. The
    message is one line that names the file or the field."""


@dataclass(frozen=True)
class AddedToken:
    """A special token that, as in `transformers`, is read as that token where its text appears in
    the input (e.g. a literal "<s>"), with the `tokenizers` library's matching options."""

    content: str
    id: int | None = None
    """Its id; None: the vocabulary's (or the next free one)."""
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"content": self.content}
        if self.id is not None:
            out["id"] = self.id
        out.update(lstrip=self.lstrip, rstrip=self.rstrip, single_word=self.single_word)
        return out


ROBERTA_ADDED_TOKENS = tuple(AddedToken(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>"))
"""What `transformers` reads as special tokens in text for RoBERTa- and XLM-R-style tokenizers."""


def _where(where: str | None, key: str) -> str:
    """The field's name, after the config file's when `where` names it."""
    return f"{where}: {FIELD}{key}" if where else f"{FIELD}{key}"


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise TokenizerError(f"{where} must be true or false, not {value!r}")
    return value


def _added(value: Any, where: str) -> tuple[AddedToken, ...]:
    if not isinstance(value, list):
        raise TokenizerError(f"{where} must be a list of tokens")
    out = []
    for i, item in enumerate(value):
        w = f"{where}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("content"), str) or not item["content"]:
            raise TokenizerError(f"{w} must be an object with a non-empty 'content' string")
        unknown = set(item) - {"content", "id", "lstrip", "rstrip", "single_word"}
        if unknown:
            raise TokenizerError(f"{w} has unknown keys {sorted(unknown)}")
        ident = item.get("id")
        if ident is not None and (not isinstance(ident, int) or isinstance(ident, bool) or ident < 0):
            raise TokenizerError(f"{w}.id must be a non-negative integer")
        out.append(AddedToken(item["content"], ident, *(_bool(item.get(k, False), f"{w}.{k}")
                                                          for k in ("lstrip", "rstrip", "single_word"))))
    return tuple(out)


def _inside(directory: Path, name: Any, where: str) -> Path:
    """`directory / name`, refused when the name is not a plain relative path that stays inside."""
    if not isinstance(name, str) or not name:
        raise TokenizerError(f"{where} must be a file name, not {name!r}")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or "\\" in name:
        raise TokenizerError(f"{where} = {name!r} names a file outside the model directory; tokenizer files "
                             "must lie inside it")
    path = directory / rel
    try:
        inside = path.resolve().is_relative_to(directory.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise TokenizerError(f"{where} = {name!r} resolves outside the model directory (a symbolic link?); "
                             "tokenizer files must lie inside it")
    return path


@dataclass(frozen=True)
class TokenizerSpec:
    """The parsed `preprocessing.tokenizer` field."""

    kind: str
    files: dict[str, str]
    """role -> file name inside the model directory."""
    ids: str = "sentencepiece"
    """sentencepiece only: "sentencepiece" or "fairseq" (see ID_SCHEMES)."""
    special_tokens: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SPECIAL_TOKENS))
    """hf_tokenizer and byte_bpe: the text of the bos, pad, eos and unk tokens."""
    added_tokens: tuple[AddedToken, ...] = ()
    """byte_bpe and fairseq-id sentencepiece: special tokens read as such in the text (when the field
    leaves them out: ROBERTA_ADDED_TOKENS)."""
    add_prefix_space: bool = False
    """byte_bpe: a space before the text, as `transformers`' `add_prefix_space`."""
    from_string: bool = field(default=False, compare=False, repr=False)
    """Read from the short form (messages then name the field itself, not `.files.model`)."""

    @classmethod
    def canonical(cls, kind: str, **options: Any) -> "TokenizerSpec":
        """A spec of `kind` whose files have their canonical names."""
        return cls(kind, {role: CANONICAL_NAMES[role] for role in KINDS[kind]}, **options)

    @property
    def is_short_form(self) -> bool:
        """d2v's own sentencepiece model under its usual name: written as the plain string."""
        return (self.kind == SENTENCEPIECE and self.ids == "sentencepiece" and not self.added_tokens
                and self.files == {"model": CANONICAL_NAMES["model"]})

    def to_field(self) -> str | dict[str, Any]:
        """The value written to config.json."""
        if self.is_short_form:
            return self.files["model"]
        out: dict[str, Any] = {"kind": self.kind, "files": dict(self.files)}
        if self.kind == SENTENCEPIECE:
            out["ids"] = self.ids
        if self.kind in (HF_TOKENIZER, BYTE_BPE):
            out["special_tokens"] = dict(self.special_tokens)
        if self.kind == BYTE_BPE or (self.kind == SENTENCEPIECE and self.ids == "fairseq"):
            out["added_tokens"] = [t.to_dict() for t in self.added_tokens]
        if self.kind == BYTE_BPE:
            out["add_prefix_space"] = self.add_prefix_space
        return out

    @classmethod
    def from_field(cls, value: Any, where: str | None = None) -> "TokenizerSpec | None":
        """Parse the field (None: no tokenizer). The one check of its form: `read_config` (through
        `d2v.model.checkpoint_config.check_preprocessing`) validates every checkpoint's and export's
        field with it.

        Args:
            where: the config file, named before the field in messages (None: the field alone).

        Raises:
            TokenizerError: `[<where>: ]preprocessing.tokenizer<.key> <what is wrong>`.
        """
        if value is None:
            return None
        if isinstance(value, str):
            if not value:
                raise TokenizerError(f"{_where(where, '')} must be a file name, an object or null, not ''")
            return cls(SENTENCEPIECE, {"model": value}, from_string=True)
        if not isinstance(value, dict):
            raise TokenizerError(f"{_where(where, '')} must be a file name, an object or null, not "
                                 f"{type(value).__name__}")
        unknown = set(value) - {"kind", "files", "ids", "special_tokens", "added_tokens", "add_prefix_space"}
        if unknown:
            raise TokenizerError(f"{_where(where, '')} has unknown keys {sorted(unknown)}")
        kind = value.get("kind")
        if kind not in KINDS:
            raise TokenizerError(f"{_where(where, '.kind')} is {kind!r}; expected one of {', '.join(KINDS)}")
        files = value.get("files")
        if not isinstance(files, dict) or set(files) != set(KINDS[kind]):
            raise TokenizerError(f"{_where(where, '.files')} must name the {kind} files "
                                 f"{', '.join(repr(r) for r in KINDS[kind])}")
        for role, name in files.items():
            if not isinstance(name, str) or not name:
                raise TokenizerError(f"{_where(where, f'.files.{role}')} must be a file name")
        ids = value.get("ids", "sentencepiece")
        if ids not in ID_SCHEMES or (kind != SENTENCEPIECE and "ids" in value):
            raise TokenizerError(f"{_where(where, '.ids')} is {ids!r}; sentencepiece models take one of "
                                 f"{', '.join(ID_SCHEMES)}")
        special = value.get("special_tokens", DEFAULT_SPECIAL_TOKENS)
        if (not isinstance(special, dict) or set(special) - set(DEFAULT_SPECIAL_TOKENS)
                or not all(isinstance(v, str) and v for v in special.values())):
            raise TokenizerError(f"{_where(where, '.special_tokens')} must map some of "
                                 f"{', '.join(DEFAULT_SPECIAL_TOKENS)} to token strings")
        reads_added = kind == BYTE_BPE or (kind == SENTENCEPIECE and ids == "fairseq")
        if "added_tokens" in value and not reads_added:
            raise TokenizerError(f"{_where(where, '.added_tokens')} applies to byte_bpe and fairseq-id "
                                 "sentencepiece tokenizers only")
        added = (_added(value["added_tokens"], _where(where, ".added_tokens")) if "added_tokens" in value
                 else ROBERTA_ADDED_TOKENS if reads_added else ())
        prefix = _bool(value.get("add_prefix_space", False), _where(where, ".add_prefix_space"))
        return cls(kind, dict(files), ids, {**DEFAULT_SPECIAL_TOKENS, **special}, added, prefix)

    def locate(self, directory: str | Path, where: str = "config.json") -> "TokenizerFiles":
        """The files in `directory`, each checked to lie inside it and to exist (`where`: the config
        file's name in `directory`, for messages)."""
        directory = Path(directory)
        paths = {}
        for role, name in self.files.items():
            key = "" if self.from_string else f".files.{role}"
            path = _inside(directory, name, _where(str(directory / where), key))
            if not path.is_file():
                raise TokenizerError(f"{directory}: the tokenizer file {name!r} named in {where} is missing"
                                     + (f" ({FIELD}{key})" if key else ""))
            paths[role] = path
        return TokenizerFiles(self, paths)


@dataclass(frozen=True)
class TokenizerFiles:
    """A tokenizer's files where they are now (`paths`, by role) and its spec."""

    spec: TokenizerSpec
    paths: dict[str, Path]

    def placed_in(self, directory: str | Path) -> "TokenizerFiles":
        """The same tokenizer as `copy_to(directory)` leaves it: canonical names in `directory`."""
        directory = Path(directory)
        spec = TokenizerSpec(self.spec.kind, {r: CANONICAL_NAMES[r] for r in self.paths}, self.spec.ids,
                             dict(self.spec.special_tokens), self.spec.added_tokens, self.spec.add_prefix_space)
        return TokenizerFiles(spec, {role: directory / name for role, name in spec.files.items()})

    def copy_to(self, directory: str | Path) -> "TokenizerFiles":
        """Copy the files into `directory` under their canonical names, each written atomically
        (`d2v.atomic`); the copy's files and spec."""
        placed = self.placed_in(directory)
        for role, src in self.paths.items():
            dst = placed.paths[role]
            if not dst.exists() or src.resolve() != dst.resolve():
                atomic_write(dst, src.read_bytes())  # a kill leaves the old file or the new one
        return placed

    def describe(self) -> str:
        """The files, for messages: "a/vocab.json + a/merges.txt"."""
        return " + ".join(str(p) for p in self.paths.values())
