"""Small real datasets on disk, in the layouts of docs/data.md, for the training tests: digits in
class folders, espeak-ng words in a JSONL manifest, transcribed espeak-ng digit runs and commands,
WordNet glosses in JSONL."""

import shutil
from pathlib import Path

import pytest
from realdata import WORDNET, missing


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """scikit-learn digits in class folders (the full demo build: 1,797 PNGs, well under a second)."""
    from d2v.training.data.demo import build_digits

    return build_digits(tmp_path_factory.mktemp("data") / "digits")


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    """A small spoken-digits build: 3 words x 2 accents x 5 voice variants, split by variant."""
    if shutil.which("espeak-ng") is None:
        missing("espeak-ng")
    from d2v.training.data.demo import build_spoken_digits

    return build_spoken_digits(tmp_path_factory.mktemp("data") / "speech", words=["zero", "one", "two"],
                               accents=["en-us", "en-gb"], variants=["m1", "f2", "m3", "klatt", "f4"])


@pytest.fixture(scope="session")
def commands_dir(tmp_path_factory) -> Path:
    """A small spoken-commands build (transcribed): 4 utterances x 1 accent x 5 voice variants, split by variant."""
    if shutil.which("espeak-ng") is None:
        missing("espeak-ng")
    from d2v.training.data.demo import build_spoken_commands

    return build_spoken_commands(tmp_path_factory.mktemp("data") / "commands", per_voice=4, accents=["en-us"],
                                 variants=["m1", "f2", "m3", "klatt", "f4"])


@pytest.fixture(scope="session")
def wordnet_dir(tmp_path_factory) -> Path:
    """WordNet glosses of the 3 most frequent lexicographer files, 20 each, plus an unlabelled part."""
    if not (WORDNET / "data.noun").is_file():
        missing("wordnet-base")
    from d2v.training.data.demo import build_wordnet

    return build_wordnet(tmp_path_factory.mktemp("data") / "wordnet", classes=3, per_class=20, unlabelled=60)
