"""How close a reduced-precision model (bf16/fp16 weights on CPU, dynamic int8 linear layers) stays to
its float32 original, checked when it is loaded.

The check runs both on a few deterministic synthetic inputs of the model's modality, once per task the
model answers, and compares each output (pooled embedding, logits, CTC emissions) with the float32 one
by cosine similarity. The load is refused when any output's cosine falls below the bound
(`--min-cosine`, 0.99 by default). Real-input fidelity (and top-1 agreement, transcript equality) is
what `bench/precision.py` records in docs/benchmarks.md; synthetic inputs are harder than real ones
(noise excites every weight), so the load-time bound errs on the safe side.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from d2v.model.modality import HAS_CLS_TOKEN
from d2v.server.backends.base import BackendError
from d2v.tokenizer.spec import BOS_ID, EOS_ID

__all__ = ["Fidelity", "check_inputs", "check_tasks", "cosine", "enforce_fidelity", "measure_fidelity"]

Run = Callable[[list[np.ndarray], list[Any]], list[np.ndarray]]
"""A backend's forward: items and their tasks -> one float32 output per item."""


@dataclass(frozen=True)
class Fidelity:
    """Cosine similarity of a reduced model's outputs to float32's over the check inputs."""

    mean_cosine: float
    min_cosine: float
    worst: str
    """The task whose output was furthest from float32 ("embed", "classify", "transcribe")."""
    outputs: int

    def describe(self) -> str:
        return (f"cosine to float32 over {self.outputs} outputs: mean {self.mean_cosine:.5f}, "
                f"min {self.min_cosine:.5f} ({self.worst})")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays, flattened (1.0 for two zero arrays)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return float(na == nb)
    return float(a @ b / (na * nb))


def check_inputs(config: dict[str, Any], n: int = 4) -> list[np.ndarray]:
    """`n` deterministic synthetic model inputs of the config's modality, of different lengths:
    images (C, H, W) of smooth patterns plus noise, audio (L,) of tones plus noise at the model's
    sample rate, text (T,) token ids between BOS and EOS."""
    pre, rng = config.get("preprocessing") or {}, np.random.default_rng(0)
    modality = config["modality"]
    if modality == "image":
        size, c = int(pre["image_size"]), int(pre.get("channels", 3))
        grid = np.linspace(-1, 1, size, dtype=np.float32)
        out = []
        for i in range(n):
            pattern = np.sin((i + 1) * 3 * grid[None, :] + (i + 2) * 2 * grid[:, None])
            out.append((pattern[None] + 0.3 * rng.standard_normal((c, size, size))).astype(np.float32))
        return out
    if modality == "audio":
        rate = int(pre["sample_rate"])
        out = []
        for i in range(n):
            t = np.arange(rate * (i + 2) // 4) / rate
            tone = 0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t) + 0.05 * rng.standard_normal(len(t))
            out.append(tone.astype(np.float32))
        return out
    bos, eos = int(pre.get("bos_id", BOS_ID)), int(pre.get("eos_id", EOS_ID))
    vocab = int(config["encoder"]["text"]["vocab_size"])
    limit = int(config["encoder"]["text"].get("max_positions", 64)) - 2
    return [np.array([bos, *rng.integers(4, vocab, min(limit, 6 + 5 * i)), eos], dtype=np.int64) for i in range(n)]


def check_tasks(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, pooling) of every task the model answers: mean-pooled embeddings (and CLS ones where the
    modality has the token), then its head's logits or CTC emissions."""
    tasks = [("embed", "mean")] + ([("embed", "cls")] if HAS_CLS_TOKEN[config["modality"]] else [])
    head = config.get("head")
    if head:
        tasks.append(("transcribe", "mean") if head.get("type") == "ctc" else ("classify", "mean"))
    return tasks


def measure_fidelity(reference: Run, reduced: Run, config: dict[str, Any], make_task: Callable[[str, str], Any]
                     ) -> Fidelity:
    """Run `reference` (float32) and `reduced` on the check inputs, once per task, and compare.

    Args:
        reference, reduced: forwards of the two models (a backend's `run`, or one over another model).
        config: the model directory's config.json contents (modality, preprocessing, head).
        make_task: (kind, pooling) -> the backend's task object.
    """
    items = check_inputs(config)
    scores: list[tuple[float, str]] = []
    for kind, pooling in check_tasks(config):
        tasks = [make_task(kind, pooling)] * len(items)
        for a, b in zip(reference(items, tasks), reduced(items, tasks), strict=True):
            scores.append((cosine(a, b), kind))
    values = np.array([s for s, _ in scores])
    worst = min(scores)
    return Fidelity(float(values.mean()), float(worst[0]), worst[1], len(scores))


def enforce_fidelity(fidelity: Fidelity, bound: float, what: str, name: str) -> None:
    """Refuse (BackendError) a reduced model whose worst output has cosine below `bound` to float32."""
    if fidelity.min_cosine < bound:
        raise BackendError(f"{name}: {what} is refused: its {fidelity.describe()} is below --min-cosine {bound:g}. "
                           f"Serve it in float32, or lower --min-cosine (0: no check) if that is good enough")
