"""`d2v finetune`: classification fine-tuning from a pretrained checkpoint, or from scratch (the
baseline that shows what pretraining is worth). `--task ctc` (speech recognition) is
`finetune_ctc.py`.

Read top to bottom: setup (model config and pretrained weights, labelled splits, the modality's
classification head, AdamW with layer-wise lr decay), the loop (per epoch: label-smoothed
cross-entropy updates, then validation accuracy; the best epoch is kept as an inference checkpoint
`<run>/best` whose config names the labels), then the test split with the best checkpoint: accuracy
and a confusion summary, written into `<run>/results.json` and the checkpoint's provenance.

Heads (as the reference): images and audio mean-pool the tokens (LayerNorm, Linear); text uses the
first token (<s>) through dense, tanh, Linear.

Every file is written with `d2v.atomic` (`best/` is swapped in whole, so a kill while it is replaced
leaves the previous best), and temporaries of killed runs are removed when a run starts. The
pretrained checkpoint is validated by `load_checkpoint` (config, weights header, finite weights)
before anything is trained.
"""

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from d2v.atomic import atomic_write
from d2v.configuration import config_from_args
from d2v.model import EncoderConfig, HeadConfig, build_encoder, config_from_dict, preset
from d2v.model.checkpoint import (
    FLOAT_DTYPES,
    CheckpointConfig,
    check_checkpoint,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from d2v.model.encoder import Data2VecEncoder
from d2v.tokenizer import TokenizerSpec, find_tokenizer, model_special_ids
from d2v.tokenizer.spec import BOS_ID, EOS_ID, PAD_ID, TOKENIZER_MODEL
from d2v.training.checkpointing import checkpoint_preprocessing, clean_run_temporaries
from d2v.training.collate import make_collate
from d2v.training.config import FinetuneConfig, resolve_finetune
from d2v.training.data import (
    EpochBatches,
    Record,
    Tokenizer,
    build_dataset,
    dataset_labels,
    derive_seed,
    read_split,
    record_text,
    report_skip,
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

__all__ = ["evaluate", "finetune", "labelled_subset", "run_finetune"]

logger = logging.getLogger("d2v.training")
HEADS = {"image": ("mean_pool", "mean"), "audio": ("mean_pool", "mean"), "text": ("first_token", "cls")}
POOLING = {"mean_pool": "mean", "first_token": "cls"}


def _encoder_config(cfg: FinetuneConfig) -> tuple[EncoderConfig, CheckpointConfig | None]:
    """The encoder to fine-tune and, when starting from a checkpoint, that checkpoint's config."""
    if cfg.init:
        pre = check_checkpoint(cfg.init)  # the config and the weights' header, before any model is built
        return pre.encoder, pre
    if cfg.model_config:
        file = Path(cfg.model_config)
        try:
            data = json.loads(file.read_bytes())
            parsed = config_from_dict(data.get("model", data) if isinstance(data, dict) else data)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"{file}: {e}") from None
        return getattr(parsed, "encoder", parsed), None
    if cfg.modality is None:
        raise ValueError("a from-scratch run (no --init) needs --modality")
    return preset(cfg.modality, cfg.preset).encoder, None


def labelled_subset(records: list[Record], labels: list[str], per_class: int | None, seed: int) -> list[Record]:
    """`per_class` seeded examples of each label (all of them when None), in the records' order."""
    if per_class is None:
        return records
    rng = np.random.default_rng(derive_seed(seed, "labelled-subset"))
    chosen = set()
    for label in labels:
        idx = [i for i, r in enumerate(records) if r.label == label]
        chosen.update(rng.permutation(idx)[:per_class].tolist())
    return [r for i, r in enumerate(records) if i in chosen]


def _labelled(records: list[Record], labels: list[str], split: str) -> list[Record]:
    known = set(labels)
    for r in records:
        if r.label not in known:
            report_skip(r.source if not r.is_text else f"{split}: {r.source[:40]!r}",
                        f"label {r.label!r} is not one of the {len(labels)} classes")
    return [r for r in records if r.label in known]


def _tokenizer(cfg: FinetuneConfig, encoder: EncoderConfig, init: CheckpointConfig | None, train: list[Record],
               run: Path, info: Distributed) -> Tokenizer:
    """--tokenizer (any kind `d2v.tokenizer` reads), else the checkpoint's, else a sentencepiece model
    trained on the training texts; checked against the model it feeds (a model built here: d2v's
    special ids; its vocabulary is then the tokenizer's), and kept in the run."""
    source = find_tokenizer([cfg.tokenizer]) if cfg.tokenizer else None
    if source is None and init is not None:
        spec = TokenizerSpec.from_field(init.preprocessing.get("tokenizer"), str(Path(cfg.init) / "config.json"))
        source = spec.locate(cfg.init) if spec is not None else None
    bos, pad, eos = model_special_ids(init.preprocessing) if init is not None else (BOS_ID, encoder.text.pad_id, EOS_ID)
    if source is not None:  # read and checked where it is, before the run keeps a copy
        checked = Tokenizer(source, bos, pad, eos)
        if init is not None:
            checked.check_model(encoder.text.vocab_size, bos, pad, eos)
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        if source is not None:
            source.copy_to(run)
        else:
            logger.info("no tokenizer: training a %d-piece sentencepiece model on the training texts", cfg.vocab_size)
            train_tokenizer((t for t in map(record_text, train) if t), run / TOKENIZER_MODEL, cfg.vocab_size)
    barrier(info)
    files = source.placed_in(run) if source is not None else find_tokenizer([run / TOKENIZER_MODEL])
    return Tokenizer(files, bos, pad, eos)


def _load_pretrained(model: Data2VecEncoder, path: str) -> None:
    """Copy a pretrained checkpoint's encoder weights (not its head, if any) into `model`."""
    pre, _ = load_checkpoint(path)
    state = {k: v for k, v in pre.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


@torch.no_grad()
def evaluate(model: Data2VecEncoder, loader: DataLoader, num_classes: int, info: Distributed,
             device: torch.device, precision: str) -> dict[str, Any]:
    """Accuracy, mean loss and the confusion matrix (rows: true class, columns: predicted) over
    every process's share of a split."""
    model.eval()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    loss_sum, n = 0.0, 0
    for batch in loader:
        if batch is None:
            continue
        batch = batch.to(device)
        with autocast(device, precision):
            logits = model(batch.x, batch.padding_mask).float()
        loss_sum += float(F.cross_entropy(logits, batch.labels, reduction="sum"))
        n += len(batch)
        for t, p in zip(batch.labels.tolist(), logits.argmax(-1).tolist(), strict=True):
            confusion[t, p] += 1
    parts = all_gather_objects((confusion, loss_sum, n), info)
    confusion = sum(p[0] for p in parts)
    loss_sum, n = sum(p[1] for p in parts), sum(p[2] for p in parts)
    accuracy = float(np.trace(confusion) / max(n, 1))
    return {"accuracy": accuracy, "loss": loss_sum / max(n, 1), "count": n, "confusion": confusion.tolist()}


def confusion_summary(confusion: list[list[int]], labels: list[str], top: int = 5) -> str:
    """Per-class accuracy and the most frequent confusions, as text."""
    c = np.asarray(confusion)
    lines = ["per-class accuracy:"]
    for i, label in enumerate(labels):
        total = int(c[i].sum())
        lines.append(f"  {label:<24} {c[i, i] / max(total, 1):6.1%}  ({c[i, i]}/{total})")
    off = [(int(c[i, j]), labels[i], labels[j]) for i in range(len(labels)) for j in range(len(labels))
           if i != j and c[i, j] > 0]
    if off:
        lines.append("most frequent confusions (true -> predicted):")
        lines += [f"  {t} -> {p}: {k}" for k, t, p in sorted(off, reverse=True)[:top]]
    return "\n".join(lines)


def finetune(cfg: FinetuneConfig, command: str | None = None) -> Path:
    """Fine-tune and test; returns the best checkpoint's directory (`<out>/best`). `--task ctc` is
    speech recognition (`finetune_ctc.py`)."""
    if cfg.task == "ctc":
        from d2v.training.finetune_ctc import finetune_ctc  # it builds on this module

        return finetune_ctc(cfg, command)
    info, device = setup_distributed(cfg.device)
    run = Path(cfg.out)
    if info.is_main:
        for p in clean_run_temporaries(run):
            logger.info("removed %s, left by a killed run", p)
    encoder_cfg, init_cfg = _encoder_config(cfg)
    modality = encoder_cfg.modality
    if cfg.modality is not None and cfg.modality != modality:
        raise ValueError(f"--modality {cfg.modality} but {cfg.init} is a {modality} model")
    cfg = resolve_finetune(cfg, modality)
    if cfg.drop_path is not None:
        encoder_cfg.drop_path = cfg.drop_path

    # ---- data: labelled splits, an optional small labelled subset of train
    train = read_split(cfg.data, cfg.train_split, modality)
    labels = dataset_labels(cfg.data, train)
    if not labels:
        raise ValueError(f"{cfg.data}: the {cfg.train_split} split has no labels")
    train = labelled_subset(_labelled(train, labels, cfg.train_split), labels, cfg.labels_per_class, cfg.seed)
    val = _labelled(read_split(cfg.data, cfg.val_split, modality), labels, cfg.val_split)
    test = _labelled(read_split(cfg.data, cfg.test_split, modality), labels, cfg.test_split)
    tokenizer = None
    if modality == "text":
        tokenizer = _tokenizer(cfg, encoder_cfg, init_cfg, train, run, info)
        if cfg.init is None:
            encoder_cfg.text.vocab_size = tokenizer.vocab_size
    reader = {"crop_scale_min": cfg.crop_scale_min, "hflip": cfg.hflip, "max_seconds": cfg.max_seconds,
              "trim_silence": cfg.trim_silence, "tokenizer": tokenizer, "max_tokens": cfg.max_tokens}
    datasets = {"train": build_dataset(encoder_cfg, train, labels, True, **reader),
                "validation": build_dataset(encoder_cfg, val, labels, False, **reader),
                "test": build_dataset(encoder_cfg, test, labels, False, **reader)}
    collate = make_collate(modality, PAD_ID if tokenizer is None else tokenizer.pad_id)

    def loader(split: str, epoch: int = 0) -> DataLoader:
        training = split == "train"
        sampler = EpochBatches(len(datasets[split]), cfg.batch_size if training else cfg.eval_batch_size, cfg.seed,
                               epoch, training, info.world_size, info.rank)
        return DataLoader(datasets[split], batch_sampler=sampler, collate_fn=collate, num_workers=cfg.num_workers)

    # ---- model: encoder (+ pretrained weights) and the modality's head; optimizer
    head_type, pooling = HEADS[modality] if cfg.head == "reference" else (cfg.head, POOLING[cfg.head])
    head_cfg = HeadConfig(head_type, labels, pooling, dropout=cfg.head_dropout)
    torch.manual_seed(cfg.seed)
    model = build_encoder(encoder_cfg, head_cfg)
    if cfg.init:
        _load_pretrained(model, cfg.init)
    model.to(device)
    n_blocks = encoder_cfg.prenet_depth + encoder_cfg.depth
    groups = param_groups(model, cfg.weight_decay, cfg.layer_decay, encoder_cfg.prenet_depth, n_blocks)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    ddp = wrap_ddp(model, info, device, find_unused_parameters=encoder_cfg.layerdrop > 0)
    steps_per_epoch = max(len(loader("train")) // cfg.grad_accum, 1)
    total = cfg.epochs * steps_per_epoch
    warmup = max(int(cfg.warmup_fraction * total), 1)
    clip = cfg.clip_norm if cfg.clip_norm and cfg.clip_norm > 0 else math.inf
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write(run / "config.json", json.dumps({"finetune": dataclasses.asdict(cfg),
                                                      "encoder": encoder_cfg.to_dict(), "labels": labels,
                                                      "train_examples": len(train)}, indent=2) + "\n")
        (run / "metrics.jsonl").unlink(missing_ok=True)
    metrics = MetricsLog(run, total, 0, info.is_main, cfg.progress, desc=f"finetune {modality}")
    name = cfg.name or run.name
    provenance = {"command": command or f"d2v finetune (config: {run / 'config.json'})", "kind": "finetune",
                  "init": cfg.init, "from_scratch": cfg.init is None, "data": cfg.data,
                  "train_examples": len(train), "labels_per_class": cfg.labels_per_class, "epochs": cfg.epochs}
    if cfg.init:
        provenance["pretrained"] = read_config(cfg.init).provenance

    # ---- the loop: epochs of updates, validation after each, keep the best
    step, best, start, last_good = 0, None, time.perf_counter(), None
    for epoch in range(cfg.epochs):
        ddp.train()
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {"loss": 0.0, "accuracy": 0.0}
        for micro_index, batch in enumerate(loader("train", epoch)):
            micro = micro_index % cfg.grad_accum
            if batch is None:  # every example was unreadable (each was reported): keep the processes in step
                if last_good is None:
                    raise RuntimeError("the first training batch holds no readable example")
                batch = last_good
            last_good = batch
            batch = batch.to(device)
            torch.manual_seed(derive_seed(cfg.seed, "step", epoch, micro_index, info.rank))  # dropout, drop path
            syncing = micro == cfg.grad_accum - 1 or not info.enabled
            with contextlib.nullcontext() if syncing else ddp.no_sync(), autocast(device, cfg.precision):
                logits = ddp(batch.x, batch.padding_mask).float()
            loss = F.cross_entropy(logits, batch.labels, label_smoothing=cfg.label_smoothing)
            (loss / cfg.grad_accum).backward()
            sums["loss"] += float(loss.detach()) / cfg.grad_accum
            sums["accuracy"] += float((logits.argmax(-1) == batch.labels).float().mean()) / cfg.grad_accum
            if micro < cfg.grad_accum - 1 or step >= total:
                continue
            lr = cosine_lr(step, cfg.lr, warmup, total, cfg.min_lr)
            set_lr(optimizer, lr)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            logs = mean_over_processes(sums, info, device)
            sums = {"loss": 0.0, "accuracy": 0.0}
            if step % cfg.log_every == 0:
                metrics.log({"step": step, "epoch": epoch, "loss": logs["loss"], "train_accuracy": logs["accuracy"],
                             "lr": lr, "grad_norm": grad_norm})
            metrics.advance({"loss": f"{logs['loss']:.3f}", "lr": f"{lr:.2e}"})
        result = evaluate(model, loader("validation"), len(labels), info, device, cfg.precision)
        metrics.log({"step": step, "epoch": epoch + 1, "val_accuracy": result["accuracy"], "val_loss": result["loss"],
                     "elapsed_s": time.perf_counter() - start})
        metrics.write(f"epoch {epoch + 1}/{cfg.epochs}: validation accuracy {result['accuracy']:.2%}")
        if best is None or result["accuracy"] > best["accuracy"]:
            best = {"epoch": epoch + 1, "step": step, **result}
            if info.is_main:
                provenance.update(epoch=epoch + 1, step=step, metrics={"val_accuracy": result["accuracy"]})
                pre = checkpoint_preprocessing(encoder_cfg, cfg.max_tokens, cfg.trim_silence)
                if tokenizer is not None:  # the tokenizer's special ids, which are the model's
                    pre.update(bos_id=tokenizer.bos_id, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id)
                ckpt = CheckpointConfig(name, encoder_cfg, head_cfg, preprocessing=pre, provenance=provenance)
                save_checkpoint(run / "best", model, ckpt, None if tokenizer is None else tokenizer.files)
            barrier(info)
    metrics.close()

    # ---- test the best checkpoint as it is shipped (weights rounded to --save-dtype); record the results in it
    best_model, ckpt = load_checkpoint(run / "best", device=device)
    best_model.to(FLOAT_DTYPES[cfg.save_dtype]).float()
    result = evaluate(best_model, loader("test"), len(labels), info, device, "fp32")
    summary = confusion_summary(result["confusion"], labels)
    if info.is_main:
        results = {"labels": labels, "best_epoch": best["epoch"], "val_accuracy": best["accuracy"],
                   "test_accuracy": result["accuracy"], "test_loss": result["loss"], "test_count": result["count"],
                   "test_confusion": result["confusion"], "train_examples": len(train),
                   "elapsed_s": round(time.perf_counter() - start, 1)}
        atomic_write(run / "results.json", json.dumps(results, indent=2) + "\n")
        ckpt.provenance["metrics"] = {"val_accuracy": best["accuracy"], "test_accuracy": result["accuracy"],
                                      "test_count": result["count"]}
        ckpt.provenance["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        if cfg.baseline:
            ckpt.provenance["baseline"] = _baseline(cfg.baseline)
        save_checkpoint(run / "best", best_model, ckpt, None if tokenizer is None else tokenizer.files,
                        dtype=FLOAT_DTYPES[cfg.save_dtype])
        print(f"test accuracy {result['accuracy']:.2%} ({result['count']} examples, best epoch {best['epoch']}, "
              f"validation {best['accuracy']:.2%})\n{summary}")
    barrier(info)
    cleanup(info)
    return run / "best"


def _baseline(run_dir: str) -> dict[str, Any]:
    """A finished comparison run's command, budget and accuracies, for this run's provenance."""
    run = Path(run_dir)
    results = json.loads((run / "results.json").read_text())
    provenance = read_config(run / "best").provenance
    return {"run": run_dir, "command": provenance.get("command"), "from_scratch": provenance.get("from_scratch"),
            "epochs": provenance.get("epochs"), "train_examples": results["train_examples"],
            "val_accuracy": results["val_accuracy"], "test_accuracy": results["test_accuracy"]}


def run_finetune(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(FinetuneConfig, args)
        finetune(cfg, command=args.command_line)
    except (ValueError, OSError) as e:  # CheckpointError and TokenizerError are ValueErrors
        print(f"d2v finetune: {e}", file=sys.stderr)
        return 2
    return 0
