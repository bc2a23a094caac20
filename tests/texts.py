"""Text for tokenizer tests: WordNet glosses, tokenizers trained on them (a byte-level BPE saved as
RoBERTa's files, an XLM-R-style sentencepiece model), and hundreds of varied strings that stress a
tokenizer (scripts, CJK, emoji, combining marks, whitespace runs, control characters, very long
text, empty text, the special tokens' own text). Plain functions, importable as `from texts import ...`."""

import json
import random
from pathlib import Path

from realdata import WORDNET, missing

ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def wordnet_glosses(n: int = 4000) -> list[str]:
    """The first `n` WordNet noun glosses."""
    f = WORDNET / "data.noun"
    if not f.is_file():
        missing("wordnet-base")
    out = []
    for line in f.read_text(errors="replace").splitlines():
        if not line.startswith(" ") and "|" in line:
            out.append(line.split("|", 1)[1].strip())
            if len(out) == n:
                break
    return out


def train_byte_bpe(directory: Path, vocab_size: int = 600) -> Path:
    """A byte-level BPE trained on glosses (RoBERTa's special tokens first: <s> 0, <pad> 1, </s> 2,
    <unk> 3, <mask> 4), saved as vocab.json + merges.txt and as tokenizer.json in `directory`."""
    from tokenizers import ByteLevelBPETokenizer

    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(wordnet_glosses(), vocab_size=vocab_size, special_tokens=ROBERTA_SPECIALS,
                            show_progress=False)
    bpe.save_model(str(directory))
    bpe.save(str(directory / "tokenizer.json"))
    return directory


def train_xlmr_sentencepiece(path: Path, vocab_size: int = 800) -> Path:
    """A unigram sentencepiece model laid out as XLM-R's sentencepiece.bpe.model: <unk> 0, <s> 1,
    </s> 2, no <pad>."""
    import sentencepiece as spm

    assert path.suffix == ".model", path
    path.parent.mkdir(parents=True, exist_ok=True)
    corpus = path.with_suffix(".txt")
    corpus.write_text("\n".join(wordnet_glosses()) + "\n")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(path.with_suffix("")), vocab_size=vocab_size,
                                   model_type="unigram", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   character_coverage=0.9995, minloglevel=2)
    return path


def fairseq_files_from_roberta(vocab_json: Path, merges_txt: Path, out: Path, seed: int = 0) -> Path:
    """GPT-2 `encoder.json` + `vocab.bpe` and a fairseq `dict.txt` that encode exactly what a
    RoBERTa-style vocab.json + merges.txt encodes: the GPT-2 ids are a shuffle of the byte-level
    tokens, and dict.txt lists them in the order of the RoBERTa ids (fairseq id = 4 + line), so only
    a correct mapping through dict.txt gives RoBERTa's ids back."""
    vocab = json.loads(vocab_json.read_text())
    specials = {t: vocab[t] for t in ROBERTA_SPECIALS[:4]}
    assert specials == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}, specials
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if vocab[t] >= 4]
    plain = [t for t in tokens if t not in ROBERTA_SPECIALS]
    order = list(range(len(plain)))
    random.Random(seed).shuffle(order)
    gpt2 = {t: order[i] for i, t in enumerate(plain)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "encoder.json").write_text(json.dumps(gpt2))
    (out / "vocab.bpe").write_text(merges_txt.read_text())
    lines = [f"{gpt2[t]} {1000 - i}" if t in gpt2 else f"{t} 0" for i, t in enumerate(tokens)]
    (out / "dict.txt").write_text("\n".join(lines) + "\n")
    return out


