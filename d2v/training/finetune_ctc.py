"""`d2v finetune --task ctc`: speech-recognition fine-tuning of an audio encoder with a CTC head, from
a pretrained checkpoint or from scratch (the baseline), the recipe of wav2vec 2.0 / data2vec 2.0.

Read top to bottom: setup (the encoder and its pretrained weights, the transcribed splits and the
letter vocabulary built from the training transcripts, the CTC head, Adam), the loop (per update:
tri-stage learning rate; each micro-batch's features time- and channel-masked, the encoder frozen for
the first `freeze_finetune_updates` updates, CTC loss; every `val_every` updates greedy decoding of
the validation split, WER and CER, the best kept as `<run>/best`; every `checkpoint_every` updates a
training checkpoint), then the test split decoded with the best checkpoint as shipped, the results
written into `<run>/results.json` and its provenance.

The recipe (fairseq `wav2vec_ctc` fine-tuning, which data2vec 2.0 reuses for speech):
- CTC loss (`zero_infinity`: an utterance too long for its frames contributes nothing), summed over
  the batch and divided by the number of utterances (fairseq's `sentence_avg`).
- Adam (betas 0.9 / 0.98, eps 1e-8, no weight decay), tri-stage schedule (0.1 / 0.4 / 0.5, from 0.01
  to 1 to 0.05 times the peak), no gradient clipping.
- The convolutional feature extractor is frozen for the whole run (gradient multiplier 0: it takes no
  gradient and is not in the optimizer); the feature projection, positional convolutions and
  Transformer are frozen for the first `freeze_finetune_updates` updates, while only the head learns.
- Time masking (0.5, 10 frames, N(0, 0.01) noise in the masked frames) and channel masking (0.25,
  64 of 768 channels) of the features (`ctc_masking.py`), layerdrop 0.1 and activation dropout 0.1.
- Head: dropout, then Linear(D -> V) over every frame (xavier-uniform, zero bias).

Exact resume (`--resume true`): batches come from the seeded stream of `PretrainBatches` (a
function of seed and step), every random draw of a micro-batch (masks, noise, dropout, layerdrop) is
seeded from (seed, step, micro-batch, process), and a training checkpoint holds the model, Adam,
the RNG state, the step and the best validation result so far; so a killed run resumed from its last
checkpoint repeats the uninterrupted run exactly. Every file is written with `d2v.atomic`.
"""

