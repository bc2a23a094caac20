"""Which tokenizer a directory or `--tokenizer` paths hold: the order of preference in a HF directory,
its tokenizer_config.json read as transformers reads it, the file combinations, and clear refusals."""

import json
import shutil

import pytest
from texts import varied_texts

from d2v.tokenizer import TextTokenizer, TokenizerError, find_in_directory, find_tokenizer
from d2v.tokenizer.discover import sentencepiece_ids


def test_directory_order_of_preference(tmp_path, files):
    d = tmp_path / "hf"
    d.mkdir()
    assert find_in_directory(d) is None and find_in_directory(tmp_path / "missing") is None
    shutil.copy(files["spm"], d / "sentencepiece.bpe.model")
    assert find_in_directory(d).spec.kind == "sentencepiece"
    for name in ("dict.txt", "encoder.json", "vocab.bpe"):
        shutil.copy(files["fq"] / name, d / name)
    assert find_in_directory(d).spec.kind == "fairseq_gpt2"
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(files["bpe"] / name, d / name)
    assert find_in_directory(d).spec.kind == "byte_bpe"
    shutil.copy(files["bpe"] / "tokenizer.json", d / "tokenizer.json")
    found = find_in_directory(d)
    assert found.spec.kind == "hf_tokenizer" and found.paths == {"tokenizer": d / "tokenizer.json"}
    assert find_tokenizer([d]) == found


def test_tokenizer_config_is_read_as_transformers_reads_it(tmp_path, files):
    """add_prefix_space and an lstrip <mask> from tokenizer_config.json give transformers' ids."""
    transformers = pytest.importorskip("transformers")
    d = tmp_path / "hf"
    d.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(files["bpe"] / name, d / name)
    specials = {str(i): {"content": t, "special": True} for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    specials["4"] = {"content": "<mask>", "lstrip": True, "rstrip": False, "single_word": False, "special": True}
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "RobertaTokenizer", "add_prefix_space": True, "added_tokens_decoder": specials}))
    ours = TextTokenizer(find_in_directory(d))
    assert ours.spec.add_prefix_space and ours.spec.added_tokens[4].lstrip
    hf = transformers.AutoTokenizer.from_pretrained(d)
    for text in varied_texts(200):
        assert ours.encode(text) == hf(text)["input_ids"], repr(text[:50])


def test_file_combinations(files):
    bpe, fq = files["bpe"], files["fq"]
    assert find_tokenizer([bpe / "tokenizer.json"]).spec.kind == "hf_tokenizer"
    pair = find_tokenizer([bpe / "merges.txt", bpe / "vocab.json"])
    assert pair.spec.kind == "byte_bpe" and pair.paths == {"vocab": bpe / "vocab.json", "merges": bpe / "merges.txt"}
    three = find_tokenizer([fq / "encoder.json", fq / "vocab.bpe", fq / "dict.txt"])
    assert three.spec.kind == "fairseq_gpt2"
    assert three.paths == {"dict": fq / "dict.txt", "encoder": fq / "encoder.json", "bpe": fq / "vocab.bpe"}
    spm = find_tokenizer([files["spm"]])
    assert (spm.spec.kind, spm.spec.ids) == ("sentencepiece", "fairseq")


def test_refusals(tmp_path, files):
    bpe = files["bpe"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    for paths, message in [
        ([tmp_path / "nope.model"], "no such file or directory"),
        ([tmp_path / "empty"], "the directory holds no tokenizer"),
        ([tmp_path / "empty", bpe / "vocab.json"], "give one directory, or files, not both"),
        ([bpe / "vocab.json"], "is not a tokenizer.json; a vocab.json needs its merges.txt"),
        ([tmp_path / "bad.json"], "bad.json is not valid JSON"),
        ([bpe / "vocab.json", bpe / "merges.txt", bpe / "tokenizer.json"], "cannot tell which tokenizer"),
        ([bpe / "merges.txt"], "cannot tell which tokenizer"),
    ]:
        with pytest.raises(TokenizerError, match=message):
            find_tokenizer(paths)


def test_sentencepiece_id_conventions(tmp_path):
    import sentencepiece as spm
    from texts import wordnet_glosses

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(wordnet_glosses(500)))
    layouts = {"d2v": ({"bos_id": 0, "pad_id": 1, "eos_id": 2, "unk_id": 3}, "sentencepiece"),
               "xlmr": ({"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}, "fairseq"),
               "t5": ({"pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1}, None)}
    for name, (ids, expected) in layouts.items():
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / name), vocab_size=120,
                                       minloglevel=2, **ids)
        if expected:
            assert sentencepiece_ids(tmp_path / f"{name}.model") == expected
        else:
            with pytest.raises(TokenizerError, match="<s> -1, <pad> 0, </s> 1, <unk> 2 are neither d2v's"):
                sentencepiece_ids(tmp_path / f"{name}.model")