_SCRIPTS = [
    "Hello, world!", "naïve café résumé", "Ελληνικά κείμενα", "Русский текст, ёлка", "עברית מימין לשמאל",
    "العربية النص", "हिन्दी पाठ", "ภาษาไทย", "한국어 텍스트", "日本語のテキストです。", "中文文本，标点。",
    "Tiếng Việt có dấu", "ქართული", "Ǆǅǆ ﬁﬂ ẞß", "Ｆｕｌｌｗｉｄｔｈ　ｓｐａｃｅ", "①②③ ⅠⅡⅢ ½ ¼",
]
_EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🏳️‍🌈", "❤️", "🤖", "🧑🏿‍🚀", "✊🏻"]
_COMBINING = ["e\u0301", "a\u0308\u0304", "n\u0303", "Z\u0335\u0321\u034e", "\u0915\u094d\u0937", "o\u0328\u0301"]
_SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2009", "\u200b", " \t \n ", "\x0b", "\x0c"]
_SPECIAL_TEXT = ["<s>", "</s>", "<pad>", "<mask>", "<unk>", "<S>", "< s>", "</s >", "<mask><mask>", "<<s>>"]


def varied_texts(n: int = 520, seed: int = 0) -> list[str]:
    """At least `n` deterministic strings: glosses, scripts, emoji, combining marks, whitespace runs,
    tabs and newlines, control characters, the special tokens' text alone and inside words, empty and
    blank strings, and a few very long ones (thousands of characters)."""
    rng = random.Random(seed)
    glosses = wordnet_glosses(600)
    fixed = ["", " ", "  ", "\t", "\n", "\n\n", "a", "A", "1", ".", "'s", "don't", "I'm", "12345 678.9",
             "x" * 3000, " ".join(glosses[:200]), "\n".join(glosses[200:260]), "😀" * 400,
             "日本語" * 500, "\t".join(["word"] * 300), " " * 1000 + "end", "e\u0301" * 600]
    fixed += _SCRIPTS + _EMOJI + _COMBINING + _SPACES + _SPECIAL_TEXT
    fixed += [f"{a}{t}{b}" for t in _SPECIAL_TEXT[:5] for a, b in (("", ""), (" ", " "), ("x", "y"), ("a ", " b"),
                                                                  ("  ", "\n"))]
    pools = [glosses, _SCRIPTS, _EMOJI, _COMBINING, _SPACES, _SPECIAL_TEXT]
    out = list(fixed)
    while len(out) < n:
        parts = []
        for _ in range(rng.randint(1, 6)):
            pool = rng.choice(pools)
            piece = rng.choice(pool)
            if pool is glosses and rng.random() < 0.5:
                words = piece.split()
                piece = " ".join(words[: rng.randint(1, max(len(words), 1))])
            parts.append(piece)
            parts.append(rng.choice(["", " ", " ", "  ", "\t", "\n", "   ", "", "-", ", "]))
        text = "".join(parts)
        if rng.random() < 0.1:
            text = text.upper()
        out.append(text)
    return out


def tiny_text_checkpoint(path: Path, tokenizer, vocab_size: int, max_tokens: int = 48, seed: int = 0) -> Path:
    """A tiny random text checkpoint (dim 32, 2 blocks, a 3-label first-token head) holding `tokenizer`
    (a `TokenizerFiles`, a d2v sentencepiece model path, or None)."""
    import torch
    from realdata import tiny_config

    from d2v.model import HeadConfig, build_encoder
    from d2v.model.checkpoint import CheckpointConfig, save_checkpoint

    torch.manual_seed(seed)
    cfg = tiny_config("text").encoder
    cfg.text.vocab_size, cfg.text.max_positions = vocab_size, max_tokens
    head = HeadConfig("first_token", ["noun.act", "noun.animal", "noun.artifact"], "cls")
    return save_checkpoint(path, build_encoder(cfg, head), CheckpointConfig(path.name, cfg, head), tokenizer=tokenizer)


