"""Text reader: JSONL and plain files, d2v.tokenizer with the model's special ids (d2v's sentencepiece,
XLM-R's mapped, a byte-level BPE), a tokenizer trained when none is given, and unreadable lines or
files reported and skipped."""

import json
import logging

import pytest

from d2v.tokenizer import TokenizerError
from d2v.training.data.manifest import Record, read_records
from d2v.training.data.text import BOS_ID, EOS_ID, PAD_ID, UNK_ID, TextDataset, Tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, glosses) -> Tokenizer:
    path = train_tokenizer(glosses, tmp_path_factory.mktemp("tok") / "spm.model", vocab_size=300)
    return Tokenizer(path)


def test_trained_tokenizer_special_ids(tokenizer, glosses):
    import sentencepiece as spm

    assert (tokenizer.bos_id, tokenizer.pad_id, tokenizer.eos_id, tokenizer.unk_id) == (BOS_ID, PAD_ID, EOS_ID, UNK_ID)
    assert 50 < tokenizer.vocab_size <= 300  # a small corpus may give fewer pieces than asked
    ids = tokenizer.encode(glosses[0], max_tokens=128)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID and PAD_ID not in ids
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer.files.paths["model"]))
    assert ids[1:-1] == sp.encode(glosses[0]) and sp.decode(ids[1:-1]) == glosses[0]  # d2v's ids: the pieces'
    cut = tokenizer.encode(glosses[0], max_tokens=6)
    assert len(cut) == 6 and cut[-1] == EOS_ID


def test_xlmr_style_sentencepiece_is_mapped_to_fairseq_ids(tmp_path, glosses):
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(glosses), model_prefix=str(tmp_path / "xlmr"),
                                   vocab_size=100, hard_vocab_limit=False, minloglevel=2)  # unk 0, bos 1, eos 2
    tok = Tokenizer(tmp_path / "xlmr.model")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "xlmr.model"))
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.encode(glosses[0]) == [0, *(i + 1 if i else 3 for i in sp.encode(glosses[0])), 2]


def test_tokenizer_with_other_special_ids_is_refused(tmp_path, glosses, tokenizer):
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(glosses), model_prefix=str(tmp_path / "other"),
                                   vocab_size=100, hard_vocab_limit=False, minloglevel=2,
                                   unk_id=1, bos_id=2, eos_id=3, pad_id=0)
    with pytest.raises(TokenizerError, match="special ids .* are neither d2v's .* nor XLM-R's"):
        Tokenizer(tmp_path / "other.model")
    with pytest.raises(TokenizerError, match=r"spm.model: the tokenizer's special ids are not the model's: <pad> 1 "
                                             r"\(model 5\)"):
        Tokenizer(tokenizer.files, pad_id=5)  # a model whose pad id is not the tokenizer's


def test_a_byte_level_bpe_feeds_training_data(tmp_path, glosses):
    from texts import train_byte_bpe

    bpe = train_byte_bpe(tmp_path / "bpe", vocab_size=400)
    tok = Tokenizer(bpe / "tokenizer.json")
    assert tok.spec.kind == "hf_tokenizer" and (tok.bos_id, tok.pad_id, tok.eos_id) == (0, 1, 2)
    ds = TextDataset([Record(glosses[0], "a", True)], ["a"], tok, max_tokens=12)
    x = ds[(0, 0)].x
    assert x.tolist() == tok.encode(glosses[0], 12) and len(x) == 12 and x[0] == 0 and x[-1] == 2


def test_jsonl_plain_and_folder_sources(tmp_path, glosses, tokenizer, caplog):
    manifest = tmp_path / "train.jsonl"
    rows = [json.dumps({"text": glosses[0], "label": "a"}), "{not json", json.dumps({"label": "b"}),
            json.dumps({"text": glosses[1]}), json.dumps(["a", "list"])]
    manifest.write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="d2v.training.data"):
        records = read_records(manifest, "text")
    assert records == [Record(glosses[0], "a", True), Record(glosses[1], None, True)]
    messages = " ".join(r.getMessage() for r in caplog.records)
    for line in (2, 3, 5):
        assert f"{manifest}:{line}" in messages
    plain = tmp_path / "corpus.txt"
    plain.write_text(f"{glosses[2]}\n\n{glosses[3]}\n")
    assert [r.source for r in read_records(plain, "text")] == glosses[2:4]
    folder = tmp_path / "docs" / "label_x"
    folder.mkdir(parents=True)
    (folder / "one.txt").write_text(glosses[4])
    (folder / "bad.txt").write_bytes(b"\xff\xfe\xfa not utf-8")
    recs = read_records(tmp_path / "docs", "text")
    assert {r.label for r in recs} == {"label_x"} and not any(r.is_text for r in recs)
    ds = TextDataset(recs, ["label_x"], tokenizer, max_tokens=32)
    items = [ds[(i, 0)] for i in range(len(recs))]
    bad = [r.source for r, item in zip(recs, items, strict=True) if item is None]
    assert bad == [str(folder / "bad.txt")]
    good = next(item for item in items if item is not None)
    assert good.label == 0 and good.x[0] == BOS_ID and len(good.x) <= 32


def test_packed_blocks(tokenizer, glosses):
    from d2v.training.data.text import PackedTextDataset

    records = [Record(g, None, True) for g in glosses]
    ds = PackedTextDataset(records, tokenizer, max_tokens=32)
    stream = [t for g in glosses for t in [BOS_ID, *tokenizer.tokenize(g), EOS_ID]]
    assert len(ds) == len(stream) // 32
    assert ds[(0, 0)].x.tolist() == stream[:32] and ds[(1, 0)].x.tolist() == stream[32:64]
    assert all(ds[(i, 0)].x.shape == (32,) and ds[(i, 0)].label == -1 for i in range(len(ds)))
    with pytest.raises(ValueError, match="less than one block"):
        PackedTextDataset(records[:1], tokenizer, max_tokens=1000)
