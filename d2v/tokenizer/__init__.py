"""Text tokenizers for d2v's text models, torch-free (numpy, sentencepiece and HF `tokenizers`).

Every text path goes through `TextTokenizer`: serving and `d2v embed` (`d2v.server.decode`), the
training data (`d2v.training.data.text`), `d2v finetune`, `d2v export` and `d2v convert`. A model
gets `<s> ids </s>`, cut to its token limit, with the ids it was trained with.

- `spec.py`: the config.json field (`preprocessing.tokenizer`) and the files it names;
- `kinds.py`: sentencepiece (d2v's ids or XLM-R's), tokenizer.json, byte-level BPE, fairseq dict + GPT-2 BPE;
- `tokenizer.py`: `TextTokenizer` and `load_tokenizer` (read a model directory's tokenizer, check it fits);
- `discover.py`: the tokenizer of a HuggingFace directory or of `--tokenizer` paths.
"""

from d2v.lazy import lazy_exports

__all__ = [
    "KINDS",
    "TextTokenizer",
    "TokenizerError",
    "TokenizerFiles",
    "TokenizerSpec",
    "find_in_directory",
    "find_tokenizer",
    "load_tokenizer",
    "model_special_ids",
]


# Imported on first use, so that `d2v.tokenizer.spec` (the config field and the special ids, needed by
# configs and the command line) does not pull in numpy, sentencepiece and `tokenizers`.
__getattr__, __dir__ = lazy_exports(__name__, {
    "d2v.tokenizer.discover": ("find_in_directory", "find_tokenizer"),
    "d2v.tokenizer.spec": ("KINDS", "TokenizerError", "TokenizerFiles", "TokenizerSpec"),
    "d2v.tokenizer.tokenizer": ("TextTokenizer", "load_tokenizer", "model_special_ids"),
})
