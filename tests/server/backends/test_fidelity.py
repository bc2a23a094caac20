"""The load-time fidelity check: cosine similarity, the check inputs of each modality, the tasks it
compares, and its verdict on two real backends."""

import json

import numpy as np
import pytest

from d2v.server.backends import Task, load_backend
from d2v.server.backends.fidelity import check_inputs, check_tasks, cosine, measure_fidelity


def test_cosine():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert cosine(a, 3 * a) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 5.0])) == pytest.approx(0.0)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0 and cosine(np.zeros(3), np.ones(3)) == 0.0


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_check_inputs_are_deterministic_model_inputs_of_different_lengths(model_dirs, modality):
    config = json.loads((model_dirs[modality] / "config.json").read_text())
    first, again = check_inputs(config), check_inputs(config)
    assert len(first) == 4 and all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    if modality == "image":
        size = config["preprocessing"]["image_size"]
        assert {x.shape for x in first} == {(3, size, size)} and first[0].dtype == np.float32
    else:
        assert len({len(x) for x in first}) == 4
    if modality == "text":
        vocab = config["encoder"]["text"]["vocab_size"]
        assert all(x.dtype == np.int64 and x.max() < vocab and x[0] == 0 and x[-1] == 2 for x in first)


def test_check_tasks_cover_the_head():
    assert check_tasks({"modality": "audio", "head": None}) == [("embed", "mean")]
    assert check_tasks({"modality": "text", "head": {"type": "first_token"}}) == [
        ("embed", "mean"), ("embed", "cls"), ("classify", "mean")]
    assert check_tasks({"modality": "audio", "head": {"type": "ctc"}}) == [("embed", "mean"), ("transcribe", "mean")]


def test_a_model_against_itself_and_against_another(model_dirs):
    a, b = load_backend(model_dirs["text"], threads=1), load_backend(model_dirs["text-onnx"], threads=1)
    same = measure_fidelity(a.run, b.run, a.config, Task)
    assert same.min_cosine > 0.9999 and same.outputs == 12
    def shuffled(items, tasks):
        return [np.roll(o, 1) for o in a.run(items, tasks)]

    far = measure_fidelity(a.run, shuffled, a.config, Task)
    assert far.min_cosine < 0.9 and "cosine to float32 over 12 outputs" in far.describe()
