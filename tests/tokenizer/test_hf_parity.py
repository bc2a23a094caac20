"""d2v's tokenizers give exactly `transformers.AutoTokenizer`'s ids on 520 varied strings (scripts,
CJK, emoji, combining marks, whitespace runs, tabs and newlines, very long, empty, the special
tokens' own text), untruncated and truncated, for tokenizers the test trains itself:

(a) a byte-level BPE saved as RoBERTa's vocab.json + merges.txt and as tokenizer.json;
(b) an XLM-R-style sentencepiece model (<unk> 0, <s> 1, </s> 2), whose ids transformers shifts by
    fairseq's offset;
(c) the same BPE as fairseq dict.txt + GPT-2 encoder.json + vocab.bpe: RoBERTa's ids (fairseq reads
    the special tokens' text as plain text, as transformers does with split_special_tokens=True)."""

import shutil

import pytest
from texts import fairseq_files_from_roberta, train_byte_bpe, train_xlmr_sentencepiece, varied_texts

from d2v.tokenizer import TextTokenizer, find_in_directory, find_tokenizer

transformers = pytest.importorskip("transformers")

SPECIAL_TEXT = ("<s>", "</s>", "<pad>", "<mask>", "<unk>")
TRUNCATE = 16


@pytest.fixture(scope="module")
def texts() -> list[str]:
    out = varied_texts()
    assert len(out) >= 500 and "" in out and max(map(len, out)) > 2000
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """HF directories (a config.json so that AutoTokenizer knows the tokenizer class) holding each
    tokenizer, and the raw files."""
    root = tmp_path_factory.mktemp("tokenizers")
    bpe = train_byte_bpe(root / "bpe")
    text_cfg = transformers.Data2VecTextConfig(vocab_size=1000, hidden_size=8, num_hidden_layers=1,
                                               num_attention_heads=1, intermediate_size=8)
    dirs = {"roberta": root / "roberta", "json": root / "json", "xlmr": root / "xlmr"}
    for d in dirs.values():
        d.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(bpe / name, dirs["roberta"] / name)
    shutil.copy(bpe / "tokenizer.json", dirs["json"] / "tokenizer.json")
    text_cfg.save_pretrained(dirs["roberta"])
    text_cfg.save_pretrained(dirs["json"])
    spm_file = train_xlmr_sentencepiece(dirs["xlmr"] / "sentencepiece.bpe.model")
    transformers.XLMRobertaConfig(vocab_size=1000).save_pretrained(dirs["xlmr"])
    saved = root / "xlmr-saved"  # what save_pretrained writes: tokenizer.json + tokenizer_config.json
    transformers.AutoTokenizer.from_pretrained(dirs["xlmr"]).save_pretrained(saved)
    fairseq = fairseq_files_from_roberta(bpe / "vocab.json", bpe / "merges.txt", root / "fairseq")
    return {**dirs, "bpe": bpe, "spm": spm_file, "xlmr-saved": saved, "fairseq": fairseq}


def _assert_same(hf, ours: TextTokenizer, texts: list[str], **hf_options) -> None:
    for text in texts:
        assert ours.encode(text) == hf(text, **hf_options)["input_ids"], repr(text[:60])
        cut = hf(text, truncation=True, max_length=TRUNCATE, **hf_options)["input_ids"]
        assert ours.encode(text, TRUNCATE) == cut, repr(text[:60])


def test_byte_level_bpe_vocab_and_merges(trained, texts):
    ours = TextTokenizer(find_in_directory(trained["roberta"]))
    assert ours.spec.kind == "byte_bpe"
    _assert_same(transformers.AutoTokenizer.from_pretrained(trained["roberta"]), ours, texts)
    files = TextTokenizer(find_tokenizer([trained["bpe"] / "vocab.json", trained["bpe"] / "merges.txt"]))
    assert [files.encode(t) for t in texts[:50]] == [ours.encode(t) for t in texts[:50]]


def test_byte_level_bpe_tokenizer_json(trained, texts):
    ours = TextTokenizer(find_tokenizer([trained["json"] / "tokenizer.json"]))
    assert ours.spec.kind == "hf_tokenizer"
    _assert_same(transformers.AutoTokenizer.from_pretrained(trained["json"]), ours, texts)


def test_xlmr_sentencepiece_takes_fairseq_offset(trained, texts):
    ours = TextTokenizer(find_in_directory(trained["xlmr"]))
    assert (ours.spec.kind, ours.spec.ids) == ("sentencepiece", "fairseq")
    assert (ours.bos_id, ours.pad_id, ours.eos_id, ours.unk_id) == (0, 1, 2, 3)
    hf = transformers.AutoTokenizer.from_pretrained(trained["xlmr"])
    assert type(hf).__name__.startswith("XLMRoberta")
    _assert_same(hf, ours, texts)
    _assert_same(transformers.AutoTokenizer.from_pretrained(trained["xlmr-saved"]), ours, texts)
    # the saved directory's tokenizer.json is picked up as it is, and gives the same ids
    saved = TextTokenizer(find_in_directory(trained["xlmr-saved"]))
    assert saved.spec.kind == "hf_tokenizer"
    assert [saved.encode(t) for t in texts] == [ours.encode(t) for t in texts]


def test_fairseq_dict_and_gpt2_bpe_give_roberta_ids(trained, texts):
    ours = TextTokenizer(find_tokenizer(sorted(trained["fairseq"].iterdir())))
    assert ours.spec.kind == "fairseq_gpt2"
    roberta = transformers.AutoTokenizer.from_pretrained(trained["roberta"])
    plain = [t for t in texts if not any(s in t for s in SPECIAL_TEXT)]
    assert len(plain) > 300
    _assert_same(roberta, ours, plain)
    # fairseq never reads "<s>" in text as the token: transformers does the same when told to
    _assert_same(roberta, ours, texts, split_special_tokens=True)
