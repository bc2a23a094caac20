"""onnxruntime backend: an export directory, on the CUDA provider when this onnxruntime has it, else
CPU. Never imports torch (the server can run from an export directory without it).

CTC models transcribe with the export's emissions graph (`emissions.onnx`: emissions and their frame
padding mask). An export of a CTC model written before that graph existed has only `classify.onnx`,
whose `logits` are the same emissions: it is used instead, each item's real frames counted from its
number of samples through the feature extractor."""

from pathlib import Path
from typing import Any

import numpy as np

from d2v.export.runtime import OnnxModel
from d2v.model.modality import NUM_EXTRA_TOKENS, conv_frames, pool_numpy
from d2v.server.backends.base import Backend, Task, collate, real_frames

__all__ = ["OnnxBackend"]


class OnnxBackend(Backend):
    backend = "onnx"

    def __init__(self, path: Path, name: str, config: dict[str, Any], device: str = "auto", threads: int = 0):
        self._describe(name, path, config)
        providers = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
        self.model = OnnxModel(path, providers=providers.get(device), threads=threads)
        if device == "cuda" and "CUDAExecutionProvider" not in self.model.providers:
            raise RuntimeError("--device cuda was asked for, but this onnxruntime has no CUDA provider")
        self.device = self.model.providers[0].removesuffix("ExecutionProvider").lower()
        self.input_names = self.model.input_names
        self.extra = NUM_EXTRA_TOKENS[self.modality]

    def _feed(self, items: list[np.ndarray]) -> dict[str, np.ndarray]:
        x, mask = collate(self.modality, items, self.pad_id)
        feed = {self.input_names[0]: x}
        if len(self.input_names) > 1:
            feed[self.input_names[1]] = mask
        return feed

    def run(self, items: list[np.ndarray], tasks: list[Task]) -> list[np.ndarray]:
        feed = self._feed(items)
        results: dict[Task, np.ndarray] = {}
        kinds = set(tasks)
        if any(t.kind == "embed" for t in kinds):
            out = self.model.embed(feed)
            tokens, pad = out["token_states"], out["token_padding_mask"]
            for t in kinds:
                if t.kind == "embed":
                    results[t] = pool_numpy(tokens, pad, t.pooling, self.extra)
        if any(t.kind == "classify" for t in kinds):
            results[Task("classify")] = self.model.classify(feed)["logits"]
        if any(t.kind == "transcribe" for t in kinds):
            results[Task("transcribe")] = self._emissions(items, feed)
        return [np.asarray(results[t][i], dtype=np.float32) for i, t in enumerate(tasks)]

    def _emissions(self, items: list[np.ndarray], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Each item's CTC emissions over its real frames."""
        if self.model.has("emissions"):
            out = self.model.emissions(feed)
            return real_frames(out["emissions"], out["frame_padding_mask"])
        logits = self.model.classify(feed)["logits"]  # an export from before emissions.onnx
        conv = self.config["encoder"]["audio"]["conv_layers"]
        return [np.asarray(e[: conv_frames(len(x), conv)], dtype=np.float32) for e, x in zip(logits, items, strict=True)]