import contextlib
import dataclasses
import json
import logging
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from d2v.atomic import atomic_write
from d2v.ctc import CTCVocabulary, greedy_decode
from d2v.model import EncoderConfig, HeadConfig, build_encoder
from d2v.model.checkpoint import FLOAT_DTYPES, CheckpointConfig, load_checkpoint, read_config, save_checkpoint
from d2v.model.encoder import Data2VecEncoder
from d2v.model.encoders.audio import normalize_waveform
from d2v.model.modality import receptive_field
from d2v.training.checkpointing import (
    checkpoint_preprocessing,
    clean_run_temporaries,
    resume_training_checkpoint,
    save_training_checkpoint,
    training_checkpoints,
)
from d2v.training.collate import TranscribedBatch, collate_transcribed
from d2v.training.config import FinetuneConfig, resolve_finetune
from d2v.training.ctc_masking import CTCMasking, apply_ctc_masks
from d2v.training.data import EpochBatches, PretrainBatches, derive_seed
from d2v.training.data.transcripts import (
    BLANK,
    WORD_DELIMITER,
    TranscribedAudioDataset,
    TranscribedClip,
    letter_vocabulary,
    read_transcribed,
    split_manifest,
    unseen_characters,
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
from d2v.training.finetune import _encoder_config, _load_pretrained
from d2v.training.metrics import MetricsLog
from d2v.training.optim import param_groups, set_lr, tri_stage_lr
from d2v.wer import ErrorCounts

__all__ = ["CTCEmissions", "ctc_head", "ctc_loss", "evaluate_ctc", "finetune_ctc"]

logger = logging.getLogger("d2v.training")
# settings that may change when a run is resumed; anything else must match the checkpointed run
RESUMABLE_CHANGES = {"resume", "progress", "num_workers", "log_every", "checkpoint_every", "keep_checkpoints",
                     "device", "out", "baseline"}
SHOWN_EXAMPLES = 10


def ctc_head(labels: list[str], dropout: float = 0.0) -> HeadConfig:
    """The head of a d2v-trained recognizer: blank id 0, `|` the word delimiter, nothing ignored."""
    return HeadConfig("ctc", labels, "mean", dropout, blank_id=labels.index(BLANK), word_delimiter=WORD_DELIMITER)


class CTCEmissions(nn.Module):
    """The encoder as fine-tuning runs it, one module so that DDP wraps a forward: local features,
    then (training) the time and channel masks, the positional convolutions and the Transformer, then
    the CTC head. The feature extractor's parameters are frozen by the caller (`requires_grad`).

    The frozen extractor is deterministic and transcribed clips are never cropped or augmented, so
    its output for a training clip is the same at every step: given the clips' indices (`keys`), it
    is computed once per clip, alone (so its value does not depend on the batch it first came in,
    which keeps resumed runs exact), and kept in memory (T x C floats per clip). This is an exact
    shortcut: gradients, masks and everything after the extractor are as without it.
    """

    def __init__(self, model: Data2VecEncoder, masking: CTCMasking):
        super().__init__()
        self.model = model
        self.masking = masking
        self.extracted: dict[int, Tensor] = {}

    def _extract(self, wav: Tensor) -> Tensor:
        """One clip's waveform (L,) -> the frozen extractor's frames (T, C)."""
        audio = self.model.input_encoder
        x = wav[None]
        if audio.normalize:
            x = normalize_waveform(x).to(audio.local_encoder.proj.weight.dtype)
        with torch.no_grad():
            return audio.local_encoder.extractor(x)[0]

    def local_features(self, wav: Tensor, padding_mask: Tensor, keys: list[int]) -> tuple[Tensor, Tensor]:
        """As `AudioEncoder.local_features`, with the extractor's output of each clip taken from memory.

        Args:
            wav: (B, L); padding_mask: (B, L) True at padding; keys: the B clips' indices.

        Returns:
            Features (B, T, D) and the frame padding mask (B, T).
        """
        lengths = (~padding_mask).sum(1).tolist()
        for b, key in enumerate(keys):
            if key not in self.extracted:
                self.extracted[key] = self._extract(wav[b, : lengths[b]])
        frames = [self.extracted[k] for k in keys]
        n = torch.tensor([len(f) for f in frames], device=wav.device)
        local = self.model.input_encoder.local_encoder
        x = local.proj(local.norm(torch.nn.utils.rnn.pad_sequence(frames, batch_first=True)))
        return x, torch.arange(x.shape[1], device=wav.device)[None, :] >= n[:, None]

    def forward(self, wav: Tensor, padding_mask: Tensor | None, rng: np.random.Generator | None,
                freeze_encoder: bool = False, keys: list[int] | None = None) -> tuple[Tensor, Tensor]:
        """Waveforms -> per-frame emissions.

        Args:
            wav: (B, L) waveforms; padding_mask: (B, L) True at padding.
            rng: draws the masks and the noise; None applies no masking.
            freeze_encoder: run everything below the head without gradients.
            keys: the clips' indices, to reuse their extractor output (needs padding_mask); None
                runs the extractor.

        Returns:
            Emissions (B, T, V) and the real frames of each clip (B,).
        """
        audio = self.model.input_encoder
        with torch.no_grad() if freeze_encoder else contextlib.nullcontext():
            if keys is not None and padding_mask is not None:
                x, frame_padding = self.local_features(wav, padding_mask, keys)
            else:
                x, frame_padding = audio.local_features(wav, padding_mask)
            if rng is not None:
                x, _, _ = apply_ctc_masks(x, frame_padding, self.masking, rng)
            x, _ = self.model.forward_layers(audio.contextualize(x, frame_padding))
            if frame_padding is not None:
                x = x.masked_fill(frame_padding.unsqueeze(-1), 0.0)
        emissions = self.model.forward_head(x, frame_padding)
        frames = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        if frame_padding is not None:
            frames = (~frame_padding).sum(1)
        return emissions, frames


def ctc_loss(emissions: Tensor, frames: Tensor, targets: Tensor, target_lengths: Tensor, blank_id: int) -> Tensor:
    """CTC loss summed over the batch, in float32; an impossible alignment (more letters than its frames
    allow) counts 0 (`zero_infinity`).

    Args:
        emissions: (B, T, V) unnormalized; frames: (B,) real frames; targets: (B, S); target_lengths: (B,).
    """
    log_probs = F.log_softmax(emissions.float(), dim=-1).transpose(0, 1)  # (T, B, V)
    return F.ctc_loss(log_probs, targets, frames, target_lengths, blank=blank_id, reduction="sum",
                      zero_infinity=True)


@torch.no_grad()
def evaluate_ctc(model: Data2VecEncoder, loader: DataLoader, vocab: CTCVocabulary, info: Distributed,
                 device: torch.device, precision: str) -> dict[str, Any]:
    """Greedy transcripts of every process's share of a split: WER, CER, exact transcripts and the first
    few (reference, hypothesis) pairs."""
    model.eval()
    counts, shown = ErrorCounts(), []
    for batch in loader:
        if batch is None:
            continue
        batch = batch.to(device)
        with autocast(device, precision):
            tokens, frame_padding = model.forward_features(batch.x, batch.padding_mask)
            emissions = model.forward_head(tokens, frame_padding)
        pad = None if frame_padding is None else frame_padding.cpu().numpy()
        for ref, hyp in zip(batch.texts, greedy_decode(emissions.float().cpu().numpy(), vocab, padding_mask=pad),
                            strict=True):
            counts.add(ref, hyp)
            if len(shown) < SHOWN_EXAMPLES:
                shown.append({"reference": ref, "hypothesis": hyp})
    parts = all_gather_objects((counts, shown), info)
    counts = sum((p[0] for p in parts), ErrorCounts())
    shown = [e for p in parts for e in p[1]][:SHOWN_EXAMPLES]
    return {"wer": counts.wer, "cer": counts.cer, "count": counts.utterances, "exact": counts.exact,
            "word_errors": counts.word_errors, "words": counts.words, "examples": shown}


def _clips(cfg: FinetuneConfig) -> dict[str, list[TranscribedClip]]:
    """The train, validation and test clips (transcripts normalized); one line for the first bad one."""
    return {"train": read_transcribed(split_manifest(cfg.data, cfg.train_split, training=True)),
            "validation": read_transcribed(split_manifest(cfg.data, cfg.val_split)),
            "test": read_transcribed(split_manifest(cfg.data, cfg.test_split))}


def _report_unseen(clips: list[TranscribedClip], labels: list[str], split: str) -> None:
    unseen = unseen_characters((c.text for c in clips), labels)
    if unseen:
        chars = ", ".join(f"{c!r} x{n}" for c, n in unseen.most_common())
        logger.warning("the %s transcripts hold characters no training transcript has (%s): the model cannot "
                       "write them, so they count as errors", split, chars)


def _check_run_dir(run: Path, resume: bool) -> None:
    if not resume and training_checkpoints(run):
        raise FileExistsError(f"{run} already holds a run; pass --resume true to continue it or choose another --out")


def _write_run_config(run: Path, config: dict[str, Any], resuming: bool) -> None:
    """Write <run>/config.json, or check that a resumed run's settings match the checkpointed ones."""
    config = json.loads(json.dumps(config))  # tuples -> lists, as stored
    saved = run / "config.json"
    if resuming:
        try:
            old = json.loads(saved.read_bytes())
            old_ft = old["finetune"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{saved}: not a CTC fine-tuning run's config ({type(e).__name__})") from None
        changed = sorted(k for k in set(old_ft) | set(config["finetune"]) if k not in RESUMABLE_CHANGES
                         and old_ft.get(k) != config["finetune"].get(k))
        changed += [k for k in ("encoder", "head") if old.get(k) != config[k]]
        if changed:
            raise ValueError(f"cannot resume {run}: {', '.join(changed)} differ(s) from the checkpointed run")
        return
    run.mkdir(parents=True, exist_ok=True)
    atomic_write(saved, json.dumps(config, indent=2) + "\n")


def _schedule(cfg: FinetuneConfig, train_examples: int, info: Distributed) -> FinetuneConfig:
    """Fill in the step counts that depend on the data: --steps (default --epochs passes), --val-every
    (a tenth) and --checkpoint-every (= --val-every)."""
    per_epoch = max(train_examples // (cfg.batch_size * cfg.grad_accum * info.world_size), 1)
    steps = cfg.steps or cfg.epochs * per_epoch
    val_every = cfg.val_every or max(steps // 10, 1)
    return dataclasses.replace(cfg, steps=steps, val_every=val_every, checkpoint_every=cfg.checkpoint_every or val_every)


def _baseline(run_dir: str) -> dict[str, Any]:
    """A finished comparison run's command, budget and error rates, for this run's provenance."""
    run = Path(run_dir)
    results = json.loads((run / "results.json").read_text())
    provenance = read_config(run / "best").provenance
    return {"run": run_dir, "command": provenance.get("command"), "from_scratch": provenance.get("from_scratch"),
            "steps": provenance.get("steps"), "train_examples": results["train_examples"],
            "val_wer": results["val_wer"], "val_cer": results["val_cer"], "test_wer": results["test_wer"],
            "test_cer": results["test_cer"]}


def finetune_ctc(cfg: FinetuneConfig, command: str | None = None) -> Path:
    """Fine-tune an audio encoder for speech recognition and test it; returns `<out>/best`."""
    info, device = setup_distributed(cfg.device)
    run = Path(cfg.out)
    if info.is_main:
        for p in clean_run_temporaries(run):
            logger.info("removed %s, left by a killed run", p)
    encoder_cfg, _ = _encoder_config(cfg)
    if encoder_cfg.modality != "audio":
        raise ValueError(f"--task ctc fine-tunes audio models; {cfg.init or '--modality'} is {encoder_cfg.modality}")
    cfg = resolve_finetune(cfg, "audio", encoder_cfg.embed_dim)
    _check_run_dir(run, cfg.resume)
    encoder_cfg: EncoderConfig = dataclasses.replace(encoder_cfg, layerdrop=cfg.layerdrop,
                                                     activation_dropout=cfg.activation_dropout)
    if cfg.drop_path is not None:
        encoder_cfg.drop_path = cfg.drop_path

    # ---- data: transcribed splits, the letter vocabulary of the training transcripts
    clips = _clips(cfg)
    labels = letter_vocabulary(c.text for c in clips["train"])
    for split in ("validation", "test"):
        _report_unseen(clips[split], labels, split)
    head_cfg = ctc_head(labels, cfg.head_dropout)
    vocab = CTCVocabulary.from_head(head_cfg.to_dict())
    rate = encoder_cfg.audio.sample_rate
    reader = {"sample_rate": rate, "max_samples": int(cfg.max_seconds * rate),
              "min_samples": receptive_field(encoder_cfg.audio.conv_layers), "trim": cfg.trim_silence}
    datasets = {"train": TranscribedAudioDataset(clips["train"], labels, train=True, **reader),
                "validation": TranscribedAudioDataset(clips["validation"], None, train=False, **reader),
                "test": TranscribedAudioDataset(clips["test"], None, train=False, **reader)}
    cfg = _schedule(cfg, len(clips["train"]), info)

    def eval_loader(split: str) -> DataLoader:
        sampler = EpochBatches(len(datasets[split]), cfg.eval_batch_size, cfg.seed, 0, False, info.world_size, info.rank)
        return DataLoader(datasets[split], batch_sampler=sampler, collate_fn=collate_transcribed,
                          num_workers=cfg.num_workers)

    # ---- model: encoder (+ pretrained weights), the CTC head, the frozen extractor; Adam
    torch.manual_seed(cfg.seed)
    model = build_encoder(encoder_cfg, head_cfg)
    if cfg.init:
        _load_pretrained(model, cfg.init)
    model.input_encoder.local_encoder.extractor.requires_grad_(False)  # gradient multiplier 0
    model.to(device)
    n_blocks = encoder_cfg.prenet_depth + encoder_cfg.depth
    groups = param_groups(model, cfg.weight_decay, cfg.layer_decay, encoder_cfg.prenet_depth, n_blocks)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    state: dict[str, Any] = {"step": 0, "samples": 0, "elapsed": 0.0, "best": None}
    if cfg.resume:
        found = resume_training_checkpoint(run, model, None, optimizer)
        if found is not None:
            resumed_from, state = found
            logger.info("resuming %s from %s (step %d)", run, resumed_from.name, state["step"])
    start = state["step"]
    if info.is_main:
        _write_run_config(run, {"finetune": dataclasses.asdict(cfg), "encoder": encoder_cfg.to_dict(),
                                "head": head_cfg.to_dict(), "train_examples": len(clips["train"])}, start > 0)
    barrier(info)
    masking = CTCMasking(cfg.mask_prob, cfg.mask_length, cfg.mask_noise_std, cfg.mask_channel_prob,
                         cfg.mask_channel_length)
    trainer = wrap_ddp(CTCEmissions(model, masking), info, device,
                       find_unused_parameters=encoder_cfg.layerdrop > 0 or cfg.freeze_finetune_updates > 0)
    sampler = PretrainBatches(len(datasets["train"]), cfg.batch_size, cfg.steps, cfg.seed, start, cfg.grad_accum,
                              info.world_size, info.rank)
    loader = DataLoader(datasets["train"], batch_sampler=sampler, collate_fn=collate_transcribed,
                        num_workers=cfg.num_workers)
    metrics = MetricsLog(run, cfg.steps, start, info.is_main, cfg.progress, desc="finetune ctc")
    metrics.truncate_after(start)
    clip = cfg.clip_norm if cfg.clip_norm and cfg.clip_norm > 0 else math.inf
    name = cfg.name or run.name
    pre = checkpoint_preprocessing(encoder_cfg, cfg.max_tokens, cfg.trim_silence)
    provenance: dict[str, Any] = {
        "command": command or f"d2v finetune (config: {run / 'config.json'})", "kind": "finetune", "task": "ctc",
        "init": cfg.init, "from_scratch": cfg.init is None, "data": cfg.data, "train_examples": len(clips["train"]),
        "steps": cfg.steps}
    if cfg.init:
        provenance["pretrained"] = read_config(cfg.init).provenance

    # ---- the loop: one optimizer update per step; validation and checkpoints at their intervals
    batches, last_good = iter(loader), None
    elapsed, samples, best = state.get("elapsed", 0.0), state.get("samples", 0), state.get("best")
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        trainer.train()
        lr = tri_stage_lr(step, cfg.lr, cfg.steps, cfg.phase_ratio, cfg.final_lr_scale)
        set_lr(optimizer, lr)
        frozen = step < cfg.freeze_finetune_updates
        loss_sum, n_samples = 0.0, 0
        for micro in range(cfg.grad_accum):
            batch: TranscribedBatch | None = next(batches)
            if batch is None:  # every clip of this micro-batch was unreadable or too long (each was reported)
                if last_good is None:
                    raise RuntimeError("the first training batch holds no usable clip")
                batch = last_good
            last_good = batch
            batch = batch.to(device)
            torch.manual_seed(derive_seed(cfg.seed, "step", step, micro, info.rank))  # dropout, layerdrop
            rng = np.random.default_rng(derive_seed(cfg.seed, "mask", step, micro, info.rank))
            syncing = micro == cfg.grad_accum - 1 or not info.enabled
            with contextlib.nullcontext() if syncing else trainer.no_sync(), autocast(device, cfg.precision):
                emissions, frames = trainer(batch.x, batch.padding_mask, rng, frozen, batch.indices)
            loss = ctc_loss(emissions, frames, batch.targets, batch.target_lengths, head_cfg.blank_id) / len(batch)
            (loss / cfg.grad_accum).backward()
            loss_sum += float(loss.detach()) / cfg.grad_accum
            n_samples += len(batch)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        logs = mean_over_processes({"loss": loss_sum}, info, device)
        samples += n_samples * info.world_size
        elapsed += time.perf_counter() - t0
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            metrics.log({"step": done, "loss": logs["loss"], "lr": lr, "grad_norm": grad_norm, "frozen": frozen,
                         "samples": samples, "elapsed_s": elapsed})
        metrics.advance({"loss": f"{logs['loss']:.3f}", "lr": f"{lr:.2e}"})
        if done % cfg.val_every == 0 or done == cfg.steps:
            result = evaluate_ctc(model, eval_loader("validation"), vocab, info, device, cfg.precision)
            metrics.log({"step": done, "val_wer": result["wer"], "val_cer": result["cer"],
                         "val_exact": result["exact"] / max(result["count"], 1)})
            metrics.write(f"step {done}/{cfg.steps}: validation WER {result['wer']:.2%}, CER {result['cer']:.2%}")
            if best is None or (result["wer"], result["cer"]) < (best["wer"], best["cer"]):
                best = {"step": done, "wer": result["wer"], "cer": result["cer"]}
                if info.is_main:
                    provenance.update(step=done, metrics={"val_wer": result["wer"], "val_cer": result["cer"]})
                    ckpt = CheckpointConfig(name, encoder_cfg, head_cfg, preprocessing=pre, provenance=provenance)
                    save_checkpoint(run / "best", model, ckpt)
                barrier(info)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            if info.is_main:
                save_training_checkpoint(run, done, model, None, optimizer,
                                         {"samples": samples, "elapsed": elapsed, "best": best}, cfg.keep_checkpoints)
            barrier(info)
    metrics.close()

    # ---- test the best checkpoint as it is shipped (weights rounded to --save-dtype); record the results
    best_model, ckpt = load_checkpoint(run / "best", device=device)
    best_model.to(FLOAT_DTYPES[cfg.save_dtype]).float()
    result = evaluate_ctc(best_model, eval_loader("test"), vocab, info, device, "fp32")
    if info.is_main:
        results = {"vocabulary": labels, "best_step": best["step"], "val_wer": best["wer"], "val_cer": best["cer"],
                   "test_wer": result["wer"], "test_cer": result["cer"], "test_count": result["count"],
                   "test_exact": result["exact"], "test_examples": result["examples"],
                   "train_examples": len(clips["train"]), "steps": cfg.steps, "elapsed_s": round(elapsed, 1)}
        atomic_write(run / "results.json", json.dumps(results, indent=2) + "\n")
        ckpt.provenance["metrics"] = {"val_wer": best["wer"], "val_cer": best["cer"], "test_wer": result["wer"],
                                      "test_cer": result["cer"], "test_count": result["count"]}
        ckpt.provenance["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        if cfg.baseline:
            ckpt.provenance["baseline"] = _baseline(cfg.baseline)
        save_checkpoint(run / "best", best_model, ckpt, dtype=FLOAT_DTYPES[cfg.save_dtype])
        examples = "\n".join(f"  {e['reference']!r} -> {e['hypothesis']!r}" for e in result["examples"])
        print(f"test WER {result['wer']:.2%}, CER {result['cer']:.2%} ({result['count']} clips, "
              f"{result['exact']} exact; best step {best['step']}, validation WER {best['wer']:.2%})\n{examples}")
    barrier(info)
    cleanup(info)
    return run / "best"
