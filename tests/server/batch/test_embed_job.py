"""`d2v embed` end to end on real files: every good input gets the embedding it gets alone, bad ones go
to the errors file, a killed job resumes to exactly-once, shards (and torchrun ranks) cover the input."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from media import audio_bytes, digit, image_bytes, photo, spoken
from processes import kill_when
from realdata import speak
from texts import BROKEN_CASES, assert_one_line_error, broken_tokenizer_checkpoints

from d2v.cli import main
from d2v.server.backends.base import load_backend
from d2v.server.batch.job import ENGINE_FIELDS, EmbedJob, run_embed_job
from d2v.server.batch.sources import list_sources, shard_of
from d2v.server.batch.store import JobMismatch, embedding_matrix
from d2v.server.config import ServeConfig
from d2v.server.decode import make_input_decoder
from d2v.server.engine import finish_embeddings

ENGINE = {"threads": 1, "max_wait_ms": 2.0}


def job(model, inp, out, **kw) -> EmbedJob:
    engine = {**ENGINE, **{k: kw.pop(k) for k in list(kw) if k in ENGINE_FIELDS}}
    return EmbedJob(str(model), str(inp), str(out), progress=False, engine=engine, **kw)


def alone(model, values, pooling=None, dimensions=None, normalize=True, **limits) -> np.ndarray:
    """Each input embedded on its own, as /embed answers a request of one."""
    backend = load_backend(model, threads=1)
    cfg = ServeConfig(**limits)
    decoder = make_input_decoder(backend.config, backend.directory, cfg.max_pixels, cfg.max_audio_seconds, cfg.max_tokens)
    out = []
    for v in values:
        x = decoder(v, 0).data
        out.append(finish_embeddings(backend.run([x], [_task(pooling or backend.default_pooling)]), dimensions,
                                     normalize)[0])
    return np.stack(out)


def _task(pooling):
    from d2v.server.backends.base import Task

    return Task("embed", pooling)


def read(out) -> tuple[list[str], np.ndarray, dict[str, str]]:
    table = pq.read_table(out / "embeddings.parquet")
    errors = {r["id"]: r["error"] for r in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    return table.column("id").to_pylist(), embedding_matrix(table), errors


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i in range(14):
        (root / str(i % 3)).mkdir(exist_ok=True)
        (root / str(i % 3) / f"{i:02d}.png").write_bytes(image_bytes(digit(i)))
    (root / "photo.jpg").write_bytes(image_bytes(photo(0), "JPEG"))
    (root / "big.jpg").write_bytes(image_bytes(photo(1, size=None), "JPEG"))  # 640 x 427: over the pixel limit
    (root / "0" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (root / "empty.jpg").write_bytes(b"")
    (root / "README.txt").write_text("not an image")
    return root


def test_image_folder(tmp_path, image_dir, model_dirs):
    out = tmp_path / "out"
    summary = run_embed_job(job(model_dirs["image"], image_dir, out, max_pixels=200_000, npy=True))
    assert (summary.inputs, summary.embedded, summary.failed, summary.skipped, summary.merged) == (18, 15, 3, 0, True)
    ids, vectors, errors = read(out)
    good = [s for s in list_sources(image_dir, "image") if s.id not in ("0/corrupt.png", "empty.jpg", "big.jpg")]
    assert ids == [s.id for s in good]  # input order
    np.testing.assert_allclose(vectors, alone(model_dirs["image"], [s.path.read_bytes() for s in good]), atol=1e-5)
    assert set(errors) == {"0/corrupt.png", "empty.jpg", "big.jpg"}
    assert "not a readable image" in errors["0/corrupt.png"] and errors["empty.jpg"] == "empty file"
    assert "exceeds the limit of 200000" in errors["big.jpg"]
    np.testing.assert_array_equal(np.load(out / "embeddings.npy"), vectors)
    df = pd.read_parquet(out / "embeddings.parquet")  # what users read it with
    assert list(df.columns) == ["id", "source", "embedding", "fingerprint"] and df.embedding[0].dtype == np.float32
    assert df.fingerprint[0] == f"file:{good[0].path.stat().st_size}:{good[0].path.stat().st_mtime_ns}"
    meta = json.loads(pq.read_schema(out / "embeddings.parquet").metadata[b"d2v"])
    assert meta["model"] == "tiny-image" and meta["pooling"] == "mean" and meta["normalize"] is True

    again = run_embed_job(job(model_dirs["image"], image_dir, out, max_pixels=200_000))
    assert (again.skipped, again.embedded, again.failed) == (18, 0, 0)
    assert read(out)[0] == ids


def test_audio_manifest_with_the_onnx_backend(tmp_path, model_dirs):
    clips = tmp_path / "clips"
    clips.mkdir()
    files = {"seven.wav": spoken("seven", 16000), "three.flac": spoken("three", 22050, "FLAC"),
             "zero.ogg": spoken("zero", 8000, "OGG"), "one.wav": spoken("one", 44100, channels=2),
             "long.wav": audio_bytes(speak("one two three four five six", speed=120), 16000),
             "broken.wav": b"RIFF\x00\x00\x00\x00WAVEjunk"}
    for name, data in files.items():
        (clips / name).write_bytes(data)
    rows = [{"id": n.split(".")[0], "path": f"clips/{n}"} for n in files]
    rows += [{"id": "gone", "path": "clips/missing.wav"}, {"id": "words", "text": "seven"}]
    manifest = tmp_path / "clips.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    summary = run_embed_job(job(model_dirs["audio-onnx"], manifest, out, max_audio_seconds=1.5, dimensions=16))
    assert (summary.embedded, summary.failed) == (4, 4)
    ids, vectors, errors = read(out)
    assert ids == ["seven", "three", "zero", "one"] and vectors.shape == (4, 16)
    expected = alone(model_dirs["audio-onnx"], [files[n] for n in ("seven.wav", "three.flac", "zero.ogg", "one.wav")],
                     dimensions=16, max_audio_seconds=1.5)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(vectors, alone(model_dirs["audio"], [files["seven.wav"], files["three.flac"],
                                                                   files["zero.ogg"], files["one.wav"]],
                                              dimensions=16), atol=1e-4)  # the two backends agree
    assert "exceeds the limit of 1.5 s" in errors["long"] and "not a readable audio file" in errors["broken"]
    assert "cannot read" in errors["gone"] and "take files ('path'), not 'text'" in errors["words"]


def test_text_file_cls_pooling_and_truncation(tmp_path, model_dirs, glosses):
    docs = tmp_path / "docs.txt"
    lines = [*glosses[:20], "", " ".join(glosses[:12])]  # a blank line, and one over the 48-token limit
    docs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    summary = run_embed_job(job(model_dirs["text"], docs, out, pooling="cls", normalize=False))
    assert (summary.embedded, summary.failed) == (21, 1)
    ids, vectors, errors = read(out)
    assert ids == [str(i) for i in range(1, 21)] + ["22"] and errors == {"21": "empty text"}
    kept = lines[:20] + lines[21:]
    np.testing.assert_allclose(vectors, alone(model_dirs["text"], kept, pooling="cls", normalize=False), atol=1e-5)

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_dirs["text"] / "tokenizer.model"))
    too_long = {str(i + 1) for i, line in enumerate(lines) if len(sp.encode(line)) + 2 > 48}
    assert "22" in too_long
    strict = run_embed_job(job(model_dirs["text"], docs, tmp_path / "strict", truncate=False))
    assert (strict.embedded, strict.failed) == (21 - len(too_long), 1 + len(too_long))
    errors = read(tmp_path / "strict")[2]
    assert set(errors) == too_long | {"21"} and "exceed the limit of 48" in errors["22"]


def test_token_ids_in_a_manifest(tmp_path, model_dirs, glosses):
    """A text model converted without a tokenizer embeds `tokens` rows; a model with one takes both."""
    import shutil

    from d2v.tokenizer import load_tokenizer

    bare = tmp_path / "bare"
    shutil.copytree(model_dirs["text"], bare)
    (bare / "tokenizer.model").unlink()
    config = json.loads((bare / "config.json").read_text())
    config["preprocessing"]["tokenizer"] = None
    (bare / "config.json").write_text(json.dumps(config))
    tok = load_tokenizer(model_dirs["text"], {**config["preprocessing"], "tokenizer": "tokenizer.model"},
                         config["encoder"]["text"]["vocab_size"])
    ids = [tok.encode(g, 48) for g in glosses[:6]]
    rows = [{"id": f"t{i}", "tokens": x} for i, x in enumerate(ids)]
    rows += [{"id": "empty", "tokens": []}, {"id": "range", "tokens": [0, 10**6, 2]},
             {"id": "floats", "tokens": [0, 5.5, 2]}, {"id": "text", "text": glosses[0]}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = run_embed_job(job(bare, manifest, tmp_path / "out"))
    assert (summary.embedded, summary.failed) == (6, 4)
    got_ids, vectors, errors = read(tmp_path / "out")
    assert got_ids == [f"t{i}" for i in range(6)]
    assert errors["empty"] == "empty list of token ids" and "token id 1000000 is outside" in errors["range"]
    assert "must be a list of integers" in errors["floats"] and "has no tokenizer" in errors["text"]
    np.testing.assert_allclose(vectors, alone(bare, ids), atol=1e-5)
    np.testing.assert_allclose(vectors, alone(model_dirs["text"], glosses[:6]), atol=1e-5)  # the same as text
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps({"id": "a", "tokens": ids[0]}) + "\n" + json.dumps({"id": "b", "text": glosses[0]}))
    run_embed_job(job(model_dirs["text"], mixed, tmp_path / "mixed"))
    _, both, _ = read(tmp_path / "mixed")
    np.testing.assert_allclose(both[0], both[1], atol=1e-6)


def test_token_rows_are_fingerprinted_by_their_ids(tmp_path, model_dirs, glosses, capsys):
    """A `tokens` row's fingerprint is a hash of its ids: a rerun with the same ids skips it, other ids
    under the same id are refused until --redo-changed, which embeds them again."""
    from d2v.tokenizer import load_tokenizer

    config = json.loads((model_dirs["text"] / "config.json").read_text())
    tok = load_tokenizer(model_dirs["text"], config["preprocessing"], config["encoder"]["text"]["vocab_size"])
    first, second = ([tok.encode(g, 48) for g in glosses[a:a + 4]] for a in (0, 4))
    manifest, out = tmp_path / "m.jsonl", tmp_path / "out"

    def write(ids):
        manifest.write_text("".join(json.dumps({"id": f"doc-{i}", "tokens": x}) + "\n" for i, x in enumerate(ids)))

    write(first)
    assert run_embed_job(job(model_dirs["text"], manifest, out)).embedded == 4
    table = pq.read_table(out / "embeddings.parquet")
    fingerprints = table.column("fingerprint").to_pylist()
    assert all(f.startswith("tokens:") for f in fingerprints) and len(set(fingerprints)) == 4
    before = read(out)[1]
    again = run_embed_job(job(model_dirs["text"], manifest, out))
    assert (again.embedded, again.skipped) == (0, 4)

    write([*first[:2], *second[2:]])  # doc-2 and doc-3 now hold other ids
    base = ["embed", "--model", str(model_dirs["text"]), "--input", str(manifest), "--output", str(out),
            "--no-progress", "--threads", "1"]
    capsys.readouterr()
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "2 inputs changed since they were embedded (first: 'doc-2', 'doc-3')" in err and err.count("\n") == 1
    np.testing.assert_array_equal(read(out)[1], before)  # nothing replaced
    assert main([*base, "--redo-changed"]) == 0
    assert "embedded 2, failed 0, skipped 2" in capsys.readouterr().err
    ids, vectors, _ = read(out)
    assert ids == [f"doc-{i}" for i in range(4)]
    np.testing.assert_allclose(vectors, alone(model_dirs["text"], [*glosses[:2], *glosses[6:8]]), atol=1e-5)


def test_two_shards_cover_the_input_once(tmp_path, model_dirs, glosses):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(glosses[:40]) + "\n")
    out = tmp_path / "out"
    first = run_embed_job(job(model_dirs["text"], docs, out, shard="0/2"))
    assert not first.merged and not (out / "embeddings.parquet").exists()
    part_ids = {x for f in (out / "parts").glob("*.parquet") for x in pq.read_table(f).column("id").to_pylist()}
    assert part_ids == {str(i) for i in range(1, 41) if shard_of(str(i), 2) == 0} and 10 < len(part_ids) < 30
    second = run_embed_job(job(model_dirs["text"], docs, out, shard="1/2"))
    assert second.merged and first.embedded + second.embedded == 40
    ids, vectors, _ = read(out)
    assert ids == [str(i) for i in range(1, 41)]
    np.testing.assert_allclose(vectors, alone(model_dirs["text"], glosses[:40]), atol=1e-5)


def d2v_embed(*args: str) -> list[str]:
    return [sys.executable, "-m", "d2v.cli", "embed", "--threads", "1", "--no-progress", *map(str, args)]


def test_a_killed_job_resumes_and_embeds_every_input_once(tmp_path, model_dirs, glosses):
    docs = tmp_path / "docs.txt"
    lines = [f"{g} ({i})" for i, g in enumerate(glosses * 40)]  # 2,560 documents
    docs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args = ["--model", model_dirs["text"], "--input", docs, "--output", out, "--part-rows", "40",
            "--max-batch-size", "4"]
    proc = subprocess.Popen(d2v_embed(*args), stderr=subprocess.PIPE, text=True)
    # killed mid-part: some results buffered, some committed
    kill_when(proc, lambda: any((out / "parts").glob("*.parquet")), after_s=0.05)
    assert not (out / "embeddings.parquet").exists()
    committed = {x for f in (out / "parts").glob("*.parquet") for x in pq.read_table(f).column("id").to_pylist()}
    assert 40 <= len(committed) < len(lines)

    rerun = subprocess.run(d2v_embed(*args), check=False, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped {len(committed)} (done before)" in rerun.stderr
    ids, vectors, errors = read(out)
    assert ids == [str(i) for i in range(1, len(lines) + 1)] and not errors  # each exactly once, in order
    reference = tmp_path / "reference"
    run_embed_job(job(model_dirs["text"], docs, reference))
    np.testing.assert_allclose(vectors, read(reference)[1], atol=1e-5)


def test_torchrun_ranks_take_their_shards(tmp_path, model_dirs, glosses):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(glosses[:30]) + "\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "d2v.cli",
           "embed", "--model", str(model_dirs["text"]), "--input", str(docs), "--output", str(out), "--threads", "1",
           "--no-progress"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "[shard 0/2]" not in done.stderr  # no progress bars
    assert done.stderr.count("inputs done") == 2
    ids, vectors, _ = read(out)
    assert ids == [str(i) for i in range(1, 31)]
    np.testing.assert_allclose(vectors, alone(model_dirs["text"], glosses[:30]), atol=1e-5)


def test_command_line_errors(tmp_path, model_dirs, glosses, capsys):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(glosses[:3]) + "\n")
    base = ["embed", "--model", str(model_dirs["text"]), "--input", str(docs), "--output", str(tmp_path / "o"),
            "--no-progress", "--threads", "1"]
    assert main(base) == 0
    assert main([*base, "--dimensions", "8"]) == 2
    assert "holds embeddings made with other settings (dimensions was 32, now 8)" in capsys.readouterr().err
    assert main(["embed", "--model", str(model_dirs["audio"]), "--input", str(tmp_path), "--output",
                 str(tmp_path / "a"), "--pooling", "cls"]) == 2
    assert "audio models have no CLS token" in capsys.readouterr().err
    assert main([*base[:3], "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "b")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["embed", "--model", str(tmp_path), "--input", str(docs), "--output", str(tmp_path / "c")]) == 2
    assert "config.json is missing" in capsys.readouterr().err


@pytest.fixture(scope="module")
def broken(model_dirs, tmp_path_factory):
    return broken_tokenizer_checkpoints(model_dirs["text"], tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize("case", BROKEN_CASES)
def test_a_broken_or_wrong_tokenizer_is_one_clear_line(broken, case, tmp_path, glosses, capsys):
    path, expected = broken[case]
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(glosses[:3]) + "\n")
    assert main(["embed", "--model", str(path), "--input", str(docs), "--output", str(tmp_path / "o"),
                 "--no-progress", "--threads", "1"]) == 2
    assert_one_line_error(capsys.readouterr().err, "d2v embed: ", expected)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            preexec_fn=None) -> subprocess.CompletedProcess:
    """`d2v embed ARGS` in a subprocess (CPU, one thread, no progress bar)."""
    return subprocess.run(d2v_embed("--device", "cpu", *args), check=False, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, preexec_fn=preexec_fn)


def parts_left(out) -> list:
    return sorted(p.name for p in (out / "parts").glob("*")) if (out / "parts").exists() else []


def temporaries(out) -> list:
    return [p.name for p in out.rglob(".*") if p.name != ".merge.lock"]


def test_a_merge_interrupted_after_committing_its_output_finishes_on_the_next_run(tmp_path, model_dirs, glosses):
    """The state a merge killed between committing embeddings.parquet and removing the parts leaves (also in
    directories written by earlier versions): the rerun must finish, not fail "embedded twice" forever."""
    docs = tmp_path / "docs.txt"
    lines = [*glosses[:24], ""]  # one input fails
    docs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert not run_embed_job(job(model_dirs["text"], docs, out, shard="0/2", part_rows=4)).merged
    merged_parts = {p.name: p.read_bytes() for p in (out / "parts").iterdir()}
    assert run_embed_job(job(model_dirs["text"], docs, out, shard="1/2", part_rows=4)).merged
    (out / "parts").mkdir()
    for name, data in merged_parts.items():  # shard 0's parts come back, as if their removal had not happened
        (out / "parts" / name).write_bytes(data)

    rerun = run_cli("--model", model_dirs["text"], "--input", docs, "--output", out)
    assert rerun.returncode == 0, rerun.stderr
    ids, vectors, errors = read(out)
    assert ids == [str(i) for i in range(1, 25)] and errors == {"25": "empty text"}  # each exactly once
    np.testing.assert_allclose(vectors, alone(model_dirs["text"], glosses[:24]), atol=1e-5)
    assert parts_left(out) == []


MERGE_STEPS = ["errors.jsonl", "embeddings.parquet", "embeddings.npy", "index.jsonl", "removed-1", "removed-all"]


@pytest.mark.parametrize("step", MERGE_STEPS)
def test_a_merge_killed_at_any_step_finishes_on_the_next_run(tmp_path, model_dirs, glosses, step):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join([*glosses[:10], "", glosses[10]]) + "\n")
    out = tmp_path / "out"
    args = ["--model", model_dirs["text"], "--input", docs, "--output", out, "--part-rows", "3", "--npy"]
    killed = run_cli(*args, env={"D2V_EMBED_KILL_AFTER": f"merge:{step}"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # SIGKILLed right after that step
    assert len(parts_left(out)) >= (0 if step == "removed-all" else 1)

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    ids, vectors, errors = read(out)
    assert ids == [str(i) for i in range(1, 11)] + ["12"] and errors == {"11": "empty text"}  # each exactly once
    np.testing.assert_allclose(vectors, alone(model_dirs["text"], [*glosses[:10], glosses[10]]), atol=1e-5)
    np.testing.assert_array_equal(np.load(out / "embeddings.npy"), vectors)
    assert [json.loads(x)["id"] for x in (out / "index.jsonl").read_text().splitlines()] == ids
    assert parts_left(out) == [] and temporaries(out) == []


def test_a_rerun_on_other_inputs_under_the_same_ids_is_refused_then_redone(tmp_path, model_dirs, glosses, capsys):
    first, other = tmp_path / "first.txt", tmp_path / "other.txt"
    first.write_text("\n".join(glosses[:20]) + "\n")
    other.write_text("\n".join(glosses[20:40]) + "\n")  # as many lines: the same ids 1..20
    out = tmp_path / "out"
    base = ["embed", "--model", str(model_dirs["text"]), "--output", str(out), "--no-progress", "--threads", "1"]
    assert main([*base, "--input", str(first)]) == 0
    before = read(out)[1]
    capsys.readouterr()

    assert main([*base, "--input", str(other)]) == 2
    err = capsys.readouterr().err
    assert "20 inputs changed since they were embedded (first: '1'" in err and "--redo-changed" in err
    assert err.count("\n") == 1  # one line
    np.testing.assert_array_equal(read(out)[1], before)  # nothing replaced

    assert main([*base, "--input", str(other), "--redo-changed"]) == 0
    assert "embedded 20, failed 0, skipped 0" in capsys.readouterr().err
    ids, vectors, _ = read(out)
    assert ids == [str(i) for i in range(1, 21)]
    np.testing.assert_allclose(vectors, alone(model_dirs["text"], glosses[20:40]), atol=1e-5)
    assert main([*base, "--input", str(other)]) == 0  # now the same inputs: nothing to do
    assert "skipped 20 (done before)" in capsys.readouterr().err


def test_changed_files_are_noticed_by_size_and_modification_time(tmp_path, model_dirs):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        (images / f"{i}.png").write_bytes(image_bytes(digit(i)))
    (images / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    out = tmp_path / "out"
    first = run_embed_job(job(model_dirs["image"], images, out))
    assert (first.embedded, first.failed) == (4, 1)

    (images / "bad.png").write_bytes(image_bytes(digit(9)))  # repaired: tried again, no flag needed
    again = run_embed_job(job(model_dirs["image"], images, out))
    assert (again.embedded, again.failed, again.skipped) == (1, 0, 4)
    assert read(out)[2] == {}

    (images / "2.png").write_bytes(image_bytes(digit(7)))  # another picture under an embedded id
    with pytest.raises(JobMismatch, match=r"1 inputs changed since they were embedded \(first: '2.png'"):
        run_embed_job(job(model_dirs["image"], images, out))
    redo = run_embed_job(job(model_dirs["image"], images, out, redo_changed=True))
    assert (redo.embedded, redo.skipped) == (1, 4)
    ids, vectors, _ = read(out)
    assert ids == ["0.png", "1.png", "2.png", "3.png", "bad.png"]
    np.testing.assert_allclose(vectors, alone(model_dirs["image"], [(images / i).read_bytes() for i in ids]),
                               atol=1e-5)


def test_a_job_whose_every_input_fails_ends_with_an_empty_result(tmp_path, model_dirs):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n  \n\n")
    out = tmp_path / "out"
    summary = run_embed_job(job(model_dirs["text"], docs, out, npy=True))
    assert (summary.embedded, summary.failed, summary.merged) == (0, 3, True)
    ids, vectors, errors = read(out)
    assert ids == [] and vectors.shape == (0, 32) and errors == {"1": "empty text", "2": "empty text",
                                                                   "3": "empty text"}
    assert pq.read_schema(out / "embeddings.parquet").field("embedding").type.list_size == 32
    assert len(pd.read_parquet(out / "embeddings.parquet")) == 0
    assert np.load(out / "embeddings.npy").shape == (0, 32) and (out / "index.jsonl").read_text() == ""
    again = run_embed_job(job(model_dirs["text"], docs, out))
    assert (again.skipped, again.merged) == (3, True)


def _limit_memory() -> None:
    """A runaway read (of /dev/zero, say) ends in MemoryError instead of taking the machine's memory."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))


