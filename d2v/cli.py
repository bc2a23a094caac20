"""The `d2v` command line: one entry point, one subcommand per job.

Each subcommand's arguments and implementation live with the package that does the work; this
module only names them (`COMMANDS`). Nothing is imported until it is needed: a subcommand's argument
definitions are read when that subcommand is parsed or asked for its help, and its implementation
when it runs. The argument modules import neither torch nor onnxruntime nor pyarrow, so `d2v --help`
and `d2v COMMAND --help` stay fast (tests/test_cli.py checks what they import).
"""

import argparse
import importlib
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from d2v import __version__

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


@dataclass(frozen=True)
class Command:
    help: str
    arguments: str
    """"module:function" that adds the subcommand's arguments to its parser (a torch-free module)."""
    run: str
    """"module:function" that runs it with the parsed arguments and returns the exit status."""


COMMANDS = {
    "serve": Command("start the HTTP service (no arguments: the bundled demo models)",
                     "d2v.server.serve:add_serve_arguments", "d2v.server.serve:run_serve"),
    "convert": Command("import a HuggingFace Data2VecText/Data2VecAudio model or a fairseq data2vec 2.0 .pt checkpoint "
                       "(with its classifier or CTC head) into a d2v checkpoint",
                       "d2v.model.convert_arguments:add_convert_arguments", "d2v.model.importers:run_convert"),
    "export": Command("checkpoint -> ONNX export directory, verified with onnxruntime",
                      "d2v.export.arguments:add_export_arguments", "d2v.export.onnx_export:run_export"),
    "pretrain": Command("data2vec 2.0 pretraining for one modality; writes training checkpoints, resumes (run it "
                        "under torchrun for several processes)",
                        "d2v.training.arguments:add_pretrain_arguments", "d2v.training.pretrain:run_pretrain"),
    "finetune": Command("classification (--task classify) or speech-recognition (--task ctc) fine-tuning from a "
                        "pretrained checkpoint (or from scratch)",
                        "d2v.training.arguments:add_finetune_arguments", "d2v.training.finetune:run_finetune"),
    "data": Command("build the demo datasets used by tests, demos and benchmarks",
                    "d2v.training.arguments:add_data_arguments", "d2v.training.data.demo:run_data"),
    "embed": Command("batch embedding job (or --task transcribe: speech to text) over a directory, a manifest or a "
                     "text file; resumable, sharded (--shard I/N or torchrun)",
                     "d2v.server.batch.command:add_embed_arguments", "d2v.server.batch.command:run_embed"),
}


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class _Run:
    """A subcommand's run function, imported when it is called."""

    def __init__(self, target: str):
        self.target = target

    def __call__(self, args: argparse.Namespace) -> int:
        return _resolve(self.target)(args)

    def __repr__(self) -> str:
        return f"<run {self.target}>"


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that adds its arguments the first time it parses or formats help."""

    def __init__(self, *args: Any, arguments: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._arguments = arguments

    def _load(self) -> None:
        if self._arguments is not None:
            target, self._arguments = self._arguments, None
            _resolve(target)(self)

    def parse_known_args(self, args=None, namespace=None):  # argparse's signature
        self._load()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._load()
        return super().format_usage()

    def format_help(self) -> str:
        self._load()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="d2v", description="Train, export and serve data2vec 2.0 models.")
    parser.add_argument("--version", action="version", version=f"d2v {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, arguments=command.arguments)
        p.set_defaults(run=_Run(command.run))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["d2v", *argv])  # what a run records as its provenance
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
