"""Typed configuration of `d2v pretrain` and `d2v finetune`.

Every field has a docstring; `d2v.configuration` turns the fields into `--flags` (the docstring is
the help text) and reads a JSON or YAML file given with `--config`, checked by the fields' types,
which the flags override. Fields left at None take the modality's reference value (the reference recipe) when the run
starts (`resolve_pretrain`, `resolve_finetune`); the resolved config is what the run directory
records.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from d2v.model.config import Modality

__all__ = [
    "CTC_ONLY",
    "CTC_REFERENCE",
    "FINETUNE_REFERENCE",
    "PRETRAIN_REFERENCE",
    "FinetuneConfig",
    "PretrainConfig",
    "resolve_ctc",
    "resolve_finetune",
    "resolve_pretrain",
]

Precision = Literal["auto", "bf16", "fp32"]

# the modalities' reference optimizer settings (pretraining and fine-tuning recipes)
PRETRAIN_REFERENCE: dict[str, dict[str, Any]] = {
    "image": {"lr": 1e-3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.05, "clip_norm": 4.0,
              "min_target_std": 0.0, "min_pred_std": 0.0},
    "audio": {"lr": 7.5e-4, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.01, "clip_norm": 0.0,
              "min_target_std": 0.1, "min_pred_std": 0.01},
    "text": {"lr": 2e-4, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.01, "clip_norm": 1.0,
             "min_target_std": 0.1, "min_pred_std": 0.01},
}
# fine-tuning: the reference's betas/eps/wd/layer decay; learning rates for small classification runs
FINETUNE_REFERENCE: dict[str, dict[str, Any]] = {
    "image": {"lr": 1e-3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.05, "layer_decay": 0.65,
              "clip_norm": 0.0, "drop_path": 0.1},
    "audio": {"lr": 5e-4, "betas": (0.9, 0.98), "eps": 1e-8, "weight_decay": 0.0, "layer_decay": 1.0,
              "clip_norm": 1.0, "drop_path": None},
    "text": {"lr": 1e-4, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.1, "layer_decay": 1.0,
             "clip_norm": 1.0, "drop_path": None},
}


# speech recognition (fairseq's wav2vec 2.0 / data2vec fine-tuning recipe); the lr is d2v's, for tiny
# models and runs of a few thousand updates (the reference's base models take 3e-5 to 5e-5)
CTC_REFERENCE: dict[str, Any] = {
    "lr": 5e-4, "betas": (0.9, 0.98), "eps": 1e-8, "weight_decay": 0.0, "layer_decay": 1.0, "clip_norm": 0.0,
    "freeze_finetune_updates": 0, "phase_ratio": (0.1, 0.4, 0.5), "final_lr_scale": 0.05, "mask_prob": 0.5,
    "mask_length": 10, "mask_noise_std": 0.01, "mask_channel_prob": 0.25, "layerdrop": 0.1,
    "activation_dropout": 0.1,
}


@dataclass
class PretrainConfig:
    """data2vec 2.0 pretraining of one modality (`d2v pretrain`)."""

    help_tables: ClassVar[dict[str, Any]] = {"reference": PRETRAIN_REFERENCE}
    """What `{reference}` in a field's help text stands for (`d2v.configuration.help_text`)."""

    modality: Modality
    """Which modality to pretrain: image, audio or text."""
    data: str
    """Dataset directory (docs/data.md): <split>.jsonl manifests or <split>/<label>/ folders; or one
    manifest, folder, or text file (one sentence per line) used whole."""
    out: str = "runs/pretrain"
    """Run directory: config, metrics.jsonl, training checkpoints, and the final inference checkpoint."""
    preset: str = "tiny"
    """Model size from d2v.model.presets: tiny, base or large."""
    model_config: str | None = None
    """A JSON file holding a full ModelConfig (as in the run's config.json) used instead of the preset."""
    name: str | None = None
    """Name written into the inference checkpoint (default: <modality>-<preset>-pretrained)."""
    splits: list[str] = field(default_factory=lambda: ["train"])
    """Splits of the dataset directory to pretrain on (labels are ignored)."""

    steps: int = 1000
    """Optimizer updates in the whole run (the cosine schedule ends here)."""
    batch_size: int = 16
    """Samples per process per micro-batch (each is masked clone_batch times)."""
    grad_accum: int = 1
    """Micro-batches per optimizer update."""
    lr: float | None = None
    """Peak learning rate (reference: {reference})."""
    betas: tuple[float, float] | None = None
    """AdamW betas (reference: {reference})."""
    eps: float | None = None
    """AdamW epsilon (reference: {reference})."""
    weight_decay: float | None = None
    """Decoupled weight decay, never on biases, norms or the ALiBi scale (reference: {reference})."""
    warmup_steps: int | None = None
    """Linear warmup from 0 (default: a tenth of the steps)."""
    min_lr: float = 0.0
    """Learning rate at the end of the cosine decay."""
    clip_norm: float | None = None
    """Gradient-norm clipping; 0 turns it off (reference: {reference})."""
    clone_batch: int | None = None
    """M, masked copies of each sample per teacher pass (default: the preset's)."""
    ema_decay: float | None = None
    """EMA teacher decay at step 0 (default: the preset's)."""
    ema_end_decay: float | None = None
    """EMA decay reached at ema_anneal_end_step (default: the preset's)."""
    ema_anneal_end_step: int | None = None
    """Updates over which the EMA decay rises linearly (default: the preset's)."""
    min_target_std: float | None = None
    """Collapse guard: stop when the teacher targets' std falls below this; 0 turns it off (reference:
    {reference})."""
    min_pred_std: float | None = None
    """Collapse guard: stop when the predictions' std falls below this; 0 turns it off (reference: {reference})."""
    collapse_check_after: int = 5000
    """The collapse guard is checked only after this many updates (the default is the reference's)."""

    crop_scale_min: float = 0.2
    """Images: random resized crop keeps between this and all of the image area (the default is the reference's)."""
    hflip: bool = True
    """Images: random horizontal flip."""
    max_seconds: float = 5.0
    """Audio: longer clips are cropped to this many seconds at a random offset."""
    trim_silence: bool = False
    """Audio: cut leading and trailing silence; the checkpoint records it and the server does the same."""
    max_tokens: int = 128
    """Text: sequences are cut to this many tokens, <s> and </s> included."""
    tokenizer: str | None = None
    """Text: a sentencepiece model, a tokenizer.json or a directory holding a tokenizer (docs/tokenizers.md);
    without one, a tokenizer is trained on the corpus and saved with the run."""
    vocab_size: int = 4000
    """Text: vocabulary of the tokenizer trained when none is given."""
    pack: bool = False
    """Text: concatenate the examples and cut the stream into blocks of max_tokens, as the reference
    pretrains (fairseq sample_break_mode none); otherwise one example per sequence."""

    seed: int = 0
    """Seeds the weights, the data order, the masks and every random draw (per step, so resumes are exact)."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (the local CUDA device when there is one)."""
    precision: Precision = "auto"
    """bf16 autocast, fp32, or auto (bf16 where the device supports it: CUDA with bf16)."""
    num_workers: int = 0
    """DataLoader worker processes per training process."""
    log_every: int = 10
    """Write metrics every N updates."""
    checkpoint_every: int = 200
    """Write a training checkpoint every N updates (and at the end)."""
    keep_checkpoints: int = 2
    """Training checkpoints kept on disk (the newest)."""
    resume: bool = False
    """Continue from the newest complete training checkpoint in the run directory."""
    progress: bool = True
    """Show a progress bar (on the first process)."""


