"""Text from plain files (one example per line, or one per file) or JSONL, tokenized into
`<s> ids </s>` by `d2v.tokenizer` (any kind it reads: d2v's sentencepiece, XLM-R's, tokenizer.json,
byte-level BPE, fairseq), the same tokenizer the server and `d2v embed` use. A run's tokenizer has
the model's special ids (<s> 0, <pad> 1, </s> 2 for a model built here). When a run has no tokenizer,
`train_tokenizer` makes one from its corpus (unigram sentencepiece with <s> 0, <pad> 1, </s> 2,
<unk> 3) and the run saves it with its checkpoints.
"""

import io
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm
import torch

from d2v.atomic import atomic_write
from d2v.tokenizer import TextTokenizer, TokenizerFiles, find_tokenizer
from d2v.tokenizer.spec import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from d2v.training.data.manifest import Record, report_skip
from d2v.training.data.sampler import Example

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "UNK_ID",
    "PackedTextDataset",
    "TextDataset",
    "Tokenizer",
    "record_text",
    "train_tokenizer",
]


class Tokenizer(TextTokenizer):
    """A run's tokenizer: a `TextTokenizer` whose <s>, <pad>, </s> ids are the model's.

    Args:
        source: its files, or a path as `--tokenizer` takes it (a sentencepiece model, a tokenizer.json,
            a directory).
        bos_id, pad_id, eos_id: the model's special ids (d2v's by default).

    Raises:
        TokenizerError: the files cannot be read, or the special ids are not the model's.
    """

    def __init__(self, source: str | Path | TokenizerFiles, bos_id: int = BOS_ID, pad_id: int = PAD_ID,
                 eos_id: int = EOS_ID):
        super().__init__(source if isinstance(source, TokenizerFiles) else find_tokenizer([source]))
        self.check_special_ids(bos_id, pad_id, eos_id)


def train_tokenizer(texts: Iterable[str], path: str | Path, vocab_size: int) -> Path:
    """Train a unigram sentencepiece model on `texts` and write it to `path` atomically. The
    vocabulary may come out smaller than `vocab_size` on a small corpus."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        bos_id=BOS_ID, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, hard_vocab_limit=False,
        character_coverage=0.9995, input_sentence_size=1_000_000, shuffle_input_sentence=False,
        num_threads=2, minloglevel=2,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, model.getvalue())
    return path


def record_text(rec: Record) -> str | None:
    """The record's text (read from its file when it names one), or None after reporting why not."""
    if rec.is_text:
        return rec.source
    try:
        return Path(rec.source).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        report_skip(rec.source, f"cannot read the text ({type(e).__name__}: {e})")
        return None


class TextDataset(torch.utils.data.Dataset):
    """Records -> (T,) token ids; items are (index, seed) pairs (text takes no augmentation)."""

    def __init__(self, records: list[Record], labels: list[str] | None, tokenizer: Tokenizer, max_tokens: int):
        self.records = records
        self.label_ids = {name: i for i, name in enumerate(labels or [])}
        self.tokenizer, self.max_tokens = tokenizer, max_tokens

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, int]) -> Example | None:
        rec = self.records[item[0]]
        text = record_text(rec)
        if text is None:
            return None
        if not text:
            report_skip(rec.source if not rec.is_text else f"example {item[0]}", "empty text")
            return None
        ids = torch.tensor(self.tokenizer.encode(text, self.max_tokens))
        return Example(ids, self.label_ids.get(rec.label, -1) if rec.label is not None else -1)


class PackedTextDataset(torch.utils.data.Dataset):
    """Pretraining text as the reference reads it (fairseq `sample_break_mode: none`): every example
    tokenized as <s> ids </s>, concatenated in record order, and cut into blocks of exactly
    `max_tokens` tokens (the last, shorter block is dropped). Unreadable records are reported and
    left out. Items are (index, seed) pairs."""

    def __init__(self, records: list[Record], tokenizer: Tokenizer, max_tokens: int):
        stream: list[int] = []
        for rec in records:
            text = record_text(rec)
            if text:
                stream += tokenizer.encode(text)
        n = len(stream) // max_tokens
        if n == 0:
            raise ValueError(f"the corpus holds {len(stream)} tokens, less than one block of {max_tokens}")
        self.blocks = torch.tensor(stream[: n * max_tokens]).view(n, max_tokens)  # (N, max_tokens)

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, item: tuple[int, int]) -> Example:
        return Example(self.blocks[item[0]], -1)
