"""The `d2v` command line: one entry point, one subcommand per job.

Each subcommand's arguments and implementation live with the package that does the work; this
module only wires them up, importing lazily so `d2v --help` stays fast.
"""

import argparse
import sys

from d2v import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="d2v", description="Train, export and serve data2vec 2.0 models.")
    parser.add_argument("--version", action="version", version=f"d2v {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from d2v.server import add_serve_arguments, run_serve

    p = sub.add_parser("serve", help="start the HTTP service (no arguments: the bundled demo models)")
    add_serve_arguments(p)
    p.set_defaults(run=run_serve)

    from d2v.model.importers import add_convert_arguments, run_convert

    p = sub.add_parser("convert", help="import a HuggingFace Data2VecText/Data2VecAudio model or a fairseq data2vec 2.0 "
                       ".pt checkpoint (with its classifier or CTC head) into a d2v checkpoint")
    add_convert_arguments(p)
    p.set_defaults(run=run_convert)

    from d2v.export.onnx_export import add_export_arguments, run_export

    p = sub.add_parser("export", help="checkpoint -> ONNX export directory, verified with onnxruntime")
    add_export_arguments(p)
    p.set_defaults(run=run_export)

    from d2v.training.data.demo import add_data_arguments, run_data
    from d2v.training.finetune import add_finetune_arguments, run_finetune
    from d2v.training.pretrain import add_pretrain_arguments, run_pretrain

    p = sub.add_parser("pretrain", help="data2vec 2.0 pretraining for one modality; writes training checkpoints, "
                       "resumes (run it under torchrun for several processes)")
    add_pretrain_arguments(p)
    p.set_defaults(run=run_pretrain)

    p = sub.add_parser("finetune", help="classification (--task classify) or speech-recognition (--task ctc) "
                       "fine-tuning from a pretrained checkpoint (or from scratch)")
    add_finetune_arguments(p)
    p.set_defaults(run=run_finetune)

    p = sub.add_parser("data", help="build the demo datasets used by tests, demos and benchmarks")
    add_data_arguments(p)
    p.set_defaults(run=run_data)

    from d2v.server.batch.command import add_embed_arguments, run_embed

    p = sub.add_parser("embed", help="batch embedding job (or --task transcribe: speech to text) over a directory, a "
                       "manifest or a text file; resumable, sharded (--shard I/N or torchrun)")
    add_embed_arguments(p)
    p.set_defaults(run=run_embed)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
