"""`d2v pretrain`: data2vec 2.0 self-supervised pretraining of one modality (Baevski et al. 2022).

Read top to bottom: setup (run directory, data, student, EMA teacher, AdamW), the loop (per update:
learning rate, `grad_accum` micro-batches of teacher targets + student on M masked copies, clip,
step, EMA update, collapse guard, metrics, training checkpoint), then the inference checkpoint of the
student encoder (`<run>/final`).

Exact resume: every random draw of a micro-batch (data order, augmentation, masks, dropout, decoder
noise, layerdrop) is seeded from (seed, step, micro-batch, rank); the masks are drawn with the batch in
the data loader's workers (`PretrainSteps`). A training checkpoint holds
student, teacher, optimizer and RNG states, so a killed run resumed from its last checkpoint repeats
the uninterrupted run's updates exactly. A damaged newest checkpoint (truncated weights, a garbled
optimizer or RNG file, a bad state.json) is reported and the run resumes from the newest intact one,
which repeats the uninterrupted run just as well. Under torchrun every process draws its own masks and
dropout; DDP averages the gradients, so the students stay identical and every process applies the
same EMA update to its teacher.
"""

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from d2v.atomic import atomic_write
from d2v.configuration import config_from_args
from d2v.model import ModelConfig, build_data2vec, build_teacher, config_from_dict, data2vec_loss, preset
from d2v.model.checkpoint import CheckpointConfig, save_checkpoint
from d2v.model.data2vec import Data2Vec, Data2VecOutput
from d2v.model.ema import EMATeacher
from d2v.tokenizer import find_in_directory, find_tokenizer
from d2v.tokenizer.spec import PAD_ID, TOKENIZER_MODEL
from d2v.training.checkpointing import (
    checkpoint_preprocessing,
    clean_run_temporaries,
    resume_training_checkpoint,
    save_training_checkpoint,
    training_checkpoints,
)
from d2v.training.collate import BatchMasks, PretrainSteps, make_collate
from d2v.training.config import PretrainConfig, resolve_pretrain
from d2v.training.data import (
    PackedTextDataset,
    PretrainBatches,
    Record,
    Tokenizer,
    build_dataset,
    derive_seed,
    read_records,
    read_split,
    record_text,
    train_tokenizer,
)
from d2v.training.distributed import (
    Distributed,
    all_gather_objects,
    autocast,
    barrier,
    cleanup,
    mean_over_processes,
    setup_distributed,
    wrap_ddp,
)
from d2v.training.metrics import MetricsLog
from d2v.training.optim import cosine_lr, param_groups, set_lr

__all__ = ["PretrainLoss", "TrainingCollapsed", "check_collapse", "pretrain", "run_pretrain"]

logger = logging.getLogger("d2v.training")
# settings that may change when a run is resumed; anything else must match the checkpointed run
RESUMABLE_CHANGES = {"resume", "progress", "num_workers", "log_every", "checkpoint_every", "keep_checkpoints",
                     "device", "out"}


class TrainingCollapsed(RuntimeError):
    """The collapse guard fired: targets or predictions lost their variance."""


class PretrainLoss(nn.Module):
    """The student and its loss as one module, so that DDP wraps a forward. The EMA teacher is a
    plain attribute: it is not trained and not synchronised (every process updates it identically)."""

    def __init__(self, student: Data2Vec, teacher: EMATeacher):
        super().__init__()
        self.student = student
        self.teacher = teacher

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None, generator: torch.Generator | None = None,
                mask: torch.Tensor | None = None) -> Data2VecOutput:
        """`mask` (B*M, T_tokens): the batch's masks (drawn by the data loader); None draws them with `generator`."""
        return data2vec_loss(self.student, self.teacher, x, padding_mask, mask, generator)


def check_collapse(logs: dict[str, float], step: int, min_target_std: float, min_pred_std: float,
                   after: int) -> None:
    """The reference's guard: after `after` updates, stop when the target or
    prediction std (mean over channels of the std over masked tokens) falls below its floor; a floor
    of 0 turns that check off."""
    if step < after:
        return
    for key, floor in (("target_std", min_target_std), ("pred_std", min_pred_std)):
        value = logs.get(key, math.nan)
        if floor > 0 and math.isfinite(value) and value < floor:
            raise TrainingCollapsed(f"step {step}: {key} = {value:.4g} fell below {floor} (representation "
                                    f"collapse); lower the learning rate or raise the EMA decay")


