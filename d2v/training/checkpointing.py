"""Training checkpoints (for `--resume`), written atomically in the run directory:

    <run>/checkpoints/step-00000200/
        student.safetensors   the student: encoder and decoder (CTC fine-tuning: the encoder and its head)
        teacher.safetensors   the EMA teacher (pretraining only)
        optimizer.pt          AdamW state (tensors, numbers and strings only: read with weights_only)
        rng.pt                torch CPU (and CUDA) RNG states
        state.json            step (updates done), samples consumed, elapsed seconds, ...
    <run>/checkpoints/latest  the name of the newest complete checkpoint

Each checkpoint is built aside and swapped into place, then `latest` is replaced, with
`d2v.atomic`, so a run killed at any moment leaves its last complete checkpoint intact; temporaries
of killed runs (today's and older versions' names) are removed when a run starts. The data position
needs no more than the step: batches are a function of (seed, step) (`sampler.py`).

Resuming validates a checkpoint completely before it changes anything (`read_training_checkpoint`):
every file is read, the weights are checked against the models (keys, shapes, dtypes, finite
values), the optimizer state against the optimizer's parameters, the RNG state and state.json
against what they must hold. `resume_training_checkpoint` takes the newest checkpoint that passes
and warns about each newer one that does not, naming the file and the problem.
"""

import json
import logging
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from d2v.atomic import atomic_directory, atomic_write
from d2v.legacy_temporaries import clean_temporaries
from d2v.model.builder import build_encoder
from d2v.model.checkpoint import (
    CheckpointConfig,
    CheckpointError,
    check_finite,
    check_state_dict,
    default_preprocessing,
    read_weights_header,
    save_checkpoint,
)
from d2v.model.config import EncoderConfig, ModelConfig, config_from_dict
from d2v.preprocessing import TRIM_SILENCE
from d2v.tokenizer import find_in_directory
from d2v.tokenizer.spec import TOKENIZER_MODEL

__all__ = ["TrainingCheckpoint", "TrainingCheckpointError", "apply_training_checkpoint", "checkpoint_preprocessing",
           "clean_run_temporaries", "export_student", "latest_checkpoint", "load_training_checkpoint",
           "read_training_checkpoint", "resume_training_checkpoint", "save_training_checkpoint",
           "training_checkpoints"]

logger = logging.getLogger("d2v.training")
CHECKPOINTS, LATEST = "checkpoints", "latest"
STUDENT, TEACHER, OPTIMIZER, RNG, STATE = "student.safetensors", "teacher.safetensors", "optimizer.pt", "rng.pt", "state.json"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
RUN_FILES = ["final", "config.json", "metrics.jsonl", TOKENIZER_MODEL, "processes.json", "results.json", "best"]
"""What a run directory holds besides its checkpoints (the targets of `clean_run_temporaries`)."""


class TrainingCheckpointError(ValueError):
    """A training checkpoint is damaged or does not fit the run; the message names the file."""


def checkpoint_preprocessing(encoder: EncoderConfig, max_tokens: int, trim_silence: bool) -> dict[str, Any]:
    """The `preprocessing` section of a run's checkpoints (a dict; nothing is run): what they tell the
    server about feeding the model: the encoder's defaults, the text token limit the run used, and
    silence trimming when the run trimmed its audio."""
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


def clean_run_temporaries(run_dir: str | Path) -> list[Path]:
    """Remove what killed runs left in a run directory and its checkpoints: temporaries of dead
    processes, and the names older d2v versions used (`.step-*.<pid>.tmp`, `.best.*`, ...)."""
    run = Path(run_dir)
    return clean_temporaries(run, RUN_FILES) + clean_temporaries(run / CHECKPOINTS, ["step-*", LATEST])


