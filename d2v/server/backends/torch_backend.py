"""PyTorch backend: a checkpoint directory on CUDA (the project's kernels via `d2v.kernels`' dispatch,
bf16 or fp16 weights) or on CPU (fp32; or bf16/fp16 weights with `--dtype`, or dynamic int8 linear
layers with `--quantize int8`).

Reduced precision on CPU is checked at load against the float32 model (`fidelity.py`) and refused
below `--min-cosine`. bf16 on a CPU without bf16 instructions (AVX512-BF16 or AMX) is emulated and
much slower than float32 (5x to 75x on this project's AVX2 machine, docs/benchmarks.md): it still
loads, with a warning."""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from d2v.model.checkpoint import FLOAT_DTYPES, load_checkpoint
from d2v.server.backends.base import Backend, BackendError, Task, collate, real_frames

__all__ = ["TorchBackend", "cpu_has_bf16"]

log = logging.getLogger("d2v.serve")


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


def cpu_has_bf16() -> bool | None:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo; None: unknown)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


class TorchBackend(Backend):
    backend = "torch"

    def __init__(self, path: Path, name: str, config: dict[str, Any], device: str = "auto", dtype: str = "auto",
                 threads: int = 0, quantize: str = "none", min_cosine: float = 0.99):
        from d2v.server.backends.fidelity import enforce_fidelity, measure_fidelity

        self._describe(name, path, config)
        if threads > 0:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.torch_device = pick_device("cpu" if quantize == "int8" and device == "auto" else device)
        self.dtype = pick_dtype(dtype, self.torch_device)
        on_cpu = self.torch_device.type == "cpu"
        if quantize == "int8" and (not on_cpu or self.dtype != torch.float32):
            raise BackendError(f"{name}: --quantize int8 runs on CPU in float32 (dynamic int8 linear layers), "
                               f"not with --dtype {dtype} --device {device}")
        reduced = on_cpu and (self.dtype != torch.float32 or quantize == "int8")
        self.model, _ = load_checkpoint(path, device=self.torch_device,
                                        dtype=torch.float32 if reduced else self.dtype)
        self.fidelity = None
        precision = str(self.dtype).removeprefix("torch.")
        if reduced:
            reference = self.model
            if quantize == "int8":
                from d2v.server.backends.quantize import quantize_torch_linear

                precision = "int8 dynamic"
                self.model = quantize_torch_linear(self.model)
            else:
                if self.dtype == torch.bfloat16 and cpu_has_bf16() is False:
                    log.warning("%s: this CPU has no bf16 instructions (AVX512-BF16/AMX): bf16 runs emulated, "
                                "5x to 75x slower than float32 on an AVX2 CPU (docs/benchmarks.md)", name)
                import copy

                self.model = copy.deepcopy(reference).to(self.dtype)
            if min_cosine > 0:
                self.fidelity = measure_fidelity(lambda i, t: self._forward(reference, torch.float32, i, t),
                                                 self.run, config, Task)
                enforce_fidelity(self.fidelity, min_cosine, f"{precision} on CPU", name)
                log.info("%s: %s on CPU, %s", name, precision, self.fidelity.describe())
            del reference
        self.device = f"{self.torch_device.type} ({precision})"

    def auto_lanes(self) -> int:
        """On a CPU with 2 or more threads: 3 for audio, 2 for images and text; else 1. Two forward
        passes side by side, each on half the threads, serve more than one pass on all of them (an
        operator on one batch's tensors does not keep every thread busy). Audio batches hold one to
        three long clips under the padded budget, so a third lane splits no batch and keeps speech's
        share of a CPU that other processes also use; for images and text it split batches and served
        less (docs/benchmarks.md, "Lanes"). A GPU runs one pass at a time."""
        if self.torch_device.type != "cpu" or self.threads < 2:
            return 1
        return 3 if self.modality == "audio" else 2

    def use_threads(self, n: int) -> None:
        # PyTorch's intra-op thread count is per calling thread (OpenMP), so each lane keeps its own
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)

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

    def run(self, items: list[np.ndarray], tasks: list[Task]) -> list[np.ndarray]:
        return self._forward(self.model, self.dtype, items, tasks)

    @torch.inference_mode()
    def _forward(self, model: torch.nn.Module, dtype: torch.dtype, items: list[np.ndarray], tasks: list[Task]
                 ) -> list[np.ndarray]:
        x, mask = collate(self.modality, items, self.pad_id)
        xt = torch.from_numpy(x).to(self.torch_device, non_blocking=True)
        if xt.is_floating_point():
            xt = xt.to(dtype)
        mt = None if mask is None else torch.from_numpy(mask).to(self.torch_device)
        tokens, pad = model.forward_features(xt, mt)
        results: dict[Task, np.ndarray | list[np.ndarray]] = {}
        for task in set(tasks):
            if task.kind == "transcribe":  # (B, T, V) emissions, cut to each item's real frames
                emissions = model.forward_head(tokens, pad).float().cpu().numpy()
                results[task] = real_frames(emissions, None if pad is None else pad.cpu().numpy())
                continue
            if task.kind == "classify":
                out = model.forward_head(tokens, pad)
            else:
                out = model.pool(tokens, pad, task.pooling)
            results[task] = out.float().cpu().numpy()
        return [results[t][i] for i, t in enumerate(tasks)]
