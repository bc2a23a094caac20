"""`d2v serve` on a CUDA device: the bundled demo models served in bf16 (the default dtype on CUDA),
through the kernels' dispatch, answer like the same models served on the CPU in fp32.

Marked `gpu`: skipped without CUDA, deselected by default; `bench/gpu_check.sh` runs it. The inputs are
made here (scikit-learn digits, a synthetic voiced waveform, fixed sentences) because a GPU machine
may have neither espeak-ng nor WordNet.
"""

import httpx
import numpy as np
import pytest
import torch
from harness import Server
from media import audio_bytes, b64, digit, image_bytes

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SENTENCES = ["a small domesticated carnivorous mammal", "the act of moving quickly on foot",
             "a written document describing findings", "an instrument for measuring time", "green leafy vegetable"]


def voiced(seconds: float, f0: float, rate: int = 16000) -> np.ndarray:
    """A vowel-like waveform: harmonics of f0 under a rising and falling envelope."""
    t = np.arange(int(seconds * rate)) / rate
    wav = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8))
    return (0.3 * wav * np.sin(np.pi * t / seconds) ** 2).astype(np.float32)


def inputs(modality: str) -> list[str]:
    if modality == "image":
        return [b64(image_bytes(digit(i)), "image/png") for i in range(8)]
    if modality == "audio":
        return [b64(audio_bytes(voiced(0.4 + 0.15 * i, 110 + 20 * i), 16000), "audio/wav") for i in range(6)]
    return SENTENCES


@pytest.fixture(scope="module")
def servers():
    gpu = Server(["--device", "cuda"])
    cpu = Server(["--device", "cpu", "--dtype", "float32"])
    yield gpu, cpu
    gpu.stop()
    cpu.stop()


def test_the_demo_models_on_cuda_answer_as_on_the_cpu(servers):
    gpu, cpu = servers
    models = httpx.get(gpu.url + "/models", timeout=30).json()["data"]
    assert models and all(m["device"].startswith("cuda") for m in models), models
    for m in models:
        assert not any("fallback" in str(v) for v in (m.get("kernels") or {}).values()), m
        body = {"model": m["name"], "inputs": inputs(m["modality"])}
        a = httpx.post(gpu.url + "/embed", json=body, timeout=120)
        b = httpx.post(cpu.url + "/embed", json=body, timeout=120)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        x = np.array([d["embedding"] for d in a.json()["data"]])
        y = np.array([d["embedding"] for d in b.json()["data"]])
        cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        assert cos.min() > 0.99, f"{m['name']}: bf16 on CUDA vs fp32 on CPU, cosine {cos.min():.4f}"
        if m.get("labels"):
            body["top_k"] = 1
            a = httpx.post(gpu.url + "/classify", json=body, timeout=120).json()["data"]
            b = httpx.post(cpu.url + "/classify", json=body, timeout=120).json()["data"]
            agree = np.mean([p["predictions"][0]["label"] == q["predictions"][0]["label"] for p, q in zip(a, b,
                                                                                                        strict=True)])
            assert agree >= 0.8, f"{m['name']}: top-1 agrees on {agree:.0%} of the inputs"
    assert httpx.get(gpu.url + "/health", timeout=60).status_code == 200