def test_only_regular_files_are_read_and_each_within_a_size_limit(tmp_path, model_dirs, glosses):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text(glosses[i])
    os.mkfifo(folder / "pipe.txt")  # nobody writes to it: opening it to read would wait forever
    (folder / "dir.txt").mkdir()  # a directory named like a document (not listed: directories are walked)
    (folder / "nested").mkdir()
    (folder / "nested" / "big.txt").write_text(" ".join(glosses))
    manifest = tmp_path / "m.jsonl"
    rows = [{"id": "zero", "path": "/dev/zero"}, {"id": "pipe", "path": "docs/pipe.txt"},
            {"id": "folder", "path": "docs"}, {"id": "one", "path": "docs/1.txt"}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    done = run_cli("--model", model_dirs["text"], "--input", folder, "--output", tmp_path / "a", timeout=180,
                   preexec_fn=_limit_memory)
    assert done.returncode == 0, done.stderr
    ids, _, errors = read(tmp_path / "a")
    assert ids == ["0.txt", "1.txt", "2.txt", "nested/big.txt"]
    assert errors == {"pipe.txt": "not a regular file (a FIFO)"}

    done = run_cli("--model", model_dirs["text"], "--input", manifest, "--output", tmp_path / "b", timeout=180,
                   preexec_fn=_limit_memory)
    assert done.returncode == 0, done.stderr
    ids, _, errors = read(tmp_path / "b")
    assert ids == ["one"]
    assert errors == {"zero": "not a regular file (a character device)", "pipe": "not a regular file (a FIFO)",
                      "folder": "not a regular file (a directory)"}

    limit = (folder / "nested" / "big.txt").stat().st_size - 1
    summary = run_embed_job(job(model_dirs["text"], folder, tmp_path / "c", max_file_bytes=limit))
    assert (summary.embedded, summary.failed) == (3, 2)
    assert read(tmp_path / "c")[2]["nested/big.txt"] == (f"file of {limit + 1} bytes exceeds the limit of {limit} "
                                                          "bytes (--max-file-bytes)")
