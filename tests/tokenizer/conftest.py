"""Tokenizer files the tests here train themselves: a byte-level BPE, the same vocabulary as fairseq's
dict.txt + GPT-2 BPE files, and an XLM-R-style sentencepiece model."""

import pytest
from texts import fairseq_files_from_roberta, train_byte_bpe, train_xlmr_sentencepiece


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("files")
    bpe = train_byte_bpe(root / "bpe", vocab_size=350)
    return {"bpe": bpe, "fq": fairseq_files_from_roberta(bpe / "vocab.json", bpe / "merges.txt", root / "fq"),
            "spm": train_xlmr_sentencepiece(root / "xlmr" / "sentencepiece.bpe.model", vocab_size=200)}
