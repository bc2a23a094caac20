"""A bundled speech recognizer scores over HTTP the held-out word error rate its provenance records
(within 1 point): training, the checkpoint, the server's decoding and /transcribe agree end to end.

Which models and which test set, by the convention of docs/http-api.md ("Bundled speech
recognizers"): every directory under models/ whose config.json has a `ctc` head and a
`provenance.metrics.test_wer`; its test set is `provenance.test_manifest` (a JSONL manifest of
`path` and `text`, relative to the repository), else the `d2v data` dataset that `provenance.data`
names (its last path component), rebuilt here with the recorded `provenance.data_seed` (default 0),
split `provenance.test_split` (default "test"). Without such a model the test is skipped, saying so.
"""

import base64
import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import httpx
import pytest
from harness import Server

import d2v

ROOT = Path(d2v.__file__).resolve().parents[1]
MODELS = ROOT / "models"


def recognizers() -> list[Path]:
    """The bundled models with a CTC head and a recorded held-out WER."""
    found = []
    for config_file in sorted(MODELS.glob("*/config.json")):
        config = json.loads(config_file.read_text())
        metrics = (config.get("provenance") or {}).get("metrics") or {}
        if (config.get("head") or {}).get("type") == "ctc" and "test_wer" in metrics:
            found.append(config_file.parent)
    return found


def normalize(text: str) -> str:
    """A reference as d2v's CTC fine-tuning writes it: NFC, upper case, single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).upper().split())


def edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def test_edit_distance():
    assert edit_distance(["turn", "left", "now"], ["turn", "left"]) == 1
    assert edit_distance(["a", "b", "c"], ["x", "b", "c", "d"]) == 2
    assert edit_distance([], ["a", "b"]) == 2


def held_out_clips(provenance: dict, tmp_path: Path) -> list[dict]:
    """The recognizer's held-out clips: [{"path": absolute Path, "text": reference}]."""
    if provenance.get("test_manifest"):
        manifest = ROOT / provenance["test_manifest"]
        if not manifest.is_file():
            pytest.fail(f"provenance.test_manifest names {manifest}, which does not exist")
    else:
        from d2v.training.data.demo import DATASETS

        name = Path(str(provenance.get("data", ""))).name
        if name not in DATASETS:
            pytest.fail(f"provenance.data ({provenance.get('data')!r}) is not a `d2v data` dataset ({DATASETS}) and "
                        "provenance.test_manifest is not set: the held-out set cannot be found")
        build = subprocess.run([sys.executable, "-m", "d2v.cli", "data", "--only", name, "--out", str(tmp_path),
                                "--seed", str(provenance.get("data_seed", 0))], capture_output=True, text=True,
                               check=False, timeout=1800)
        assert build.returncode == 0, build.stderr
        manifest = tmp_path / name / f"{provenance.get('test_split', 'test')}.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return [{"path": manifest.parent / r["path"], "text": normalize(r["text"])} for r in rows]


@pytest.mark.parametrize("model", recognizers() or [pytest.param(None, marks=pytest.mark.skip(
    reason="no speech recognizer under models/ yet (a config.json with a ctc head and provenance.metrics.test_wer): "
           "the bundled demo recognizer has not landed"))], ids=lambda p: p.name if p else "none")
def test_the_recorded_held_out_wer_is_reproduced_over_http(model, tmp_path):
    provenance = json.loads((model / "config.json").read_text())["provenance"]
    clips = held_out_clips(provenance, tmp_path)
    assert clips, "the held-out set is empty"
    server = Server(["--model", f"asr={model}"])
    try:
        errors = words = 0
        with httpx.Client(base_url=server.url, timeout=300) as client:
            for i in range(0, len(clips), 32):
                batch = clips[i:i + 32]
                r = client.post("/transcribe", json={"model": "asr", "inputs": [
                    base64.b64encode(c["path"].read_bytes()).decode() for c in batch]})
                assert r.status_code == 200, r.text
                for c, d in zip(batch, r.json()["data"], strict=True):
                    errors += edit_distance(c["text"].split(), d["text"].split())
                    words += len(c["text"].split())
    finally:
        server.stop()
    wer = errors / words
    assert wer == pytest.approx(provenance["metrics"]["test_wer"], abs=0.01), (wer, provenance["metrics"])
