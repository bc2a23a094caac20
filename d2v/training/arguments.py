"""The arguments of `d2v pretrain`, `d2v finetune` (generated from the typed configs in `config`) and
`d2v data`, apart from the training code so that the command line is built without importing torch."""

import argparse

from d2v.configuration import add_arguments
from d2v.training.config import FinetuneConfig, PretrainConfig

__all__ = ["DATASETS", "add_data_arguments", "add_finetune_arguments", "add_pretrain_arguments"]

DATASETS = ("digits", "spoken-digits", "spoken-commands", "wordnet")
"""The demo datasets `d2v data` builds (`d2v.training.data.demo.BUILDERS`)."""


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, PretrainConfig, config_file=True)


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, FinetuneConfig, config_file=True)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="data", help="directory that receives one folder per dataset (default: data)")
    parser.add_argument("--only", nargs="+", choices=DATASETS, default=list(DATASETS),
                        help="build only these datasets (default: all four)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits and voice settings (default: 0)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel espeak-ng syntheses (default: the number of CPUs)")