def save_training_checkpoint(
    run_dir: str | Path,
    step: int,
    student: nn.Module,
    teacher: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint `step-<step>` atomically, point `latest` at it, keep the newest `keep`. A run
    without a teacher (fine-tuning) passes None and its checkpoints hold none."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    with atomic_directory(root / name) as tmp:  # replaces the same step written again (a resumed run)
        save_file(_state(student), str(tmp / STUDENT))
        if teacher is not None:
            save_file(_state(teacher), str(tmp / TEACHER))
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
        torch.save(_rng_state(), tmp / RNG)
        (tmp / STATE).write_text(json.dumps({**state, "step": step}, indent=2) + "\n")
    atomic_write(root / LATEST, name + "\n")
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[: max(len(done) - keep, 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return root / name


def training_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoint directories, newest (highest step) first, whole or not."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m[1]), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest training checkpoint of a run that has its state.json, or None (nothing else is
    checked: `resume_training_checkpoint` validates)."""
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / LATEST
    if pointer.is_file():
        try:
            candidate = root / pointer.read_text().strip()
        except (OSError, UnicodeDecodeError):
            candidate = None
        if candidate is not None and _STEP_DIR.match(candidate.name) and (candidate / STATE).is_file():
            return candidate
    done = [p for p in training_checkpoints(run_dir) if (p / STATE).is_file()]
    return done[0] if done else None


@dataclass
class TrainingCheckpoint:
    """A training checkpoint read into memory and validated; nothing is applied yet."""

    path: Path
    state: dict[str, Any]
    student: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any] | None
    rng: dict[str, Any] | None


def _fail(file: Path, problem: str) -> TrainingCheckpointError:
    return TrainingCheckpointError(f"{file}: {problem}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _read_state(path: Path) -> dict[str, Any]:
    file = path / STATE
    try:
        state = json.loads(file.read_bytes())
    except FileNotFoundError:
        raise _fail(file, "missing") from None
    except (OSError, ValueError, RecursionError) as e:
        raise _fail(file, f"not valid JSON ({_first_line(e)})") from None
    if not isinstance(state, dict):
        raise _fail(file, "not a JSON object")
    step = state.get("step")
    m = _STEP_DIR.match(path.name)
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise _fail(file, f"step must be a positive integer, got {step!r:.40}")
    if m and int(m[1]) != step:
        raise _fail(file, f"step {step} does not match the directory {path.name}")
    samples, elapsed = state.get("samples", 0), state.get("elapsed", 0.0)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
        raise _fail(file, f"samples must be a non-negative integer, got {samples!r:.40}")
    if not isinstance(elapsed, (int, float)) or isinstance(elapsed, bool) or not math.isfinite(elapsed) or elapsed < 0:
        raise _fail(file, f"elapsed must be a non-negative number, got {elapsed!r:.40}")
    return state


def _read_weights(file: Path, module: nn.Module) -> dict[str, torch.Tensor]:
    """A safetensors file that must hold exactly `module`'s state (keys, shapes, dtypes), finite."""
    if not file.is_file():
        raise _fail(file, "missing")
    expected = module.state_dict()
    try:
        header = read_weights_header(file)
        check_state_dict(expected, header, str(file))
        for k, info in header.items():
            want = str(expected[k].dtype).removeprefix("torch.")
            if info.dtype != want:
                raise CheckpointError(f"{file}: {k} is stored as {info.dtype}, but the model holds it as {want}")
        try:
            state = load_file(str(file))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{file} is not a readable safetensors file: {e}") from None
        check_finite(state, str(file))
    except CheckpointError as e:
        raise TrainingCheckpointError(str(e)) from None
    return state


def _torch_load(file: Path) -> Any:
    if not file.is_file():
        raise _fail(file, "missing")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise _fail(file, f"cannot be read ({_first_line(e)})") from None


def _check_optimizer(file: Path, saved: Any, optimizer: torch.optim.Optimizer) -> None:
    """The saved state must be the state of `optimizer`'s parameters: same groups, same counts, and
    every per-parameter tensor (moments) shaped like its parameter."""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) or not isinstance(
            saved.get("param_groups"), list):
        raise _fail(file, "not an optimizer state (no 'state' and 'param_groups')")
    groups = optimizer.param_groups
    if len(saved["param_groups"]) != len(groups):
        raise _fail(file, f"{len(saved['param_groups'])} parameter groups, the optimizer has {len(groups)}")
    params: dict[Any, torch.Tensor] = {}
    for i, (s, g) in enumerate(zip(saved["param_groups"], groups, strict=True)):
        ids = s.get("params") if isinstance(s, dict) else None
        if not isinstance(ids, list) or len(ids) != len(g["params"]):
            found = len(ids) if isinstance(ids, list) else "no"
            raise _fail(file, f"parameter group {i} holds {found} parameters, the optimizer's {len(g['params'])}")
        params.update(zip(ids, g["params"], strict=True))
    for pid, entry in saved["state"].items():
        if pid not in params or not isinstance(entry, dict):
            raise _fail(file, f"state for an unknown parameter {pid!r}")
        for key, value in entry.items():
            if not isinstance(value, torch.Tensor):
                continue
            if value.dim() > 0 and tuple(value.shape) != tuple(params[pid].shape):
                raise _fail(file, f"{key} of parameter {pid} has shape {tuple(value.shape)}, the parameter "
                                  f"{tuple(params[pid].shape)}")
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise _fail(file, f"{key} of parameter {pid} holds non-finite values")


def _check_rng(file: Path, rng: Any) -> None:
    if not isinstance(rng, dict) or not isinstance(rng.get("torch"), torch.Tensor):
        raise _fail(file, "not an RNG state (no 'torch' tensor)")
    current = torch.get_rng_state()
    t = rng["torch"]
    if t.dtype != current.dtype or t.shape != current.shape:
        raise _fail(file, f"the torch RNG state is {t.dtype} {tuple(t.shape)}, expected {current.dtype} "
                          f"{tuple(current.shape)}")
    cuda = rng.get("cuda")
    if cuda is not None and not (isinstance(cuda, list) and all(isinstance(c, torch.Tensor) for c in cuda)):
        raise _fail(file, "the CUDA RNG states are not a list of tensors")


def read_training_checkpoint(
    path: str | Path,
    student: nn.Module,
    teacher: nn.Module | None,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
) -> TrainingCheckpoint:
    """Read and validate every file of a checkpoint against the run's models; changes nothing.

    Raises:
        TrainingCheckpointError: `<file>: <what is wrong>` for the first damaged file."""
    path = Path(path)
    if not path.is_dir():
        raise _fail(path, "not a directory")
    state = _read_state(path)
    student_state = _read_weights(path / STUDENT, student)
    teacher_state = None if teacher is None else _read_weights(path / TEACHER, teacher)
    opt = None
    if optimizer is not None:
        opt = _torch_load(path / OPTIMIZER)
        _check_optimizer(path / OPTIMIZER, opt, optimizer)
    rng = None
    if restore_rng:
        rng = _torch_load(path / RNG)
        _check_rng(path / RNG, rng)
    return TrainingCheckpoint(path, state, student_state, teacher_state, opt, rng)


def apply_training_checkpoint(
    ckpt: TrainingCheckpoint,
    student: nn.Module,
    teacher: nn.Module | None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load a validated checkpoint into the models, the optimizer and the RNG; returns its state.json."""
    student.load_state_dict(ckpt.student)
    if teacher is not None and ckpt.teacher is not None:
        teacher.load_state_dict(ckpt.teacher)
    if optimizer is not None and ckpt.optimizer is not None:
        optimizer.load_state_dict(ckpt.optimizer)  # moves the moments to their parameters' device
    if ckpt.rng is not None:
        torch.set_rng_state(ckpt.rng["torch"])
        if "cuda" in ckpt.rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt.rng["cuda"])
    return ckpt.state


def load_training_checkpoint(
    path: str | Path,
    student: nn.Module,
    teacher: nn.Module | None,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Validate a checkpoint written by `save_training_checkpoint`, then load it in place; returns
    its state.json.

    Raises:
        TrainingCheckpointError: a file is damaged or does not fit (nothing was changed)."""
    ckpt = read_training_checkpoint(path, student, teacher, optimizer, restore_rng)
    return apply_training_checkpoint(ckpt, student, teacher, optimizer)


def resume_training_checkpoint(
    run_dir: str | Path,
    student: nn.Module,
    teacher: nn.Module | None,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
) -> tuple[Path, dict[str, Any]] | None:
    """Load the newest intact checkpoint of a run, warning about each newer damaged one.

    Returns:
        (its directory, its state.json), or None when the run has no checkpoint at all.

    Raises:
        TrainingCheckpointError: the run has checkpoints and none is intact (each problem named)."""
    problems = []
    candidates = training_checkpoints(run_dir)
    for path in candidates:
        try:
            ckpt = read_training_checkpoint(path, student, teacher, optimizer, restore_rng)
        except TrainingCheckpointError as e:
            problems.append(str(e))
            logger.warning("cannot resume from %s: %s", path.name, e)
            continue
        if problems:
            logger.warning("resuming from %s, the newest intact checkpoint (%d newer one(s) damaged)",
                           path.name, len(problems))
        return path, apply_training_checkpoint(ckpt, student, teacher, optimizer)
    if problems:
        raise TrainingCheckpointError(f"cannot resume {run_dir}: no intact checkpoint; " + "; ".join(problems))
    return None


def _run_config(run: Path) -> dict[str, Any]:
    file = run / "config.json"
    try:
        config = json.loads(file.read_bytes())
        model = config["model"]
        pretrain = config["pretrain"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TrainingCheckpointError(f"{file}: not a pretraining run's config ({_first_line(e)})") from None
    if not isinstance(pretrain, dict):
        raise TrainingCheckpointError(f"{file}: pretrain must be an object")
    try:
        model_cfg = config_from_dict(model, "model")
    except ValueError as e:
        raise TrainingCheckpointError(f"{file}: {e}") from None
    if not isinstance(model_cfg, ModelConfig):
        raise TrainingCheckpointError(f"{file}: model must be a pretraining model config (with an encoder)")
    return {"model": model_cfg, "pretrain": pretrain}


def export_student(checkpoint: str | Path, out: str | Path, name: str | None = None) -> Path:
    """An inference checkpoint of the student encoder held in a training checkpoint
    `<run>/checkpoints/step-N` (the run's config.json and tokenizer files are read beside it)."""
    checkpoint = Path(checkpoint)
    run = checkpoint.parent.parent
    config = _run_config(run)
    model_cfg: ModelConfig = config["model"]
    encoder = build_encoder(model_cfg.encoder)
    file = checkpoint / STUDENT
    state = _read_weights_subset(file, encoder, "encoder.")
    encoder.load_state_dict(state)
    step = _read_state(checkpoint)
    provenance = {"kind": "pretrain", "run": str(run), "step": step["step"], "samples": step.get("samples"),
                  "elapsed_s": step.get("elapsed"), "data": config["pretrain"].get("data")}
    modality = model_cfg.encoder.modality
    max_tokens = config["pretrain"].get("max_tokens")
    max_tokens = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 1 << 30  # else: the model's limit
    pre = checkpoint_preprocessing(model_cfg.encoder, max_tokens, bool(config["pretrain"].get("trim_silence")))
    ckpt = CheckpointConfig(name or f"{run.name}-step{step['step']}", model_cfg.encoder, preprocessing=pre,
                            provenance=provenance)
    tokenizer = find_in_directory(run) if modality == "text" else None
    return save_checkpoint(out, encoder, ckpt, tokenizer=tokenizer)


def _read_weights_subset(file: Path, module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix` of a safetensors file, which must fit `module` exactly."""
    if not file.is_file():
        raise _fail(file, "missing")
    try:
        read_weights_header(file)
        try:
            full = load_file(str(file))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{file} is not a readable safetensors file: {e}") from None
        state = {k.removeprefix(prefix): v for k, v in full.items() if k.startswith(prefix)}
        check_state_dict(module.state_dict(), state, str(file))
        check_finite(state, str(file))
    except CheckpointError as e:
        raise TrainingCheckpointError(str(e)) from None
    return state
