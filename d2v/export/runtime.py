"""Load and run an ONNX export directory with onnxruntime alone: this module never imports torch.

    model = OnnxModel("exports/digits-image")
    out = model.embed({"pixel_values": x})     # {"token_states", "token_padding_mask", "pooled_embedding"}
    logits = model.classify({"pixel_values": x})["logits"]
    out = model.emissions({"waveform": w, "padding_mask": m})   # CTC: {"emissions", "frame_padding_mask"}
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

__all__ = ["ExportFormatError", "OnnxModel", "read_export_config"]


class ExportFormatError(ValueError):
    """A directory is not a usable d2v ONNX export."""


def read_export_config(path: str | Path) -> dict[str, Any]:
    """Read `<path>/config.json` and check it has an "onnx" section."""
    path = Path(path)
    f = path / "config.json"
    if not f.is_file():
        raise ExportFormatError(f"{path} is not a d2v export directory: config.json is missing")
    try:
        config = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportFormatError(f"{f} is not valid JSON: {e}") from None
    if not isinstance(config, dict) or not isinstance(config.get("onnx"), dict):
        raise ExportFormatError(f"{f} has no 'onnx' section: is {path} a checkpoint rather than an export?")
    return config


class OnnxModel:
    """The graphs of one export directory as onnxruntime sessions.

    Args:
        path: the export directory.
        providers: onnxruntime execution providers in order of preference; by default CUDA when
            this onnxruntime build has it, then CPU.
        threads: intra-op threads (0: onnxruntime's default).
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int = 0):
        self.path = Path(path)
        self.config = read_export_config(self.path)
        onnx = self.config["onnx"]
        available = ort.get_available_providers()
        wanted = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.providers = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sessions: dict[str, ort.InferenceSession] = {}
        for name, graph in onnx["graphs"].items():
            file = self.path / graph["file"]
            if not file.is_file():
                raise ExportFormatError(f"{self.path}: graph file {graph['file']!r} named in config.json is missing")
            self.sessions[name] = ort.InferenceSession(str(file), options, providers=self.providers)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.sessions["embed"].get_inputs()]

    def has(self, graph: str) -> bool:
        """Whether the export holds this graph ("embed", "classify", "emissions")."""
        return graph in self.sessions

    def _run(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if graph not in self.sessions:
            why = "a CTC head" if graph == "emissions" else "a classification head"
            raise ExportFormatError(f"{self.path} has no {graph}.onnx (the checkpoint had no {why})")
        session = self.sessions[graph]
        feed = {i.name: inputs[i.name] for i in session.get_inputs()}
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed), strict=True))

    def embed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs by graph input name -> token_states (B, T, D), token_padding_mask (B, T), pooled_embedding (B, D)."""
        return self._run("embed", inputs)

    def classify(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs by graph input name -> logits (B, C)."""
        return self._run("classify", inputs)

    def emissions(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """CTC models: inputs by graph input name -> emissions (B, T, V) and frame_padding_mask (B, T)."""
        return self._run("emissions", inputs)
