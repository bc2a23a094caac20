"""`d2v embed --task transcribe` on real audio files with the converted fairseq speech recognizer:
every clip gets the transcript it gets alone (PyTorch and onnxruntime), bad clips go to errors.jsonl,
a job killed with SIGKILL resumes to exactly once, shards cover the input; and `d2v embed` of an
imported model (the fairseq text model, token ids) gives fairseq's own pooled vectors."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from imported import fairseq_fixture
from media import audio_bytes
from processes import kill_when
from realdata import speak

from d2v.cli import main
from d2v.ctc import greedy_decode
from d2v.server.backends.base import Task, load_backend
from d2v.server.batch.job import EmbedJob, run_embed_job
from d2v.server.batch.sources import list_sources
from d2v.server.batch.store import embedding_matrix
from d2v.server.config import ServeConfig
from d2v.server.decode import make_input_decoder

PHRASES = ["turn left", "stop", "three one four", "go forward two steps", "nine", "seven eight"]


def job(model, inp, out, **kw) -> EmbedJob:
    engine = {"threads": 1, "max_wait_ms": 2.0, **kw.pop("engine", {})}
    return EmbedJob(str(model), str(inp), str(out), task=kw.pop("task", "transcribe"), progress=False, engine=engine,
                    **kw)


def alone(model, files: list[bytes], **limits) -> list[str]:
    """Each file transcribed on its own, as /transcribe answers a request of one."""
    backend = load_backend(model, threads=1)
    cfg = ServeConfig(**limits)
    decoder = make_input_decoder(backend.config, backend.directory, cfg.max_pixels, cfg.max_audio_seconds, cfg.max_tokens)
    out = []
    for raw in files:
        emissions = backend.run([decoder(raw, 0).data], [Task("transcribe")])[0]
        out.append(greedy_decode(emissions[None], backend.vocabulary)[0])
    return out


def read(out) -> tuple[list[str], list[str], dict[str, str]]:
    table = pq.read_table(out / "transcripts.parquet")
    errors = {r["id"]: r["error"] for r in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    return table.column("id").to_pylist(), table.column("text").to_pylist(), errors


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """Spoken phrases as WAV and FLAC at 8 to 48 kHz (stereo too), a corrupt file, an empty one, a
    clip over the duration limit, and a text file (not audio: not an input)."""
    root = tmp_path_factory.mktemp("clips")
    for i, phrase in enumerate(PHRASES):
        rate = (8000, 16000, 22050, 44100, 48000, 16000)[i]
        fmt = ("WAV", "FLAC")[i % 2]
        folder = root / ("a" if i < 3 else "b")
        folder.mkdir(exist_ok=True)
        (folder / f"{i}-{phrase.replace(' ', '_')}.{fmt.lower()}").write_bytes(
            audio_bytes(speak(phrase, speed=140 + 10 * i, rate=rate), rate, fmt, channels=1 + (i == 4)))
    (root / "a" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (root / "empty.flac").write_bytes(b"")
    (root / "long.wav").write_bytes(audio_bytes(0.1 * np.sin(np.arange(16000 * 4, dtype=np.float32) / 9), 16000))
    (root / "notes.txt").write_text("not audio")
    return root


BAD = {"a/corrupt.wav", "empty.flac", "long.wav"}


def test_a_folder_of_audio_becomes_transcripts(tmp_path, clip_dir, imported):
    ctc = imported.checkpoint("fairseq-ctc")
    out = tmp_path / "out"
    summary = run_embed_job(job(ctc, clip_dir, out, engine={"max_audio_seconds": 3.0}))
    assert (summary.inputs, summary.embedded, summary.failed, summary.merged) == (9, 6, 3, True)
    assert "transcribed 6" in summary.line() and "transcripts.parquet" in summary.line()
    ids, texts, errors = read(out)
    good = [s for s in list_sources(clip_dir, "audio") if s.id not in BAD]
    assert ids == [s.id for s in good]  # input order
    expected = alone(ctc, [s.path.read_bytes() for s in good], max_audio_seconds=3.0)
    assert texts == expected and any(texts)
    assert set(errors) == BAD and "exceeds the limit of 3 s" in errors["long.wav"] and errors["empty.flac"] == "empty file"
    assert "not a readable audio file" in errors["a/corrupt.wav"]
    df = pd.read_parquet(out / "transcripts.parquet")  # what users read it with
    assert list(df.columns) == ["id", "source", "text", "fingerprint"] and df.text.tolist() == expected
    meta = json.loads(pq.read_schema(out / "transcripts.parquet").metadata[b"d2v"])
    assert meta["task"] == "transcribe" and meta["model"] == "fairseq-ctc" and meta["backend"] == "torch"
    assert json.loads((out / "job.json").read_text())["task"] == "transcribe"
    assert not (out / "embeddings.parquet").exists()

    again = run_embed_job(job(ctc, clip_dir, out, engine={"max_audio_seconds": 3.0}))
    assert (again.skipped, again.embedded, again.failed) == (9, 0, 0)
    onnx = run_embed_job(job(imported.export("fairseq-ctc"), clip_dir, tmp_path / "onnx",
                             engine={"max_audio_seconds": 3.0}))
    assert onnx.merged and read(tmp_path / "onnx")[1] == texts


def test_two_shards_cover_the_input_once(tmp_path, clip_dir, imported):
    ctc, out = imported.checkpoint("fairseq-ctc"), tmp_path / "out"
    first = run_embed_job(job(ctc, clip_dir, out, shard="0/2"))
    second = run_embed_job(job(ctc, clip_dir, out, shard="1/2"))
    assert not first.merged and second.merged and first.embedded + second.embedded == 7  # long.wav: under 60 s
    assert read(out)[1] == read_reference(ctc, clip_dir, tmp_path)


def read_reference(ctc, clip_dir, tmp_path) -> list[str]:
    run_embed_job(job(ctc, clip_dir, tmp_path / "reference"))
    return read(tmp_path / "reference")[1]


def d2v_transcribe(*args) -> list[str]:
    return [sys.executable, "-m", "d2v.cli", "embed", "--task", "transcribe", "--threads", "1", "--no-progress",
            *map(str, args)]


def test_a_killed_transcription_job_resumes_and_transcribes_every_clip_once(tmp_path, imported):
    clips = tmp_path / "clips"
    clips.mkdir()
    spoken = [audio_bytes(speak(p, speed=150, rate=16000), 16000, "FLAC") for p in PHRASES]
    for i in range(360):
        (clips / f"{i:04d}.flac").write_bytes(spoken[i % len(spoken)])
    out = tmp_path / "out"
    args = ["--model", imported.checkpoint("fairseq-ctc"), "--input", clips, "--output", out, "--part-rows", "20",
            "--max-batch-size", "4"]
    proc = subprocess.Popen(d2v_transcribe(*args), stderr=subprocess.PIPE, text=True)
    # killed mid-part: some results buffered, some committed
    kill_when(proc, lambda: any((out / "parts").glob("*.parquet")), after_s=0.05)
    assert not (out / "transcripts.parquet").exists()
    committed = {x for f in (out / "parts").glob("*.parquet") for x in pq.read_table(f).column("id").to_pylist()}
    assert 20 <= len(committed) < 360

    rerun = subprocess.run(d2v_transcribe(*args), check=False, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped {len(committed)} (done before)" in rerun.stderr and "transcribed" in rerun.stderr
    ids, texts, errors = read(out)
    assert ids == [f"{i:04d}.flac" for i in range(360)] and not errors  # each exactly once, in order
    expected = alone(imported.checkpoint("fairseq-ctc"), spoken)
    assert texts == [expected[i % len(spoken)] for i in range(360)]


def test_command_line_errors(tmp_path, clip_dir, imported, capsys):
    ctc = str(imported.checkpoint("fairseq-ctc"))
    base = ["embed", "--input", str(clip_dir), "--no-progress", "--threads", "1"]
    assert main([*base, "--task", "transcribe", "--model", str(imported.checkpoint("fairseq-audio")), "--output",
                 str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'fairseq-audio' is not a speech recognizer" in err
    assert main([*base, "--task", "transcribe", "--model", ctc, "--output", str(tmp_path / "b"), "--npy"]) == 2
    assert "--npy: embedding options; a transcription job writes text" in capsys.readouterr().err
    assert main([*base, "--model", ctc, "--output", str(tmp_path / "c")]) == 0  # embeddings of a CTC model
    capsys.readouterr()
    assert main([*base, "--task", "transcribe", "--model", ctc, "--output", str(tmp_path / "c")]) == 2
    assert "holds embeddings made with other settings (task was None, now 'transcribe'" in capsys.readouterr().err


def test_d2v_embed_of_an_imported_model_gives_the_references_vectors(tmp_path, imported):
    """The converted fairseq text model takes token ids only: a manifest of the fixture's token ids,
    embedded without normalization, gives the pooled vectors fairseq computed."""
    _, inputs, expected = fairseq_fixture("fairseq-text")
    manifest = tmp_path / "tokens.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"t{i}", "tokens": t[:n].tolist()}) + "\n"
                                for i, (t, n) in enumerate(zip(inputs["tokens"], inputs["lengths"], strict=True))))
    summary = run_embed_job(job(imported.checkpoint("fairseq-text"), manifest, tmp_path / "out", task="embed",
                                normalize=False))
    assert summary.embedded == len(inputs["lengths"]) and summary.failed == 0
    table = pq.read_table(tmp_path / "out" / "embeddings.parquet")
    assert table.column("id").to_pylist() == [f"t{i}" for i in range(len(inputs["lengths"]))]
    np.testing.assert_allclose(embedding_matrix(table), expected["pooled"], atol=1e-4)
