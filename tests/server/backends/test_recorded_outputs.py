"""The bundled demo models, and an export made before the refactors of this release, give the outputs
recorded by the code that made them: old checkpoints and exports load and answer identically.

`tests/fixtures/demo_outputs/` holds the inputs (real PNG/JPEG digits and a photo, espeak-ng speech at
8, 16 and 22.05 kHz in WAV and FLAC, three texts), `outputs.npz` (for every demo model: mean- and, for
image and text, CLS-pooled embeddings, classification logits or CTC emissions, each input alone, from
the PyTorch checkpoint and from its ONNX export), and `digits-image-export/`, the export of
models/digits-image as that code wrote it. They were recorded through the backends (`load_backend`,
the request decoder, `Backend.run`) by the code of commit 3b2b060, before the refactors that moved the
modality arithmetic, the request decoder's names, the configuration and the tokenizer constants.
"""

import base64
import json
from pathlib import Path

import numpy as np
import pytest

import d2v
from d2v.server.backends import Task, load_backend
from d2v.server.decode import make_input_decoder

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "demo_outputs"
MODELS = Path(d2v.__file__).resolve().parents[1] / "models"
FILES = {"image": ["digit-3.png", "digit-8.png", "photo.jpg"],
         "audio": ["seven-16k.wav", "turn-left-22k.flac", "two-nine-8k.wav"]}


def items(directory: Path) -> tuple[dict, list[np.ndarray]]:
    config = json.loads((directory / "config.json").read_text())
    modality = config["modality"]
    if modality == "text":
        raw = json.loads((FIXTURES / "inputs" / "texts.json").read_text())
    else:
        raw = [base64.b64encode((FIXTURES / "inputs" / f).read_bytes()).decode() for f in FILES[modality]]
    decoder = make_input_decoder(config, directory, 10**8, 60, 0)
    return config, [decoder(x, i).data for i, x in enumerate(raw)]


def tasks(config: dict) -> list[Task]:
    main = Task("transcribe") if (config.get("head") or {}).get("type") == "ctc" else Task("classify")
    return [Task("embed", "mean"), main] + ([Task("embed", "cls")] if config["modality"] != "audio" else [])


def check(directory: Path, name: str, kind: str) -> int:
    recorded = np.load(FIXTURES / "outputs.npz")
    config, inputs = items(directory)
    backend = load_backend(directory, threads=1)
    assert backend.backend == kind
    compared = 0
    for task in tasks(config):
        for i, got in enumerate(backend.run(inputs, [task] * len(inputs))):
            want = recorded[f"{name}/{kind}/{task.kind}-{task.pooling}/{i}"]
            assert got.shape == want.shape, (task, i)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=f"{name} {task} input {i}")
            compared += 1
    return compared


@pytest.mark.parametrize("name", sorted(p.name for p in MODELS.iterdir() if (p / "config.json").is_file()))
def test_demo_checkpoints_answer_as_recorded(name):
    assert check(MODELS / name, name, "torch") >= 6


def test_an_old_export_loads_and_answers_as_recorded():
    assert check(FIXTURES / "digits-image-export", "digits-image", "onnx") == 9