@dataclass
class FinetuneConfig:
    """Classification or speech-recognition (CTC) fine-tuning (`d2v finetune`)."""

    help_tables: ClassVar[dict[str, Any]] = {"reference": FINETUNE_REFERENCE, "ctc": CTC_REFERENCE}
    """What `{reference}` and `{ctc}` in a field's help text stand for (`d2v.configuration.help_text`)."""

    data: str
    """Dataset directory with labelled splits (docs/data.md); for --task ctc, a directory of <split>.jsonl
    manifests with "path" and "text", or the training manifest itself."""
    task: Literal["classify", "ctc"] = "classify"
    """classify: one label per example and a pooled head; ctc: speech recognition, audio with transcripts,
    a letter vocabulary and a CTC head over the frames, scored by WER and CER (docs/training.md)."""
    out: str = "runs/finetune"
    """Run directory: config, metrics.jsonl, results.json and the best checkpoint (best/)."""
    init: str | None = None
    """Pretrained inference checkpoint to start from; None trains from scratch (a baseline)."""
    modality: Modality | None = None
    """Modality of a from-scratch run (taken from the checkpoint otherwise)."""
    preset: str = "tiny"
    """Model size of a from-scratch run."""
    model_config: str | None = None
    """A JSON ModelConfig or EncoderConfig for a from-scratch run, instead of the preset."""
    name: str | None = None
    """Name written into the checkpoint (default: the run directory's name)."""
    train_split: str = "train"
    """Split fine-tuned on."""
    val_split: str = "validation"
    """Split evaluated after every epoch; its best accuracy picks the kept checkpoint."""
    test_split: str = "test"
    """Split evaluated once at the end with the best checkpoint."""
    labels_per_class: int | None = None
    """Fine-tune on this many labelled examples per class (a fixed, seeded subset), or all of them."""

    epochs: int = 20
    """Passes over the (subset of the) training split."""
    batch_size: int = 32
    """Samples per process per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer update."""
    eval_batch_size: int = 64
    """Samples per process per evaluation batch."""
    lr: float | None = None
    """Peak learning rate (default: {reference}; --task ctc: {ctc})."""
    betas: tuple[float, float] | None = None
    """AdamW betas (reference: {reference}; --task ctc: {ctc})."""
    eps: float | None = None
    """AdamW epsilon (reference: {reference}; --task ctc: {ctc})."""
    weight_decay: float | None = None
    """Weight decay, never on biases, norms or the ALiBi scale (reference: {reference}; --task ctc: {ctc})."""
    layer_decay: float | None = None
    """Layer-wise lr decay: block i of N gets layer_decay ** (N - i) (reference: {reference}; --task ctc: {ctc})."""
    warmup_fraction: float = 0.1
    """Fraction of the updates spent in linear warmup."""
    min_lr: float = 1e-6
    """Learning rate at the end of the cosine decay."""
    clip_norm: float | None = None
    """Gradient-norm clipping; 0 turns it off (default: {reference}; --task ctc: {ctc})."""
    label_smoothing: float = 0.1
    """Cross-entropy label smoothing (the default is the reference's)."""
    drop_path: float | None = None
    """Stochastic depth rate of the encoder (reference: {reference}; otherwise the checkpoint's)."""
    head: Literal["reference", "mean_pool", "first_token"] = "reference"
    """Classification head: the modality's reference (images and audio mean_pool, text first_token), or
    mean_pool (mean of the tokens, LayerNorm, Linear) or first_token (dense, tanh, Linear on <s>/CLS)."""
    head_dropout: float = 0.0
    """Dropout inside the classification head."""

    crop_scale_min: float = 0.35
    """Images: random resized crop keeps between this and all of the image area while training."""
    hflip: bool = True
    """Images: random horizontal flip while training."""
    max_seconds: float = 5.0
    """Audio: longer clips are cropped to this many seconds (random offset in training, centred otherwise)."""
    trim_silence: bool = False
    """Audio: cut leading and trailing silence; the checkpoint records it and the server does the same."""
    max_tokens: int = 128
    """Text: sequences are cut to this many tokens, <s> and </s> included."""
    tokenizer: str | None = None
    """Text: a sentencepiece model, a tokenizer.json or a tokenizer directory (default: the checkpoint's;
    from scratch without one, one is trained)."""
    vocab_size: int = 4000
    """Text: vocabulary of the tokenizer trained when none is given."""

    save_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Storage dtype of the floating-point weights of the final checkpoint (float16 halves its size)."""
    baseline: str | None = None
    """A finished run directory to compare with (e.g. from scratch, same budget): its command and test
    accuracy are recorded in this checkpoint's provenance."""

    # ---- speech recognition (--task ctc) only; None: the reference value (CTC_REFERENCE)
    steps: int | None = None
    """ctc: optimizer updates of the run (the tri-stage schedule spans them); default: --epochs passes over
    the training split."""
    val_every: int | None = None
    """ctc: greedy-decode the validation split (WER, CER) every N updates and at the end; the lowest WER
    (then CER) is kept as best/ (default: a tenth of the steps)."""
    checkpoint_every: int | None = None
    """ctc: write a training checkpoint (for --resume) every N updates and at the end (default: --val-every)."""
    keep_checkpoints: int = 2
    """ctc: training checkpoints kept on disk (the newest)."""
    resume: bool = False
    """ctc: continue the run in --out from its newest intact training checkpoint, exactly as if never stopped."""
    freeze_finetune_updates: int | None = None
    """ctc: for the first N updates only the head is trained, the whole encoder frozen (reference: 0 to
    10,000 of 13,000-320,000 updates by data size; default {ctc})."""
    phase_ratio: tuple[float, float, float] | None = None
    """ctc: tri-stage schedule, the fractions of the updates spent warming up (linear from 0.01 x lr), holding
    lr and decaying it exponentially (reference: {ctc})."""
    final_lr_scale: float | None = None
    """ctc: the tri-stage decay ends at lr x this (reference: {ctc})."""
    mask_prob: float | None = None
    """ctc: time masking: spans of --mask-length frames start at mask_prob / mask_length of the frames; the
    masked frames are replaced by N(0, --mask-noise-std) noise (reference: {ctc})."""
    mask_length: int | None = None
    """ctc: frames per time-mask span (reference: {ctc}, of 20 ms each)."""
    mask_noise_std: float | None = None
    """ctc: std of the noise written into time-masked frames (reference: {ctc})."""
    mask_channel_prob: float | None = None
    """ctc: channel masking: spans of --mask-channel-length feature channels, zeroed over the whole clip
    (reference: {ctc})."""
    mask_channel_length: int | None = None
    """ctc: channels per channel-mask span (reference: 64 of 768; default: 64 scaled to the model's width,
    so 5 of the tiny preset's 64)."""
    layerdrop: float | None = None
    """ctc: probability of skipping each Transformer block in a training step (reference: {ctc})."""
    activation_dropout: float | None = None
    """ctc: dropout after the MLP's GELU in every block (reference: {ctc})."""

    seed: int = 0
    """Seeds the head, the label subset, the data order and every random draw."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto."""
    precision: Precision = "auto"
    """bf16 autocast, fp32, or auto (bf16 where the device supports it)."""
    num_workers: int = 0
    """DataLoader worker processes per training process."""
    log_every: int = 10
    """Write training metrics every N updates."""
    progress: bool = True
    """Show a progress bar (on the first process)."""


