"""`d2v data`: the demo datasets' layout, labels, fixed splits and speaker-disjoint speech splits."""

import json

import soundfile as sf

from d2v.training.data.demo import (
    COMMANDS,
    DIGIT_WORDS,
    LEXNAMES,
    build_digits,
    build_spoken_commands,
    read_wordnet,
)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_digits_layout_and_fixed_splits(digits_dir, tmp_path):
    meta = json.loads((digits_dir / "dataset.json").read_text())
    assert meta["modality"] == "image" and meta["labels"] == [str(i) for i in range(10)]
    assert sum(meta["splits"].values()) == 1797
    for split, n in meta["splits"].items():
        assert len(list((digits_dir / split).glob("*/*.png"))) == n
    again = build_digits(tmp_path / "again")
    for split in ("train", "validation", "test"):
        names = sorted(p.relative_to(digits_dir).as_posix() for p in (digits_dir / split).glob("*/*.png"))
        assert names == sorted(p.relative_to(again).as_posix() for p in (again / split).glob("*/*.png"))


def test_spoken_digits_manifests(speech_dir):
    meta = json.loads((speech_dir / "dataset.json").read_text())
    assert meta["labels"] == ["zero", "one", "two"] and meta["sample_rate"] == 16000
    variants = {s: {r["variant"] for r in read_jsonl(speech_dir / f"{s}.jsonl")} for s in ("train", "validation", "test")}
    assert variants["train"] and variants["validation"] and variants["test"]
    assert not (variants["train"] & variants["test"]) and not (variants["train"] & variants["validation"])
    row = read_jsonl(speech_dir / "train.jsonl")[0]
    info = sf.info(speech_dir / row["path"])
    assert info.samplerate == 16000 and info.channels == 1 and info.format == "FLAC"
    assert 0.1 < info.duration < 2.0


def test_spoken_commands_manifests(commands_dir, tmp_path):
    """Transcribed clips: digit runs of 1-5 digits and commands, held-out voices, a fixed build."""
    meta = json.loads((commands_dir / "dataset.json").read_text())
    assert meta["task"] == "ctc" and meta["sample_rate"] == 16000 and meta["splits"] == {
        "train": 12, "validation": 4, "test": 4}
    rows = {s: read_jsonl(commands_dir / f"{s}.jsonl") for s in ("train", "validation", "test")}
    variants = {s: {r["variant"] for r in rows[s]} for s in rows}
    assert len(variants["train"]) == 3 and not (variants["train"] & (variants["validation"] | variants["test"]))
    assert variants["validation"] != variants["test"]
    for r in (r for split in rows.values() for r in split):
        if r["kind"] == "digits":
            words = r["text"].split()
            assert 1 <= len(words) <= 5 and set(words) <= set(DIGIT_WORDS)
        else:
            assert r["kind"] == "command" and r["text"] in COMMANDS
        info = sf.info(commands_dir / r["path"])
        assert info.samplerate == 16000 and info.channels == 1 and 0.1 < info.duration < 4.0
        assert r["seconds"] == round(info.frames / 16000, 3)
    again = build_spoken_commands(tmp_path / "again", per_voice=4, accents=["en-us"],
                                  variants=["m1", "f2", "m3", "klatt", "f4"])
    for split in rows:
        assert (again / f"{split}.jsonl").read_text() == (commands_dir / f"{split}.jsonl").read_text()
    row = rows["test"][0]
    a, _ = sf.read(again / row["path"])
    b, _ = sf.read(commands_dir / row["path"])
    assert (a == b).all()
    only = build_spoken_commands(tmp_path / "only", per_voice=4, accents=["en-us"],
                                 variants=["m1", "f2", "m3", "klatt", "f4"], splits=("test",))
    assert (only / "test.jsonl").read_text() == (commands_dir / "test.jsonl").read_text()
    assert not (only / "train.jsonl").exists() and len(list((only / "clips").iterdir())) == 4


def test_wordnet_labels_and_unlabelled_part(wordnet_dir):
    meta = json.loads((wordnet_dir / "dataset.json").read_text())
    assert len(meta["labels"]) == 3 and set(meta["labels"]) <= set(LEXNAMES)
    rows = {s: read_jsonl(wordnet_dir / f"{s}.jsonl") for s in ("train", "validation", "test", "unlabelled")}
    assert [len(rows[s]) for s in ("train", "validation", "test")] == [42, 6, 12]
    assert all(r["label"] in meta["labels"] and r["text"] for r in rows["train"])
    assert len(rows["unlabelled"]) == 60 and all("label" not in r for r in rows["unlabelled"])
    labelled = {r["text"] for s in ("train", "validation", "test") for r in rows[s]}
    assert not labelled & {r["text"] for r in rows["unlabelled"]} or len(labelled) < 60  # glosses may repeat


def test_wordnet_reader_knows_every_file():
    synsets = read_wordnet()
    assert len(synsets) > 100_000
    assert len({label for _, label in synsets}) == 45


def test_rebuild_is_atomic_and_cleans_killed_builds(tmp_path):
    """A dataset is swapped in whole; what killed builds left beside it (today's temporaries and the
    older `.<name>.<pid>.tmp`) is removed by the next build."""
    from d2v.atomic import _host

    root = build_digits(tmp_path / "digits")
    killed = [tmp_path / ".digits.4194999.tmp", tmp_path / f".digits.{_host()}-4194999-0a1b2c3d.d2v-tmp"]
    for p in killed:
        (p / "train").mkdir(parents=True)
    (root / "stale.txt").write_text("from the previous build")
    assert build_digits(tmp_path / "digits") == root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]
    assert not (root / "stale.txt").exists() and (root / "dataset.json").is_file()
