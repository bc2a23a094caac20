"""`d2v data`: the demo datasets, built from what the machine has (no download), with fixed
seeded splits, in the layout of docs/data.md. Each dataset is built aside and swapped into place
(`d2v.atomic.atomic_directory`): a killed build leaves the previous dataset, and its temporaries are
removed by the next build.

- `digits` (image): scikit-learn's 1,797 handwritten 8x8 digits as grey PNGs in class folders,
  stratified 70/10/20 train/validation/test.
- `spoken-digits` (audio): espeak-ng speaks "zero" .. "nine" with 8 English accents x 50 voice
  variants, each clip at a seeded random speed and pitch: 4,000 16 kHz FLAC clips, silence trimmed,
  in JSONL manifests. Splits hold out whole voice variants (35/5/10 variants), so the test set is
  spoken by voices never heard in training.
- `spoken-commands` (audio with transcripts, for CTC speech recognition): espeak-ng speaks
  sequences of 1-5 digits ("three one four") and short commands ("turn left", "go back", ...), 8
  accents x 50 voice variants, 8 utterances per voice at a seeded random speed and pitch: 3,200
  16 kHz FLAC clips, silence trimmed, with `text` in the JSONL manifests; split by voice variant as
  above (35/5/10), so the test set is spoken by voices never heard in training.
- `wordnet` (text): WordNet glosses labelled by lexicographer file. The 12 most frequent files, 1,000
  glosses each, split 70/10/20 per class; every other gloss (about 105k) goes to an unlabelled
  `unlabelled.jsonl` for pretraining.
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from d2v.atomic import atomic_directory
from d2v.legacy_temporaries import clean_temporaries
from d2v.preprocessing import TRIM_SILENCE, trim_silence

__all__ = ["COMMANDS", "LEXNAMES", "build_digits", "build_spoken_commands", "build_spoken_digits",
           "build_wordnet", "run_data"]

WORDNET = Path("/usr/share/wordnet")
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ACCENTS = ["en-gb", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "klatt4", "klatt6", "croak", "Alex", "Andy", "Annie", "belinda", "benjamin", "david",
            "edward", "linda", "max", "Michael", "quincy", "robert", "steph", "travis", "zac", "Gene", "iven",
            "john", "paul", "rob", "aunty", "boris", "caleb", "ed", "grandma", "grandpa", "Lee", "Mike",
            "norbert", "shelby", "victor"]
COMMANDS = ["go", "stop", "turn left", "turn right", "go back", "go forward", "move up", "move down", "start",
            "pause", "yes", "no", "open the door", "close the door", "lights on", "lights off"]
"""The command vocabulary of `spoken-commands` (the digit sequences use DIGIT_WORDS)."""
DIGIT_RUN = (1, 5)
"""Digits per spoken digit sequence, drawn uniformly."""
SPEEDS = (110, 210)
"""espeak-ng words per minute, drawn uniformly per clip."""
PITCHES = (25, 75)
"""espeak-ng pitch (0-99), drawn uniformly per clip."""
# the lexicographer files, by lex_filenum (WordNet's lexnames(5WN))
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]
SPLITS = ("train", "validation", "test")


def _split_counts(n: int, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> tuple[int, int, int]:
    """(train, validation, test) sizes; each at least 1 when n >= 3."""
    least = 1 if n >= 3 else 0
    n_val, n_test = max(round(n * fractions[1]), least), max(round(n * fractions[2]), least)
    return n - n_val - n_test, n_val, n_test


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_meta(root: Path, **meta) -> None:
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")


def _building(root: Path) -> contextlib.AbstractContextManager[Path]:
    """A temporary sibling of `root` to build into, swapped into place when the block completes
    (after removing what killed builds left beside it)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    clean_temporaries(root.parent, [root.name])
    return atomic_directory(root)


# ---- digits ----------------------------------------------------------------------------------------


