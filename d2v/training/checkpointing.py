"""Training checkpoints (for `--resume`), written atomically in the run directory:

    <run>/checkpoints/step-00000200/
        student.safetensors   the student: encoder and decoder
        teacher.safetensors   the EMA teacher
        optimizer.pt          AdamW state (tensors, numbers and strings only: read with weights_only)
        rng.pt                torch CPU (and CUDA) RNG states
        state.json            step (updates done), samples consumed, elapsed seconds, ...
    <run>/checkpoints/latest  the name of the newest complete checkpoint

Each checkpoint is written under a temporary name and renamed into place, then `latest` is replaced
the same way, so a run killed at any moment leaves its last complete checkpoint intact. The data
position needs no more than the step: batches are a function of (seed, step) (`sampler.py`).
"""

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from d2v.model.builder import build_encoder
from d2v.model.checkpoint import CheckpointConfig, default_preprocessing, save_checkpoint
from d2v.model.config import EncoderConfig, config_from_dict
from d2v.preprocessing import TRIM_SILENCE
from d2v.tokenizer import find_in_directory

__all__ = ["export_student", "latest_checkpoint", "load_training_checkpoint", "run_preprocessing",
           "save_training_checkpoint"]

CHECKPOINTS, LATEST = "checkpoints", "latest"


def run_preprocessing(encoder: EncoderConfig, max_tokens: int, trim_silence: bool) -> dict[str, Any]:
    """What a run's checkpoints tell the server about feeding the model: the encoder's defaults, the
    text token limit the run used, and silence trimming when the run trimmed its audio."""
    pre = default_preprocessing(encoder)
    if trim_silence:
        pre["trim_silence"] = dict(TRIM_SILENCE)
    if encoder.modality == "text":
        pre["max_tokens"] = min(max_tokens, encoder.text.max_positions)
    return pre


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_training_checkpoint(
    run_dir: str | Path,
    step: int,
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint `step-<step>` atomically, point `latest` at it, keep the newest `keep`."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    final = root / name
    tmp = root / f".{name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(_state(student), str(tmp / "student.safetensors"))
        save_file(_state(teacher), str(tmp / "teacher.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(_rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2) + "\n")
        if final.exists():  # the same step written again (e.g. a resumed run's last step)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_text_atomic(root / LATEST, name + "\n")
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[: max(len(done) - keep, 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete training checkpoint of a run, or None."""
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / "state.json").is_file():
            return candidate
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file())
    return done[-1] if done else None


def load_training_checkpoint(
    path: str | Path,
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint written by `save_training_checkpoint` in place; returns its state.json."""
    path = Path(path)
    device = next(student.parameters()).device
    student.load_state_dict(load_file(str(path / "student.safetensors"), device=str(device)))
    teacher.load_state_dict(load_file(str(path / "teacher.safetensors"), device=str(device)))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    if restore_rng:
        rng = torch.load(path / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((path / "state.json").read_text())


def export_student(checkpoint: str | Path, out: str | Path, name: str | None = None) -> Path:
    """An inference checkpoint (DESIGN.md) of the student encoder held in a training checkpoint
    `<run>/checkpoints/step-N` (the run's config.json and tokenizer files are read beside it)."""
    checkpoint = Path(checkpoint)
    run = checkpoint.parent.parent
    config = json.loads((run / "config.json").read_text())
    model_cfg = config_from_dict(config["model"])
    encoder = build_encoder(model_cfg.encoder)
    state = load_file(str(checkpoint / "student.safetensors"))
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")})
    step = json.loads((checkpoint / "state.json").read_text())
    provenance = {"kind": "pretrain", "run": str(run), "step": step["step"], "samples": step.get("samples"),
                  "elapsed_s": step.get("elapsed"), "data": config["pretrain"].get("data")}
    modality = model_cfg.encoder.modality
    pre = run_preprocessing(model_cfg.encoder, config["pretrain"]["max_tokens"],
                            bool(config["pretrain"].get("trim_silence")))
    ckpt = CheckpointConfig(name or f"{run.name}-step{step['step']}", model_cfg.encoder, preprocessing=pre,
                            provenance=provenance)
    tokenizer = find_in_directory(run) if modality == "text" else None
    return save_checkpoint(out, encoder, ckpt, tokenizer=tokenizer)
