"""The `d2v` command line: one entry point, one subcommand per job (DESIGN.md).

Each subcommand's arguments and implementation live with the package that does the work; this
module only wires them up, importing lazily so `d2v --help` stays fast.
"""

import argparse
import sys
import time
from collections.abc import Callable

from d2v import __version__

__all__ = ["build_parser", "main"]

# name -> (help, issue that builds it) for subcommands that do not exist yet
_PLANNED = {
    "pretrain": ("data2vec 2.0 pretraining for one modality; writes training checkpoints, resumes", "training"),
    "finetune": ("classification fine-tuning from a pretrained checkpoint", "training"),
    "embed": ("batch embedding job over a directory, a manifest or a text file, resumable", "batch embedding"),
    "data": ("build the demo datasets used by tests, demos and benchmarks", "training"),
}


def _not_built(name: str, issue: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"d2v {name}: not built yet (it comes with the {issue} work); nothing was done.", file=sys.stderr)
        return 2

    return run


def _serve(args: argparse.Namespace) -> int:
    """Until the HTTP server exists: a forward-pass check of every modality's tiny model on CPU."""
    import torch

    from d2v.model import build_encoder, preset

    print("d2v serve: the HTTP server is not built yet. Checking instead that each modality's tiny "
          "model encodes a batch on this machine:\n")
    print(f"{'modality':<9}{'params':>10}  {'input':<22}{'embeddings':<14}{'ms/batch':>9}")
    torch.manual_seed(0)
    inputs = {
        "image": lambda c: (torch.rand(4, c.image.in_chans, c.image.image_size, c.image.image_size), None),
        "audio": lambda c: (torch.randn(4, c.audio.sample_rate), None),
        "text": lambda c: (torch.randint(4, c.text.vocab_size, (4, 64)), None),
    }
    for modality, make in inputs.items():
        cfg = preset(modality, "tiny").encoder
        model = build_encoder(cfg).eval()
        x, pad = make(cfg)
        with torch.inference_mode():
            model.forward_features(x, pad)  # warm-up
            start = time.perf_counter()
            tokens, tpad = model.forward_features(x, pad)
            emb = model.pool(tokens, tpad)
            ms = (time.perf_counter() - start) * 1e3
        n = sum(p.numel() for p in model.parameters())
        print(f"{modality:<9}{n / 1e6:>9.2f}M  {tuple(x.shape)!s:<22}{tuple(emb.shape)!s:<14}{ms:>9.1f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="d2v", description="Train, export and serve data2vec 2.0 models.")
    parser.add_argument("--version", action="version", version=f"d2v {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="start the HTTP service (no arguments: the bundled demo models)")
    p.set_defaults(run=_serve)

    from d2v.model.importers import add_convert_arguments, run_convert

    p = sub.add_parser("convert", help="import HuggingFace Data2VecText/Data2VecAudio weights into a d2v checkpoint")
    add_convert_arguments(p)
    p.set_defaults(run=run_convert)

    from d2v.export.onnx_export import add_export_arguments, run_export

    p = sub.add_parser("export", help="checkpoint -> ONNX export directory, verified with onnxruntime")
    add_export_arguments(p)
    p.set_defaults(run=run_export)

    for name, (help_text, issue) in _PLANNED.items():
        p = sub.add_parser(name, help=f"{help_text} (not built yet)")
        p.set_defaults(run=_not_built(name, issue))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