def build_digits(root: str | Path, seed: int = 0) -> Path:
    """scikit-learn digits -> <root>/{train,validation,test}/<digit>/<index>.png (8x8 grey)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root)
    with _building(root) as tmp:
        d = load_digits()
        rng = np.random.default_rng(seed)
        counts = Counter()
        for label in range(10):
            idx = rng.permutation(np.flatnonzero(d.target == label))
            n_train, n_val, _ = _split_counts(len(idx))
            parts = {"train": idx[:n_train], "validation": idx[n_train:n_train + n_val], "test": idx[n_train + n_val:]}
            for split, ids in parts.items():
                folder = tmp / split / str(label)
                folder.mkdir(parents=True)
                for i in ids:
                    pixels = np.round(d.images[i] * 255.0 / 16.0).astype(np.uint8)  # 0..16 -> 0..255
                    Image.fromarray(pixels, "L").save(folder / f"{i:04d}.png")
                counts[split] += len(ids)
        _write_meta(tmp, name="digits", modality="image", labels=[str(i) for i in range(10)], splits=dict(counts),
                    layout="class folders", source="scikit-learn load_digits (UCI ML hand-written digits, 8x8, 0-16)",
                    seed=seed)
    return root


# ---- spoken digits ---------------------------------------------------------------------------------


def _speak(text: str, voice: str, speed: int, pitch: int, rate: int) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    wav_bytes = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                               check=True, capture_output=True).stdout
    wav, sr = sf.read(io.BytesIO(wav_bytes), dtype="float32")
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    g = np.gcd(sr, rate)
    wav = resample_poly(wav, rate // g, sr // g).astype(np.float32)
    return trim_silence(wav, rate, **TRIM_SILENCE)  # leading/trailing silence, keeping 50 ms


def build_spoken_digits(root: str | Path, seed: int = 0, workers: int | None = None, rate: int = 16000,
                        words: list[str] = DIGIT_WORDS, accents: list[str] = ACCENTS,
                        variants: list[str] = VARIANTS) -> Path:
    """espeak-ng digit words -> <root>/clips/*.flac and <root>/{train,validation,test}.jsonl.

    Args:
        words, accents, variants: what is spoken, by whom (tests build a smaller set)."""
    import soundfile as sf

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng)")
    root = Path(root)
    with _building(root) as tmp:
        (tmp / "clips").mkdir()
        rng = np.random.default_rng(seed)
        split_of = _voice_splits(variants, rng)
        jobs = []
        for variant in variants:
            for accent in accents:
                for word in words:
                    speed, pitch = int(rng.integers(SPEEDS[0], SPEEDS[1] + 1)), int(rng.integers(PITCHES[0], PITCHES[1] + 1))
                    name = f"{word}_{accent}_{variant}_s{speed}_p{pitch}.flac"
                    jobs.append({"path": f"clips/{name}", "label": word, "voice": f"{accent}+{variant}",
                                 "variant": variant, "accent": accent, "speed": speed, "pitch": pitch})

        def make(job: dict) -> dict:
            wav = _speak(job["label"], job["voice"], job["speed"], job["pitch"], rate)
            sf.write(tmp / job["path"], wav, rate, format="FLAC")
            return {**job, "seconds": round(len(wav) / rate, 3)}

        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
            rows = list(pool.map(make, jobs))
        by_split = defaultdict(list)
        for row in rows:
            by_split[split_of[row["variant"]]].append(row)
        for split in SPLITS:
            _write_jsonl(tmp / f"{split}.jsonl", by_split[split])
        _write_meta(tmp, name="spoken-digits", modality="audio", labels=list(words), sample_rate=rate,
                    splits={s: len(by_split[s]) for s in SPLITS}, layout="jsonl manifests",
                    source="espeak-ng " + _espeak_version(), accents=list(accents),
                    variants={s: sorted(v for v in variants if split_of[v] == s) for s in SPLITS},
                    speeds_wpm=list(SPEEDS), pitches=list(PITCHES), seed=seed)
    return root


def _voice_splits(variants: list[str], rng: np.random.Generator) -> dict[str, str]:
    """Voice variant -> split, 70/10/20 of the variants in a seeded order: whole voices are held out."""
    order = rng.permutation(len(variants))
    n_train, n_val, _ = _split_counts(len(variants))
    return {variants[v]: "train" if rank < n_train else "validation" if rank < n_train + n_val else "test"
            for rank, v in enumerate(order)}


def _utterance(rng: np.random.Generator, commands: list[str]) -> tuple[str, str]:
    """(kind, text): a digit sequence or a command, with equal chance."""
    if rng.random() < 0.5:
        n = int(rng.integers(DIGIT_RUN[0], DIGIT_RUN[1] + 1))
        return "digits", " ".join(DIGIT_WORDS[int(d)] for d in rng.integers(0, 10, n))
    return "command", commands[int(rng.integers(len(commands)))]


def build_spoken_commands(root: str | Path, seed: int = 0, workers: int | None = None, rate: int = 16000,
                          per_voice: int = 8, accents: list[str] = ACCENTS, variants: list[str] = VARIANTS,
                          commands: list[str] = COMMANDS, splits: tuple[str, ...] = SPLITS) -> Path:
    """espeak-ng digit sequences and commands -> <root>/clips/*.flac and <root>/{train,validation,test}.jsonl
    with "path" and "text" (lower case, words separated by one space) per clip.

    Args:
        per_voice, accents, variants, commands: how much is spoken, by whom, and what (tests build a
            smaller set).
        splits: the splits to synthesize and write; the others are drawn but not spoken, so a split
            is the same clips whichever splits are built (tests rebuild the test split alone)."""
    import soundfile as sf

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng)")
    root = Path(root)
    with _building(root) as tmp:
        (tmp / "clips").mkdir()
        rng = np.random.default_rng(seed)
        split_of = _voice_splits(variants, rng)
        jobs = []
        for variant in variants:
            for accent in accents:
                for i in range(per_voice):
                    kind, text = _utterance(rng, commands)
                    speed, pitch = int(rng.integers(SPEEDS[0], SPEEDS[1] + 1)), int(rng.integers(PITCHES[0], PITCHES[1] + 1))
                    jobs.append({"path": f"clips/{variant}_{accent}_{i:02d}.flac", "text": text, "kind": kind,
                                 "voice": f"{accent}+{variant}", "variant": variant, "accent": accent, "speed": speed,
                                 "pitch": pitch})

        def make(job: dict) -> dict:
            wav = _speak(job["text"], job["voice"], job["speed"], job["pitch"], rate)
            sf.write(tmp / job["path"], wav, rate, format="FLAC")
            return {**job, "seconds": round(len(wav) / rate, 3)}

        jobs = [j for j in jobs if split_of[j["variant"]] in splits]
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
            rows = list(pool.map(make, jobs))
        by_split = defaultdict(list)
        for row in rows:
            by_split[split_of[row["variant"]]].append(row)
        for split in splits:
            _write_jsonl(tmp / f"{split}.jsonl", by_split[split])
        _write_meta(tmp, name="spoken-commands", modality="audio", task="ctc", sample_rate=rate,
                    splits={s: len(by_split[s]) for s in splits}, layout="jsonl manifests with path and text",
                    source="espeak-ng " + _espeak_version(), commands=list(commands), digit_run=list(DIGIT_RUN),
                    per_voice=per_voice, accents=list(accents),
                    variants={s: sorted(v for v in variants if split_of[v] == s) for s in SPLITS},
                    speeds_wpm=list(SPEEDS), pitches=list(PITCHES), seed=seed)
    return root


def _espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], check=False, capture_output=True, text=True).stdout
    return out.split("Data")[0].replace("eSpeak NG text-to-speech:", "").strip()


# ---- WordNet ---------------------------------------------------------------------------------------


def read_wordnet(wordnet: Path = WORDNET) -> list[tuple[str, str]]:
    """(gloss, lexicographer file) for every synset of data.{noun,verb,adj,adv}."""
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        f = wordnet / f"data.{pos}"
        if not f.is_file():
            raise RuntimeError(f"{f} is missing (Debian package wordnet-base)")
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue  # the licence header
            fields, gloss = line.split("|", 1)
            out.append((" ".join(gloss.split()), LEXNAMES[int(fields.split()[1])]))
    return out


def build_wordnet(root: str | Path, seed: int = 0, classes: int = 12, per_class: int = 1000,
                  unlabelled: int | None = None, wordnet: Path = WORDNET) -> Path:
    """WordNet glosses -> <root>/{train,validation,test,unlabelled}.jsonl ({"text", "label"}).

    Args:
        unlabelled: keep at most this many of the other glosses (all when None)."""
    root = Path(root)
    synsets = read_wordnet(wordnet)
    counts = Counter(label for _, label in synsets)
    labels = sorted(label for label, _ in counts.most_common(classes))
    rng = np.random.default_rng(seed)
    by_label = defaultdict(list)
    for i, (_, label) in enumerate(synsets):
        by_label[label].append(i)
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    used = set()
    for label in labels:
        idx = rng.permutation(by_label[label])[:per_class]
        n_train, n_val, _ = _split_counts(len(idx))
        for split, ids in (("train", idx[:n_train]), ("validation", idx[n_train:n_train + n_val]),
                           ("test", idx[n_train + n_val:])):
            splits[split].extend({"text": synsets[i][0], "label": label} for i in ids)
            used.update(int(i) for i in ids)
    rest = [{"text": synsets[i][0]} for i in rng.permutation(len(synsets)) if int(i) not in used]
    rest = rest[:unlabelled] if unlabelled is not None else rest
    with _building(root) as tmp:
        for split, rows in splits.items():
            order = rng.permutation(len(rows))
            _write_jsonl(tmp / f"{split}.jsonl", [rows[i] for i in order])
        _write_jsonl(tmp / "unlabelled.jsonl", rest)
        _write_meta(tmp, name="wordnet", modality="text", labels=labels,
                    splits={**{s: len(r) for s, r in splits.items()}, "unlabelled": len(rest)},
                    layout="jsonl manifests", seed=seed,
                    source=f"WordNet 3.0 glosses ({wordnet}/data.*), labelled by lexicographer file; the {classes} most "
                           f"frequent files, {per_class} glosses each; all other glosses unlabelled")
    return root


# ---- the command -----------------------------------------------------------------------------------

BUILDERS = {"digits": build_digits, "spoken-digits": build_spoken_digits, "spoken-commands": build_spoken_commands,
            "wordnet": build_wordnet}


def run_data(args: argparse.Namespace) -> int:
    out = Path(args.out)
    for name in args.only:
        t0 = time.perf_counter()
        kwargs = {"workers": args.workers} if name in ("spoken-digits", "spoken-commands") else {}
        try:
            path = BUILDERS[name](out / name, seed=args.seed, **kwargs)
        except (RuntimeError, subprocess.CalledProcessError) as e:
            print(f"d2v data: cannot build {name}: {e}", file=sys.stderr)
            return 1
        meta = json.loads((path / "dataset.json").read_text())
        print(f"{name:<16} {path}  {meta['splits']}  ({time.perf_counter() - t0:.0f} s)")
    return 0