def broken_tokenizer_checkpoints(good: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """Copies of the text checkpoint `good` (a d2v sentencepiece tokenizer) whose tokenizer is broken
    or wrong, each with the words its one-line error must hold: garbage bytes named tokenizer.model, a
    tokenizer.json that is not one, a vocabulary larger than the model's, a <pad> that is not the
    model's, a config field of no known kind, and config fields naming a file outside the directory
    (`..`, absolute, a symlink out)."""
    import shutil

    out: dict[str, tuple[Path, str]] = {}
    outside = root / "outside.model"
    shutil.copy(good / "tokenizer.model", outside)
    vocab = json.loads((good / "config.json").read_text())["encoder"]["text"]["vocab_size"]
    bpe = train_byte_bpe(root / "big-bpe", vocab_size=vocab + 200)

    def variant(name: str, expect: str, field=None, files: dict[str, bytes | Path] | None = None) -> None:
        d = root / name
        shutil.copytree(good, d)
        for fname, content in (files or {}).items():
            (d / fname).unlink(missing_ok=True)
            if isinstance(content, Path):
                shutil.copy(content, d / fname)
            else:
                (d / fname).write_bytes(content)
        if field is not None:
            data = json.loads((d / "config.json").read_text())
            data["preprocessing"]["tokenizer"] = field
            (d / "config.json").write_text(json.dumps(data, indent=2))
        out[name] = (d, expect)

    hf = {"kind": "hf_tokenizer", "files": {"tokenizer": "tokenizer.json"}}
    variant("garbage", "tokenizer.model is not a sentencepiece model",
            files={"tokenizer.model": random.Random(0).randbytes(3000)})
    variant("not-json", "tokenizer.json is not a tokenizers tokenizer.json", hf,
            files={"tokenizer.json": b'{"hello": "world"}'})
    variant("too-large", f"the model embeds only {vocab}", hf, files={"tokenizer.json": bpe / "tokenizer.json"})
    small = train_byte_bpe(root / "small-bpe", vocab_size=min(vocab, 300))
    variant("wrong-pad", "special ids are not the model's: <pad> 4 (model 1)",
            {**hf, "special_tokens": {"pad": "<mask>"}}, files={"tokenizer.json": small / "tokenizer.json"})
    variant("bad-kind", "config.json: preprocessing.tokenizer.kind is 'wordpiece'",
            {"kind": "wordpiece", "files": {"vocab": "vocab.txt"}})
    variant("dotdot", "preprocessing.tokenizer = '../outside.model' names a file outside", "../outside.model")
    variant("absolute", f"preprocessing.tokenizer = '{outside}' names a file outside", str(outside))
    variant("symlink", "preprocessing.tokenizer = 'tokenizer.model' resolves outside")
    (root / "symlink" / "tokenizer.model").unlink()
    (root / "symlink" / "tokenizer.model").symlink_to(outside)
    return out


def broken_tokenizers_of_a_new_checkpoint(root: Path) -> dict[str, tuple[Path, str]]:
    """`broken_tokenizer_checkpoints` of a tiny text checkpoint made here under `root`, with a d2v
    sentencepiece model trained on glosses (for tests without the server's model fixtures)."""
    import sentencepiece as spm

    spm_model = d2v_sentencepiece(root / "spm.model")
    vocab = spm.SentencePieceProcessor(model_file=str(spm_model)).get_piece_size()
    return broken_tokenizer_checkpoints(tiny_text_checkpoint(root / "good", spm_model, vocab), root)


def d2v_sentencepiece(path: Path, vocab_size: int = 300) -> Path:
    """d2v's own kind of sentencepiece model (<s> 0, <pad> 1, </s> 2, <unk> 3), trained on glosses."""
    from d2v.training.data.text import train_tokenizer

    return train_tokenizer(wordnet_glosses(3000), path, vocab_size)


BROKEN_CASES = ["garbage", "not-json", "too-large", "wrong-pad", "bad-kind", "dotdot", "absolute", "symlink"]


def assert_one_line_error(err: str, *expected: str) -> None:
    """A command's stderr is one line, no traceback, holding every `expected` text."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], lines[0]
