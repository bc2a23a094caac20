"""`TextTokenizer`: a text model's tokenizer, the one every text path uses (serving, `d2v embed`,
training data, fine-tuning, export, convert): text -> `<s> ids </s>`, cut to a token limit, with the
ids the model was trained with; and `load_tokenizer`, which reads a model directory's tokenizer and
checks that it fits the model (vocabulary within the embedding table, the model's <s>, <pad>, </s>).
"""

from pathlib import Path
from typing import Any

from d2v.tokenizer.kinds import load_kind
from d2v.tokenizer.spec import BOS_ID, EOS_ID, PAD_ID, TokenizerError, TokenizerFiles, TokenizerSpec

__all__ = ["TextTokenizer", "load_tokenizer", "model_special_ids"]

SPECIAL_NAMES = {"bos": "<s>", "pad": "<pad>", "eos": "</s>"}


class TextTokenizer:
    """A tokenizer read from its files (any kind of `d2v.tokenizer.spec.KINDS`).

    Raises:
        TokenizerError: a file cannot be read as that kind (the message names it).
    """

    def __init__(self, files: TokenizerFiles):
        self.files = files
        self._kind = load_kind(files)
        self.vocab_size: int = self._kind.vocab_size
        """Every id this tokenizer produces is below it."""
        specials = self._kind.specials
        self.bos_id, self.pad_id = specials["bos"], specials["pad"]
        self.eos_id, self.unk_id = specials["eos"], specials["unk"]

    @property
    def spec(self) -> TokenizerSpec:
        return self.files.spec

    def tokenize(self, text: str) -> list[int]:
        """The ids of `text` alone (no <s>, </s>, no limit)."""
        return self._kind.tokenize(text)

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """`<s> ids </s>`, the ids cut so that the whole fits in `max_tokens` (as `transformers`
        truncates)."""
        if self.bos_id is None or self.eos_id is None:
            raise TokenizerError(f"{self.files.describe()}: the tokenizer has no <s> or </s> token")
        ids = self.tokenize(text)
        if max_tokens is not None:
            ids = ids[: max(max_tokens - 2, 0)]
        return [self.bos_id, *ids, self.eos_id]

    def check_model(self, vocab_size: int, bos_id: int, pad_id: int, eos_id: int) -> None:
        """Refuse a tokenizer whose ids are not the model's: more ids than its embedding table holds,
        or <s>, <pad>, </s> ids other than the model's. Raises `TokenizerError` (one line, naming the files)."""
        if self.vocab_size > vocab_size:
            raise TokenizerError(f"{self.files.describe()}: the tokenizer produces ids up to {self.vocab_size - 1} "
                                 f"but the model embeds only {vocab_size} tokens; it is not this model's tokenizer")
        self.check_special_ids(bos_id, pad_id, eos_id)

    def check_special_ids(self, bos_id: int, pad_id: int, eos_id: int) -> None:
        """Refuse <s>, <pad>, </s> ids other than the model's (`TokenizerError`, naming the files)."""
        ours = {"bos": self.bos_id, "pad": self.pad_id, "eos": self.eos_id}
        theirs = {"bos": bos_id, "pad": pad_id, "eos": eos_id}
        wrong = [f"{SPECIAL_NAMES[k]} {'missing' if ours[k] is None else ours[k]} (model {theirs[k]})"
                 for k in ours if ours[k] != theirs[k]]
        if wrong:
            raise TokenizerError(f"{self.files.describe()}: the tokenizer's special ids are not the model's: {', '.join(wrong)}")


def model_special_ids(preprocessing: dict[str, Any]) -> tuple[int, int, int]:
    """The model's (bos, pad, eos) ids from a checkpoint's preprocessing section."""
    try:
        return (int(preprocessing.get("bos_id", BOS_ID)), int(preprocessing.get("pad_id", PAD_ID)),
                int(preprocessing.get("eos_id", EOS_ID)))
    except (TypeError, ValueError):
        raise TokenizerError("preprocessing: bos_id, pad_id and eos_id must be integers") from None


def load_tokenizer(directory: str | Path, preprocessing: dict[str, Any], vocab_size: int,
                   where: str = "config.json") -> TextTokenizer | None:
    """The tokenizer that a model directory's config names (None when it names none), read and
    checked against the model.

    Args:
        directory: the checkpoint or export directory; the tokenizer's files must lie inside it.
        preprocessing: the config's preprocessing section (its `tokenizer` field and special ids).
        vocab_size: the model's embedding table size.
        where: the config file's name in `directory`, for messages.

    Raises:
        TokenizerError: an invalid field, a missing or unreadable file, or ids that are not the model's.
    """
    spec = TokenizerSpec.from_field(preprocessing.get("tokenizer"), str(Path(directory) / where))
    if spec is None:
        return None
    tokenizer = TextTokenizer(spec.locate(directory, where))
    bos, pad, eos = model_special_ids(preprocessing)
    tokenizer.check_model(vocab_size, bos, pad, eos)
    return tokenizer