CTC_ONLY = ("steps", "val_every", "checkpoint_every", "freeze_finetune_updates", "phase_ratio", "final_lr_scale",
            "mask_prob", "mask_length", "mask_noise_std", "mask_channel_prob", "mask_channel_length", "layerdrop",
            "activation_dropout")
"""FinetuneConfig fields that only --task ctc reads (None otherwise)."""


def _fill(cfg: Any, reference: dict[str, Any]) -> Any:
    values = {k: v for k, v in reference.items() if hasattr(cfg, k) and getattr(cfg, k) is None}
    return dataclasses.replace(cfg, **values)


def resolve_pretrain(cfg: PretrainConfig) -> PretrainConfig:
    """A copy with every None optimizer field set to the modality's reference value."""
    cfg = _fill(cfg, PRETRAIN_REFERENCE[cfg.modality])
    if cfg.warmup_steps is None:
        cfg = dataclasses.replace(cfg, warmup_steps=max(cfg.steps // 10, 1))
    return cfg


def resolve_finetune(cfg: FinetuneConfig, modality: str, embed_dim: int | None = None) -> FinetuneConfig:
    """A copy with the modality set and every None optimizer field at its default for it (for --task ctc,
    the speech-recognition recipe, `resolve_ctc`)."""
    cfg = dataclasses.replace(cfg, modality=modality)
    if cfg.task == "ctc":
        return resolve_ctc(cfg, embed_dim)
    given = [f"--{k.replace('_', '-')}" for k in CTC_ONLY if getattr(cfg, k) is not None]
    if cfg.resume:
        given.append("--resume")
    if given:
        raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --task ctc only")
    reference = dict(FINETUNE_REFERENCE[modality])
    if reference["drop_path"] is None:
        reference.pop("drop_path")
    return _fill(cfg, reference)


def resolve_ctc(cfg: FinetuneConfig, embed_dim: int | None = None) -> FinetuneConfig:
    """A --task ctc config with every None field at its CTC_REFERENCE value, checked; `steps`,
    `val_every` and `checkpoint_every` stay None when unset (they depend on the data) and
    `mask_channel_length` when `embed_dim` is not given (64 scaled to it).

    Raises:
        ValueError: a setting that does not apply to CTC or is out of range, named by its flag."""
    if cfg.labels_per_class is not None:
        raise ValueError("--labels-per-class applies to --task classify; CTC fine-tunes on every transcribed clip")
    if cfg.head != "reference":
        raise ValueError(f"--head {cfg.head} applies to --task classify; --task ctc always trains a CTC head")
    cfg = _fill(cfg, CTC_REFERENCE)
    if cfg.mask_channel_length is None and embed_dim is not None:
        cfg = dataclasses.replace(cfg, mask_channel_length=max(1, round(64 * embed_dim / 768)))
    for name in ("steps", "val_every", "checkpoint_every", "mask_length", "mask_channel_length"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("mask_prob", "mask_channel_prob", "layerdrop", "activation_dropout"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(cfg, name)}")
    if cfg.freeze_finetune_updates < 0 or cfg.mask_noise_std < 0 or not 0 < cfg.final_lr_scale <= 1:
        raise ValueError("--freeze-finetune-updates and --mask-noise-std must be >= 0, --final-lr-scale in (0, 1]")
    if any(r < 0 for r in cfg.phase_ratio) or abs(sum(cfg.phase_ratio) - 1.0) > 1e-6:
        raise ValueError(f"--phase-ratio must be three non-negative fractions summing to 1, got {cfg.phase_ratio}")
    return cfg
