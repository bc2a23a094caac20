"""The preprocessing.tokenizer field: the short form of old checkpoints, the object form of every kind,
invalid fields refused naming the field, and files that must lie inside the model directory."""

import json
import os

import pytest

from d2v.tokenizer import KINDS, TokenizerError, TokenizerFiles, TokenizerSpec
from d2v.tokenizer.spec import ROBERTA_ADDED_TOKENS, AddedToken


def test_short_form_and_null():
    assert TokenizerSpec.from_field(None) is None
    spec = TokenizerSpec.from_field("tokenizer.model")
    assert (spec.kind, spec.files, spec.ids) == ("sentencepiece", {"model": "tokenizer.model"}, "sentencepiece")
    assert spec.to_field() == "tokenizer.model"  # written back as it was: old checkpoints stay as they are
    assert TokenizerSpec.canonical("sentencepiece").to_field() == "tokenizer.model"


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_round_trips(kind):
    options = {"ids": "fairseq", "added_tokens": (AddedToken("<mask>", 7, lstrip=True),)} \
        if kind == "sentencepiece" else {}
    if kind == "byte_bpe":
        options = {"added_tokens": ROBERTA_ADDED_TOKENS, "add_prefix_space": True,
                   "special_tokens": {"bos": "<s>", "pad": "[PAD]", "eos": "</s>", "unk": "<unk>"}}
    spec = TokenizerSpec.canonical(kind, **options)
    field = json.loads(json.dumps(spec.to_field()))
    assert field["kind"] == kind and set(field["files"]) == set(KINDS[kind])
    assert TokenizerSpec.from_field(field) == spec


def test_defaults_of_the_object_form():
    bpe = TokenizerSpec.from_field({"kind": "byte_bpe", "files": {"vocab": "v.json", "merges": "m.txt"}})
    assert bpe.added_tokens == ROBERTA_ADDED_TOKENS and bpe.add_prefix_space is False
    assert bpe.special_tokens == {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
    xlmr = TokenizerSpec.from_field({"kind": "sentencepiece", "files": {"model": "x.model"}, "ids": "fairseq"})
    assert xlmr.added_tokens == ROBERTA_ADDED_TOKENS
    assert TokenizerSpec.from_field({"kind": "sentencepiece", "files": {"model": "x.model"}}).added_tokens == ()


@pytest.mark.parametrize("field,where", [
    (42, "preprocessing.tokenizer must be a file name, an object or null"),
    ({"kind": "wordpiece", "files": {}}, "preprocessing.tokenizer.kind is 'wordpiece'"),
    ({"kind": "byte_bpe", "files": {"vocab": "v.json"}}, "preprocessing.tokenizer.files must name"),
    ({"kind": "byte_bpe", "files": {"vocab": "v.json", "merges": 3}}, "preprocessing.tokenizer.files.merges"),
    ({"kind": "hf_tokenizer", "files": {"tokenizer": "t.json"}, "ids": "fairseq"}, "preprocessing.tokenizer.ids"),
    ({"kind": "sentencepiece", "files": {"model": "m"}, "ids": "offset"}, "preprocessing.tokenizer.ids"),
    ({"kind": "hf_tokenizer", "files": {"tokenizer": "t.json"}, "vocab_size": 3}, "preprocessing.tokenizer has unknown keys ['vocab_size']"),
    ({"kind": "hf_tokenizer", "files": {"tokenizer": "t.json"}, "added_tokens": []},
     "preprocessing.tokenizer.added_tokens applies to"),
    ({"kind": "byte_bpe", "files": {"vocab": "v", "merges": "m"}, "added_tokens": [{"id": 3}]},
     "preprocessing.tokenizer.added_tokens[0] must be an object"),
    ({"kind": "byte_bpe", "files": {"vocab": "v", "merges": "m"}, "added_tokens": [{"content": "x", "lstrip": 1}]},
     "preprocessing.tokenizer.added_tokens[0].lstrip must be true or false"),
    ({"kind": "byte_bpe", "files": {"vocab": "v", "merges": "m"}, "special_tokens": {"cls": "<s>"}},
     "preprocessing.tokenizer.special_tokens must map"),
    ({"kind": "byte_bpe", "files": {"vocab": "v", "merges": "m"}, "add_prefix_space": "yes"},
     "preprocessing.tokenizer.add_prefix_space must be true or false"),
])
def test_invalid_fields_name_the_field(field, where):
    with pytest.raises(TokenizerError, match="^ckpt/config.json: " + where.replace("[", r"\[").replace("(", r"\(")):
        TokenizerSpec.from_field(field, "ckpt/config.json")


def test_files_must_lie_inside_the_directory(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (tmp_path / "secret.model").write_bytes(b"x")
    (model / "tokenizer.model").write_bytes(b"x")
    (model / "sub").mkdir()
    (model / "sub" / "vocab.json").write_bytes(b"{}")
    (model / "inside-link.model").symlink_to(model / "tokenizer.model")
    (model / "outside-link.model").symlink_to(tmp_path / "secret.model")
    (model / "loop.model").symlink_to(model / "loop.model")

    def locate(field):
        return TokenizerSpec.from_field(field, str(model / "config.json")).locate(model)

    assert locate("tokenizer.model").paths == {"model": model / "tokenizer.model"}
    assert locate("inside-link.model").paths["model"] == model / "inside-link.model"
    bpe = {"kind": "byte_bpe", "files": {"vocab": "sub/vocab.json", "merges": "../secret.model"}}
    for field, message in [
        ("../secret.model", "preprocessing.tokenizer = '../secret.model' names a file outside"),
        (str(tmp_path / "secret.model"), f"preprocessing.tokenizer = '{tmp_path / 'secret.model'}' names a file "),
        ("sub/../../secret.model", "names a file outside"),
        ("outside-link.model", "preprocessing.tokenizer = 'outside-link.model' resolves outside"),
        ("loop.model", "'loop.model' resolves outside"),
        (bpe, "preprocessing.tokenizer.files.merges = '../secret.model' names a file outside"),
        ("missing.model", "the tokenizer file 'missing.model' named in config.json is missing"),
        ({"kind": "byte_bpe", "files": {"vocab": "sub/vocab.json", "merges": "m.txt"}},
         r"'m.txt' named in config.json is missing \(preprocessing.tokenizer.files.merges\)"),
    ]:
        with pytest.raises(TokenizerError, match=message):
            locate(field)


def test_copy_to_gives_canonical_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "roberta-vocab.json").write_text("{}")
    (tmp_path / "a" / "roberta-merges.txt").write_text("#version: 0.2\n")
    files = TokenizerFiles(TokenizerSpec.canonical("byte_bpe"), {"vocab": tmp_path / "a" / "roberta-vocab.json",
                                                                 "merges": tmp_path / "a" / "roberta-merges.txt"})
    (tmp_path / "b").mkdir()
    copy = files.copy_to(tmp_path / "b")
    assert sorted(os.listdir(tmp_path / "b")) == ["merges.txt", "vocab.json"]
    assert copy.paths == {"vocab": tmp_path / "b" / "vocab.json", "merges": tmp_path / "b" / "merges.txt"}
    assert copy.spec == files.spec and copy == files.placed_in(tmp_path / "b")
    assert copy.copy_to(tmp_path / "b") == copy  # copying onto itself changes nothing
