"""onnxruntime backend: an export directory, on the CUDA provider when this onnxruntime has it, else
CPU. Never imports torch (the server can run from an export directory without it).

CTC models transcribe with the export's emissions graph (`emissions.onnx`: emissions and their frame
padding mask). An export of a CTC model written before that graph existed has only `classify.onnx`,
whose `logits` are the same emissions: it is used instead, each item's real frames counted from its
number of samples through the feature extractor.

`--quantize int8` runs the export's int8 copy (`quantize.py`: made once in a cache directory, the
export itself untouched) on CPU, after checking it against the float32 graphs (`fidelity.py`)."""

import logging
from pathlib import Path
from typing import Any

import numpy as np

from d2v.export.runtime import OnnxModel
from d2v.model.modality import NUM_EXTRA_TOKENS, conv_frames, pool_numpy
from d2v.server.backends.base import Backend, BackendError, Task, collate, real_frames

__all__ = ["OnnxBackend"]

log = logging.getLogger("d2v.serve")


class OnnxBackend(Backend):
    backend = "onnx"

    def __init__(self, path: Path, name: str, config: dict[str, Any], device: str = "auto", threads: int = 0,
                 quantize: str = "none", min_cosine: float = 0.99, cache_dir: str | None = None):
        self._describe(name, path, config)
        providers = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
        if quantize == "int8" and device == "cuda":
            raise BackendError(f"{name}: --quantize int8 runs on CPU (dynamic int8 MatMul); drop --device cuda")
        wanted = ["CPUExecutionProvider"] if quantize == "int8" else providers.get(device)
        self.model = OnnxModel(path, providers=wanted, threads=threads)
        if device == "cuda" and "CUDAExecutionProvider" not in self.model.providers:
            raise RuntimeError("--device cuda was asked for, but this onnxruntime has no CUDA provider")
        self.device = self.model.providers[0].removesuffix("ExecutionProvider").lower()
        self.input_names = self.model.input_names
        self.extra = NUM_EXTRA_TOKENS[self.modality]
        self.fidelity = None
        if quantize == "int8":
            from d2v.server.backends.fidelity import enforce_fidelity, measure_fidelity
            from d2v.server.backends.quantize import quantized_export

            copy = quantized_export(path, config, cache_dir)
            reference = self.model
            self.model = OnnxModel(copy, providers=wanted, threads=threads)
            self.device = f"{self.device} (int8 dynamic)"
            if min_cosine > 0:
                def run_reference(items: list[np.ndarray], tasks: list[Task]) -> list[np.ndarray]:
                    return self._forward(reference, items, tasks)

                self.fidelity = measure_fidelity(run_reference, self.run, config, Task)
                enforce_fidelity(self.fidelity, min_cosine, "int8 on CPU", name)
                log.info("%s: int8 on CPU (%s), %s", name, copy.name, self.fidelity.describe())

    def _feed(self, items: list[np.ndarray]) -> dict[str, np.ndarray]:
        x, mask = collate(self.modality, items, self.pad_id)
        feed = {self.input_names[0]: x}
        if len(self.input_names) > 1:
            feed[self.input_names[1]] = mask
        return feed

    def run(self, items: list[np.ndarray], tasks: list[Task]) -> list[np.ndarray]:
        return self._forward(self.model, items, tasks)

    def _forward(self, model: OnnxModel, items: list[np.ndarray], tasks: list[Task]) -> list[np.ndarray]:
        feed = self._feed(items)
        results: dict[Task, np.ndarray] = {}
        kinds = set(tasks)
        if any(t.kind == "embed" for t in kinds):
            out = model.embed(feed)
            tokens, pad = out["token_states"], out["token_padding_mask"]
            for t in kinds:
                if t.kind == "embed":
                    results[t] = pool_numpy(tokens, pad, t.pooling, self.extra)
        if any(t.kind == "classify" for t in kinds):
            results[Task("classify")] = model.classify(feed)["logits"]
        if any(t.kind == "transcribe" for t in kinds):
            results[Task("transcribe")] = self._emissions(model, items, feed)
        return [np.asarray(results[t][i], dtype=np.float32) for i, t in enumerate(tasks)]

    def _emissions(self, model: OnnxModel, items: list[np.ndarray], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Each item's CTC emissions over its real frames."""
        if model.has("emissions"):
            out = model.emissions(feed)
            return real_frames(out["emissions"], out["frame_padding_mask"])
        logits = model.classify(feed)["logits"]  # an export from before emissions.onnx
        conv = self.config["encoder"]["audio"]["conv_layers"]
        return [np.asarray(e[: conv_frames(len(x), conv)], dtype=np.float32) for e, x in zip(logits, items, strict=True)]