def _digest(module: nn.Module) -> str:
    """sha256 of every tensor of the module's state, in key order."""
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _model_config(cfg: PretrainConfig) -> ModelConfig:
    """The preset (or a JSON file), with this run's M and EMA overrides."""
    if cfg.model_config:
        data = _read_json(Path(cfg.model_config))
        try:
            model_cfg = config_from_dict(data.get("model", data) if isinstance(data, dict) else data)
        except ValueError as e:
            raise ValueError(f"{cfg.model_config}: {e}") from None
        if not isinstance(model_cfg, ModelConfig):
            raise ValueError(f"{cfg.model_config} holds an encoder config; pretraining needs a full ModelConfig")
        if model_cfg.encoder.modality != cfg.modality:
            raise ValueError(f"{cfg.model_config} is a {model_cfg.encoder.modality} model, not {cfg.modality}")
    else:
        model_cfg = preset(cfg.modality, cfg.preset)
    if cfg.clone_batch is not None:
        model_cfg.mask.clone_batch = cfg.clone_batch
    for field, value in (("decay", cfg.ema_decay), ("end_decay", cfg.ema_end_decay),
                         ("anneal_end_step", cfg.ema_anneal_end_step)):
        if value is not None:
            setattr(model_cfg.ema, field, value)
    return model_cfg


def _read_json(file: Path) -> object:
    """A JSON file's contents; errors name the file."""
    try:
        return json.loads(file.read_bytes())
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None


def _records(cfg: PretrainConfig) -> list[Record]:
    """All examples of the chosen splits, or of `data` itself when it is not a split directory."""
    root = Path(cfg.data)
    has_splits = root.is_dir() and any((root / f"{s}.jsonl").exists() or (root / s).is_dir() for s in cfg.splits)
    if not has_splits:
        return read_records(root, cfg.modality)
    return [r for s in cfg.splits for r in read_split(root, s, cfg.modality)]


def _check_run_dir(run: Path, resume_from: Path | None, resume: bool) -> None:
    """Refuse to start a new run over an existing one."""
    if resume_from is None and not resume and training_checkpoints(run):
        raise FileExistsError(f"{run} already holds a run; pass --resume to continue it or choose another --out")


def _write_run_config(run: Path, config: dict, resume_from: Path | None) -> None:
    """Write <run>/config.json, or check that a resumed run's settings match the checkpointed ones."""
    config = json.loads(json.dumps(config))  # tuples -> lists, as stored
    saved = run / "config.json"
    if resume_from is not None:
        old = _read_json(saved)
        if not (isinstance(old, dict) and isinstance(old.get("pretrain"), dict) and "model" in old):
            raise ValueError(f"{saved}: not a pretraining run's config (no 'pretrain' and 'model' sections)")
        changed = sorted(k for k in set(old["pretrain"]) | set(config["pretrain"]) if k not in RESUMABLE_CHANGES
                         and old["pretrain"].get(k) != config["pretrain"].get(k))
        if changed or old["model"] != config["model"]:
            what = ", ".join(changed) or "the model config"
            raise ValueError(f"cannot resume {run}: {what} differ(s) from the checkpointed run")
        return
    run.mkdir(parents=True, exist_ok=True)
    atomic_write(saved, json.dumps(config, indent=2) + "\n")


def _tokenizer(cfg: PretrainConfig, records: list[Record], run: Path, info: Distributed) -> Tokenizer:
    """The run's tokenizer, kept in the run directory: the one given (any kind `d2v.tokenizer` reads),
    the one a resumed run kept, or a sentencepiece model trained on the corpus."""
    given = find_tokenizer([cfg.tokenizer]) if cfg.tokenizer else None
    if given is not None:
        Tokenizer(given)  # read and checked where it is, before the run keeps a copy
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        if given is not None:
            given.copy_to(run)
        elif not (cfg.resume and find_in_directory(run) is not None):
            logger.info("no tokenizer given: training a %d-piece sentencepiece model on %d texts",
                        cfg.vocab_size, len(records))
            texts = (t for t in map(record_text, records) if t)
            train_tokenizer(texts, run / TOKENIZER_MODEL, cfg.vocab_size)
    barrier(info)
    return Tokenizer(given.placed_in(run) if given is not None else find_in_directory(run))


