"""PyTorch backend: a checkpoint directory on CUDA (the project's kernels via `d2v.kernels`' dispatch,
bf16 or fp16 weights) or on CPU (fp32)."""

from pathlib import Path
from typing import Any

import numpy as np
import torch

from d2v.model.checkpoint import FLOAT_DTYPES, load_checkpoint
from d2v.server.backends.base import Backend, Task, collate, real_frames

__all__ = ["TorchBackend"]

def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but PyTorch sees no CUDA device")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return FLOAT_DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class TorchBackend(Backend):
    backend = "torch"

    def __init__(self, path: Path, name: str, config: dict[str, Any], device: str = "auto", dtype: str = "auto",
                 threads: int = 0):
        self._describe(name, path, config)
        if threads > 0:
            torch.set_num_threads(threads)
        self.torch_device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.torch_device)
        self.model, _ = load_checkpoint(path, device=self.torch_device, dtype=self.dtype)
        self.device = f"{self.torch_device.type} ({str(self.dtype).removeprefix('torch.')})"

    def kernels(self) -> dict[str, str]:
        """Per op: "reference", "triton", "triton (unchecked)" or "reference (fallback: WHY)" (d2v.kernels'
        check against the reference at the first CUDA call failed)."""
        from d2v import kernels

        if not kernels.use_triton(torch.zeros(1, device=self.torch_device, dtype=self.dtype)):  # CPU, or switched off
            return dict.fromkeys(kernels.OPS, "reference")
        status = kernels.status()
        if self.dtype == torch.float32:  # fp32 attention always runs the reference (d2v.kernels)
            status["attention"] = "reference"
        return status

    @torch.inference_mode()
    def run(self, items: list[np.ndarray], tasks: list[Task]) -> list[np.ndarray]:
        x, mask = collate(self.modality, items, self.pad_id)
        xt = torch.from_numpy(x).to(self.torch_device, non_blocking=True)
        if xt.is_floating_point():
            xt = xt.to(self.dtype)
        mt = None if mask is None else torch.from_numpy(mask).to(self.torch_device)
        tokens, pad = self.model.forward_features(xt, mt)
        results: dict[Task, np.ndarray | list[np.ndarray]] = {}
        for task in set(tasks):
            if task.kind == "transcribe":  # (B, T, V) emissions, cut to each item's real frames
                emissions = self.model.forward_head(tokens, pad).float().cpu().numpy()
                results[task] = real_frames(emissions, None if pad is None else pad.cpu().numpy())
                continue
            if task.kind == "classify":
                out = self.model.forward_head(tokens, pad)
            else:
                out = self.model.pool(tokens, pad, task.pooling)
            results[task] = out.float().cpu().numpy()
        return [results[t][i] for i, t in enumerate(tasks)]
