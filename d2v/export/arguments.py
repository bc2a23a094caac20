"""The `d2v export` arguments, apart from the exporter (`onnx_export`, which needs torch and onnx)
so that the command line is built without importing either."""

import argparse
from pathlib import Path

from d2v.export import OPSET

__all__ = ["add_export_arguments"]


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="d2v checkpoint directory")
    parser.add_argument("--out", type=Path, required=True, help="export directory to write")
    parser.add_argument("--fp16", action="store_true", help="float16 graphs for GPU serving (I/O stays float32)")
    parser.add_argument("--optimize", action="store_true", help="apply onnxruntime's transformer fusions")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="max abs difference against PyTorch (default 1e-4, or 2e-2 with --fp16)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