def pretrain(cfg: PretrainConfig, command: str | None = None) -> Path:
    """Run (or, with cfg.resume, continue) pretraining. Returns the inference checkpoint directory."""
    if cfg.pack and cfg.modality != "text":
        raise ValueError("--pack applies to text")
    info, device = setup_distributed(cfg.device)
    cfg = resolve_pretrain(cfg)
    run = Path(cfg.out)
    if info.is_main:
        for p in clean_run_temporaries(run):
            logger.info("removed %s, left by a killed run", p)
    model_cfg = _model_config(cfg)
    resume_from = next(iter(training_checkpoints(run)), None) if cfg.resume else None  # validated below
    _check_run_dir(run, resume_from, cfg.resume)

    # ---- data
    records = _records(cfg)
    if not records:
        raise ValueError(f"{cfg.data}: no {cfg.modality} examples found")
    tokenizer = None
    if cfg.modality == "text":
        tokenizer = _tokenizer(cfg, records, run, info)
        model_cfg.encoder.text.vocab_size = tokenizer.vocab_size
    if cfg.pack:
        dataset = PackedTextDataset(records, tokenizer, min(cfg.max_tokens, model_cfg.encoder.text.max_positions))
    else:
        dataset = build_dataset(model_cfg.encoder, records, None, train=True, crop_scale_min=cfg.crop_scale_min,
                                hflip=cfg.hflip, max_seconds=cfg.max_seconds, trim_silence=cfg.trim_silence,
                                tokenizer=tokenizer,
                                max_tokens=cfg.max_tokens)
    if info.is_main:
        _write_run_config(run, {"pretrain": dataclasses.asdict(cfg), "model": model_cfg.to_dict()}, resume_from)
    barrier(info)

    # ---- student, EMA teacher, optimizer (identical on every process: same seed)
    torch.manual_seed(cfg.seed)
    student = build_data2vec(model_cfg).to(device)
    teacher = build_teacher(student, model_cfg).to(device)
    optimizer = torch.optim.AdamW(param_groups(student, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    state = {"step": 0, "samples": 0, "elapsed": 0.0}
    if cfg.resume:
        found = resume_training_checkpoint(run, student, teacher.model, optimizer)
        if found is not None:
            resume_from, state = found
            logger.info("resuming %s from %s (step %d)", run, resume_from.name, state["step"])
    model = wrap_ddp(PretrainLoss(student, teacher), info, device,
                     find_unused_parameters=model_cfg.encoder.layerdrop > 0)
    start = state["step"]

    sampler = PretrainBatches(len(dataset), cfg.batch_size, cfg.steps, cfg.seed, start, cfg.grad_accum,
                              info.world_size, info.rank)
    pad_id = PAD_ID if tokenizer is None else tokenizer.pad_id
    # the loader's workers read, collate and draw each micro-batch's masks; the step starts from them
    steps = PretrainSteps(dataset, sampler, make_collate(cfg.modality, pad_id), BatchMasks(model_cfg))
    loader = DataLoader(steps, batch_size=None, collate_fn=PretrainSteps.as_made, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda")
    metrics = MetricsLog(run, cfg.steps, start, info.is_main, cfg.progress, desc=f"pretrain {cfg.modality}")
    metrics.truncate_after(start)
    clip = cfg.clip_norm if cfg.clip_norm and cfg.clip_norm > 0 else math.inf

    # ---- the loop: one optimizer update per step
    batches, last_good = iter(loader), None
    elapsed, samples = state.get("elapsed", 0.0), state.get("samples", 0)
    logs: dict[str, float] = {}
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        lr = cosine_lr(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.min_lr)
        set_lr(optimizer, lr)
        sums: dict[str, float] = {}
        n_samples = 0
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            if batch is None:  # every example of this micro-batch was unreadable (each was reported)
                if last_good is None:
                    raise RuntimeError("the first batch holds no readable example")
                batch = last_good.with_mask(None)  # its examples again, with this step's masks (below)
            last_good = batch
            batch = batch.to(device)
            torch.manual_seed(derive_seed(cfg.seed, "step", step, micro, info.rank))  # dropout, noise, layerdrop
            masks = None if batch.mask is not None else torch.Generator().manual_seed(
                derive_seed(cfg.seed, "mask", step, micro, info.rank))  # the loader's seed (PretrainSteps)
            syncing = micro == cfg.grad_accum - 1 or not info.enabled
            with contextlib.nullcontext() if syncing else model.no_sync(), autocast(device, cfg.precision):
                out = model(batch.x, batch.padding_mask, masks, batch.mask)
            (out.loss / cfg.grad_accum).backward()
            sums["loss"] = sums.get("loss", 0.0) + float(out.loss.detach()) / cfg.grad_accum
            for k, v in out.logs.items():
                sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum
            n_samples += len(batch)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(student.parameters(), clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        decay = teacher.update(student.encoder, step + 1)

        logs = mean_over_processes(sums, info, device)
        samples += n_samples * info.world_size
        seconds = time.perf_counter() - t0
        elapsed += seconds
        check_collapse(logs, step + 1, cfg.min_target_std, cfg.min_pred_std, cfg.collapse_check_after)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            metrics.log({"step": done, **logs, "lr": lr, "ema_decay": decay, "grad_norm": grad_norm,
                         "samples": samples, "samples_per_s": n_samples * info.world_size / seconds,
                         "s_per_step": seconds, "elapsed_s": elapsed})
        metrics.advance({"loss": f"{logs['loss']:.4f}", "lr": f"{lr:.2e}", "ema": f"{decay:.5f}",
                         "samples/s": f"{n_samples * info.world_size / seconds:.1f}"})
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            if info.is_main:
                save_training_checkpoint(run, done, student, teacher.model, optimizer,
                                         {"samples": samples, "elapsed": elapsed, "loss": logs["loss"]},
                                         cfg.keep_checkpoints)
            barrier(info)
    metrics.close()
    if info.enabled:  # DDP must leave every process with the same student and teacher: check it
        mine = {"rank": info.rank, "student_sha256": _digest(student), "teacher_sha256": _digest(teacher.model),
                "last_local_loss": sums.get("loss")}
        everyone = all_gather_objects(mine, info)
        if info.is_main:
            atomic_write(run / "processes.json", json.dumps(everyone, indent=2) + "\n")
            if len({(p["student_sha256"], p["teacher_sha256"]) for p in everyone}) > 1:
                logger.warning("the processes' weights differ at the end of the run (see %s)", run / "processes.json")

    # ---- the inference checkpoint: the student encoder, no decoder, no teacher
    final = run / "final"
    if info.is_main:
        provenance = {
            "command": command or f"d2v pretrain (config: {run / 'config.json'})",
            "kind": "pretrain",
            "data": cfg.data,
            "step": cfg.steps,
            "samples": samples,
            "world_size": info.world_size,
            "elapsed_s": round(elapsed, 1),
            "metrics": {k: logs[k] for k in ("loss", "target_std", "pred_std") if k in logs},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        name = cfg.name or f"{cfg.modality}-{cfg.preset}-pretrained"
        pre = checkpoint_preprocessing(model_cfg.encoder, cfg.max_tokens, cfg.trim_silence)
        ckpt_cfg = CheckpointConfig(name, model_cfg.encoder, preprocessing=pre, provenance=provenance)
        save_checkpoint(final, student.encoder, ckpt_cfg, tokenizer=None if tokenizer is None else tokenizer.files)
        metrics.write(f"wrote {final}")
    barrier(info)
    cleanup(info)
    return final


def run_pretrain(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(PretrainConfig, args)
        pretrain(cfg, command=args.command_line)
    except (ValueError, TypeError, OSError, TrainingCollapsed) as e:  # CheckpointError is a ValueError
        print(f"d2v pretrain: {e}", file=sys.stderr)
        return 2
    return 0
