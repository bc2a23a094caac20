"""TextTokenizer and load_tokenizer: every file of every kind that is not what it claims is refused
naming the file, fairseq's dict.txt as fairseq reads it, the checks against the model, truncation,
and no torch anywhere."""

import json
import random
import subprocess
import sys

import pytest

from d2v.tokenizer import (
    TextTokenizer,
    TokenizerError,
    TokenizerFiles,
    TokenizerSpec,
    find_tokenizer,
    load_tokenizer,
)
from d2v.tokenizer.kinds import read_fairseq_dict

GARBAGE = random.Random(1).randbytes(2000)


def _files(kind: str, **paths) -> TokenizerFiles:
    return TokenizerFiles(TokenizerSpec.canonical(kind), paths)


@pytest.mark.parametrize("kind,role,message", [
    ("sentencepiece", "model", "is not a sentencepiece model"),
    ("hf_tokenizer", "tokenizer", "is not a tokenizers tokenizer.json"),
    ("byte_bpe", "vocab", "are not a byte-level BPE vocabulary and merges"),
    ("byte_bpe", "merges", "are not a byte-level BPE vocabulary and merges"),
    ("fairseq_gpt2", "dict", "is not a fairseq dict.txt"),
    ("fairseq_gpt2", "encoder", "are not a byte-level BPE vocabulary and merges"),
])
def test_a_file_that_is_not_what_it_claims_is_named(tmp_path, files, kind, role, message):
    good = {"model": files["spm"], "tokenizer": files["bpe"] / "tokenizer.json", "vocab": files["bpe"] / "vocab.json",
            "merges": files["bpe"] / "merges.txt", "dict": files["fq"] / "dict.txt",
            "encoder": files["fq"] / "encoder.json", "bpe": files["fq"] / "vocab.bpe"}
    bad = tmp_path / f"bad-{role}"
    bad.write_bytes(GARBAGE)
    paths = {r: (bad if r == role else good[r]) for r in TokenizerSpec.canonical(kind).files}
    with pytest.raises(TokenizerError, match=message) as e:
        TextTokenizer(_files(kind, **paths))
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "t.json").write_text(json.dumps({"not": "a tokenizer"}))
    with pytest.raises(TokenizerError, match="t.json is not a tokenizers tokenizer.json"):
        TextTokenizer(_files("hf_tokenizer", tokenizer=tmp_path / "t.json"))


def test_fairseq_dict_as_fairseq_reads_it(tmp_path):
    f = tmp_path / "dict.txt"
    f.write_text("50 10\n7 9\nmadeupword0000 0\n<unk> 3 #fairseq:overwrite\n12 1\n")
    assert read_fairseq_dict(f) == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "50": 4, "7": 5,
                                    "madeupword0000": 6, "12": 7}
    for text, message in [("50 10\n50 3\n", r"dict.txt:2: the symbol '50' appears twice"),
                          ("50 ten\n", r"dict.txt:1 is not a fairseq dict.txt line"),
                          ("lonely\n", r"dict.txt:1 is not a fairseq dict.txt line"), ("", "it is empty")]:
        f.write_text(text)
        with pytest.raises(TokenizerError, match=message):
            read_fairseq_dict(f)


def test_gpt2_ids_missing_from_dict_are_unk(tmp_path, files):
    fq = tmp_path / "fq"
    fq.mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        (fq / name).write_bytes((files["fq"] / name).read_bytes())
    lines = (files["fq"] / "dict.txt").read_text().splitlines()
    encoder = json.loads((fq / "encoder.json").read_text())
    full = TextTokenizer(find_tokenizer([files["fq"] / n for n in ("dict.txt", "encoder.json", "vocab.bpe")]))
    text = "the cat and the dog"
    first = full.tokenize(text)[0]  # drop the dict line of the first token's GPT-2 id
    gpt2_id = next(v for v in encoder.values() if lines[first - 4].split()[0] == str(v))
    (fq / "dict.txt").write_text("\n".join(ln for ln in lines if ln.split()[0] != str(gpt2_id)) + "\n")
    holed = TextTokenizer(find_tokenizer([fq / n for n in ("dict.txt", "encoder.json", "vocab.bpe")]))
    assert 3 not in full.tokenize(text) and holed.tokenize(text)[0] == 3
    assert holed.vocab_size == full.vocab_size - 1


def test_checks_against_the_model(files):
    tok = TextTokenizer(find_tokenizer([files["bpe"] / "tokenizer.json"]))
    assert (tok.vocab_size, tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id) == (350, 0, 1, 2, 3)
    tok.check_model(350, 0, 1, 2)
    with pytest.raises(TokenizerError, match="produces ids up to 349 but the model embeds only 300 tokens"):
        tok.check_model(300, 0, 1, 2)
    with pytest.raises(TokenizerError, match=r"special ids are not the model's: <s> 0 \(model 5\), </s> 2 \(model 6\)"):
        tok.check_model(350, 5, 1, 6)
    spec = TokenizerSpec.canonical("hf_tokenizer", special_tokens={"bos": "[CLS]", "pad": "<pad>", "eos": "</s>",
                                                                   "unk": "<unk>"})
    no_cls = TextTokenizer(TokenizerFiles(spec, {"tokenizer": files["bpe"] / "tokenizer.json"}))
    with pytest.raises(TokenizerError, match=r"<s> missing \(model 0\)"):
        no_cls.check_model(350, 0, 1, 2)
    with pytest.raises(TokenizerError, match="has no <s> or </s> token"):
        no_cls.encode("x")


def test_load_tokenizer_and_truncation(tmp_path, files):
    d = tmp_path / "model"
    d.mkdir()
    placed = find_tokenizer([files["spm"]]).copy_to(d)
    pre = {"tokenizer": placed.spec.to_field(), "bos_id": 0, "pad_id": 1, "eos_id": 2}
    tok = load_tokenizer(d, pre, 202)
    assert tok.vocab_size == 202  # 200 pieces, + 1 (fairseq's offset) + <mask>
    assert tok.encode("<mask>") == [0, 201, 2]
    ids = tok.encode("a domesticated carnivorous mammal with soft fur")
    assert tok.encode("a domesticated carnivorous mammal with soft fur", 5) == [*ids[:4], 2]
    assert tok.encode("anything", 2) == [0, 2]
    assert load_tokenizer(d, {**pre, "tokenizer": None}, 202) is None
    with pytest.raises(TokenizerError, match="embeds only 201"):
        load_tokenizer(d, pre, 201)


def test_no_torch_anywhere(files):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from d2v.tokenizer import TextTokenizer, find_tokenizer\n"
        f"bpe, fq, spm = {str(files['bpe'])!r}, {str(files['fq'])!r}, {str(files['spm'])!r}\n"
        "for paths in ([bpe + '/tokenizer.json'], [bpe + '/vocab.json', bpe + '/merges.txt'], [spm],\n"
        "              [fq + '/dict.txt', fq + '/encoder.json', fq + '/vocab.bpe']):\n"
        "    assert TextTokenizer(find_tokenizer(paths)).encode('a cat')[0] == 0\n"
        "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
