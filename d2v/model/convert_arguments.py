"""The `d2v convert` arguments, apart from the importers (`d2v.model.importers`, which need torch)
so that the command line is built without importing torch."""

import argparse
from pathlib import Path

from d2v.model.safetensors_header import FLOAT_STORAGE

__all__ = ["add_convert_arguments"]


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `d2v convert` arguments: SRC, --out, --name, --tokenizer, --dtype, --labels, --ema, --dict."""
    parser.add_argument("src", metavar="SRC", type=Path,
                        help="HuggingFace Data2VecText/Data2VecAudio directory (config.json + weights), an org/name "
                             "model id in the local HF cache, or a fairseq data2vec 2.0 .pt file")
    parser.add_argument("--out", metavar="DIR", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--name", help="checkpoint name (default: the source directory's name)")
    parser.add_argument("--tokenizer", metavar="PATH", type=Path, action="append",
                        help="text models: the tokenizer, if not the one SRC holds: a sentencepiece model, a "
                             "tokenizer.json or a directory; repeat it for vocab.json + merges.txt or dict.txt + "
                             "encoder.json + vocab.bpe (without any tokenizer the model takes token ids only)")
    parser.add_argument("--dtype", choices=sorted(FLOAT_STORAGE), help="store weights in this dtype (default float32)")
    parser.add_argument("--labels", metavar="FILE", type=Path,
                        help="class names of a classifier, one per line in logit order (default: HF id2label, "
                             "or 0..N-1 for a fairseq image classifier)")
    parser.add_argument("--ema", action="store_true",
                        help="fairseq pretrained checkpoints: take the EMA teacher's weights instead of the student's")
    parser.add_argument("--dict", metavar="FILE", type=Path, dest="dictionary",
                        help="fairseq CTC models: the letter dictionary (dict.ltr.txt) when the checkpoint holds none "
                             "(default: a dict.ltr.txt beside the .pt)")
