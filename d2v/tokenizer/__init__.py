"""Text tokenizers for d2v's text models, torch-free (numpy, sentencepiece and HF `tokenizers`).

Every text path goes through `TextTokenizer`: serving and `d2v embed` (`d2v.server.decode`), the
training data (`d2v.training.data.text`), `d2v finetune`, `d2v export` and `d2v convert`. A model
gets `<s> ids </s>`, cut to its token limit, with the ids it was trained with.

- `spec.py`: the config.json field (`preprocessing.tokenizer`) and the files it names;
- `kinds.py`: sentencepiece (d2v's ids or XLM-R's), tokenizer.json, byte-level BPE, fairseq dict + GPT-2 BPE;
- `tokenizer.py`: `TextTokenizer` and `load_tokenizer` (read a model directory's tokenizer, check it fits);
- `discover.py`: the tokenizer of a HuggingFace directory or of `--tokenizer` paths.
"""

from d2v.tokenizer.discover import find_in_directory, find_tokenizer
from d2v.tokenizer.spec import KINDS, TokenizerError, TokenizerFiles, TokenizerSpec
from d2v.tokenizer.tokenizer import TextTokenizer, load_tokenizer, model_special_ids

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
