"""Both backends on real inputs: the same embeddings and logits for a checkpoint and its export,
padded batches equal to items run alone, and an onnxruntime backend that runs without torch."""

import json
import subprocess
import sys

import numpy as np
import pytest
from media import b64, digit, image_bytes, photo, spoken

from d2v.server.backends import Task, load_backend
from d2v.server.backends.base import BackendError
from d2v.server.decode import make_input_decoder

GLOSSES = ["a domesticated carnivorous mammal", "the act of moving", "a building where people live and work"]


def real_items(modality: str, directory) -> list[np.ndarray]:
    config = json.loads((directory / "config.json").read_text())
    dec = make_input_decoder(config, directory, 10**8, 60, 0)
    raw = {"image": [b64(image_bytes(photo(0), "JPEG")), b64(image_bytes(digit(4))), b64(image_bytes(photo(1)))],
           "audio": [b64(spoken("seven")), b64(spoken("three", 8000, speed=110)), b64(spoken("zero", 44100))],
           "text": GLOSSES}[modality]
    return [dec(x, i).data for i, x in enumerate(raw)]


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_backends_agree_and_batching_changes_nothing(model_dirs, modality):
    torch_b = load_backend(model_dirs[modality], threads=1)
    onnx_b = load_backend(model_dirs[f"{modality}-onnx"], threads=1)
    assert (torch_b.backend, onnx_b.backend) == ("torch", "onnx")
    items = real_items(modality, model_dirs[modality])
    tasks = [Task("embed", "mean"), Task("classify"), Task("embed", "mean")]
    if modality != "audio":
        tasks[2] = Task("embed", "cls")
    for b in (torch_b, onnx_b):
        batched = b.run(items, tasks)
        for x, t, got in zip(items, tasks, batched, strict=True):
            np.testing.assert_allclose(got, b.run([x], [t])[0], atol=1e-5)
    for a, o in zip(torch_b.run(items, tasks), onnx_b.run(items, tasks), strict=True):
        np.testing.assert_allclose(a, o, atol=1e-4)


def test_backend_choice_errors(model_dirs, tmp_path):
    with pytest.raises(BackendError, match="export it"):
        load_backend(model_dirs["text"], backend="onnx")
    with pytest.raises(BackendError, match="ONNX export"):
        load_backend(model_dirs["text-onnx"], backend="torch")
    with pytest.raises(BackendError, match="config.json is missing"):
        load_backend(tmp_path)


def test_onnx_backend_runs_without_torch(model_dirs):
    code = f"""
import sys
sys.modules["torch"] = None
from d2v.server.backends import Task, load_backend
from d2v.server.engine import Engine
import d2v.server.app
b = load_backend({str(model_dirs['text-onnx'])!r})
import numpy as np
out = b.run([np.array([0, 5, 6, 7, 2]), np.array([0, 9, 2])], [Task("embed", "mean"), Task("classify")])
assert out[0].shape == (32,) and out[1].shape == (3,)
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_speech_recognizers_mix_tasks_in_a_batch_and_transcribe_without_torch(imported):
    """A padded batch mixing /embed and /transcribe items gives each what it gets alone (emissions cut
    to its own frames), with PyTorch and onnxruntime; and the onnxruntime backend transcribes in a
    process where torch cannot be imported."""
    torch_b = load_backend(imported.checkpoint("fairseq-ctc"), threads=1)
    onnx_b = load_backend(imported.export("fairseq-ctc"), threads=1)
    items = real_items("audio", imported.checkpoint("fairseq-ctc"))
    tasks = [Task("transcribe"), Task("embed", "mean"), Task("transcribe")]
    for b in (torch_b, onnx_b):
        assert b.tasks == ["embed", "transcribe"] and b.labels is None and b.vocabulary.blank_id == 0
        batched = b.run(items, tasks)
        for x, t, got in zip(items, tasks, batched, strict=True):
            np.testing.assert_allclose(got, b.run([x], [t])[0], atol=1e-5)
        assert batched[0].shape[1] == len(b.vocabulary.labels) and batched[0].shape[0] != batched[2].shape[0]
    code = f"""
import sys
sys.modules["torch"] = None
import numpy as np
from d2v.ctc import greedy_decode
from d2v.server.backends import Task, load_backend
b = load_backend({str(imported.export("fairseq-ctc"))!r})
rng = np.random.default_rng(0)
out = b.run([rng.standard_normal(16000).astype(np.float32)], [Task("transcribe")])
print(repr(greedy_decode(out[0][None], b.vocabulary)[0]))
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
"""
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("'"), out.stderr


def test_torch_lanes_keep_their_own_thread_counts(model_dirs):
    """Lanes rest on PyTorch's intra-op thread count being per calling thread: a lane that sets one
    thread does not change what the loading thread (or another lane) uses, and the answers do not
    depend on the count."""
    import threading

    import torch

    before = torch.get_num_threads()
    try:
        b = load_backend(model_dirs["text"], threads=2)
        assert (b.threads, b.auto_lanes()) == (2, 2)
        items = real_items("text", model_dirs["text"])
        tasks = [Task("embed", "mean")] * len(items)
        alone = b.run(items, tasks)
        seen, outs = {}, {}

        def lane(k: int, n: int) -> None:
            b.use_threads(n)
            outs[k] = b.run(items, tasks)
            seen[k] = torch.get_num_threads()

        threads = [threading.Thread(target=lane, args=(k, n)) for k, n in ((0, 1), (1, 2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == {0: 1, 1: 2} and torch.get_num_threads() == 2
        for out in outs.values():
            for a, o in zip(alone, out, strict=True):
                np.testing.assert_allclose(a, o, atol=1e-5)
        assert load_backend(model_dirs["audio"], threads=2).auto_lanes() == 3
        assert load_backend(model_dirs["text"], threads=1).auto_lanes() == 1
        assert load_backend(model_dirs["text-onnx"], threads=2).auto_lanes() == 1
    finally:
        torch.set_num_threads(before)
