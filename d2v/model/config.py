"""Typed, serializable configuration of a data2vec 2.0 model.

`EncoderConfig` is everything needed to rebuild the encoder that inference uses (it is the
`encoder` field of a checkpoint's config.json). `ModelConfig` adds what only pretraining needs: the
decoder, masking, targets, loss and EMA teacher. Numbers are those of the reference (fairseq
data2vec 2.0); presets live in `presets.py`.
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

__all__ = [
    "HEAD_TYPES",
    "MODALITIES",
    "AudioConfig",
    "DecoderConfig",
    "EMAConfig",
    "EncoderConfig",
    "HeadConfig",
    "ImageConfig",
    "MaskConfig",
    "Modality",
    "ModelConfig",
    "TargetConfig",
    "TextConfig",
    "config_from_dict",
]

Modality = Literal["image", "audio", "text"]
MODALITIES: tuple[str, ...] = ("image", "audio", "text")


@dataclass
class ImageConfig:
    image_size: int = 224
    """Input height and width in pixels."""
    patch_size: int = 16
    """Side of the square patches (the patch-embedding conv's kernel and stride)."""
    in_chans: int = 3
    """Input channels."""
    stored_pos_embed: bool = False
    """The 2-D sin-cos position table is a persistent buffer stored in model.safetensors (imported
    fairseq checkpoints keep their fp16-stored table); False: computed at build time."""


def _wav2vec2_conv_layers() -> list[list[int]]:
    return [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2


@dataclass
class AudioConfig:
    conv_layers: list[list[int]] = field(default_factory=_wav2vec2_conv_layers)
    """Feature extractor as [channels, kernel, stride] per layer; the default has total stride 320."""
    conv_bias: bool = False
    """Bias in the feature-extractor convolutions."""
    conv_pos_depth: int = 5
    """Layers of the grouped convolutional positional encoder."""
    conv_pos_kernel: int = 19
    """Kernel of each positional convolution (reference: max(3, 95 // 5))."""
    conv_pos_groups: int = 16
    """Groups of each positional convolution."""
    conv_pos_norm_eps: float | None = None
    """Epsilon of the positional convolutions' LayerNorms; None: the encoder's norm_eps."""
    use_alibi: bool = True
    """Add the symmetric ALiBi bias, with a learned per-head scale, to every attention layer."""
    sample_rate: int = 16000
    """Waveform sample rate the model expects."""
    normalize: bool = True
    """Normalize each waveform to zero mean and unit variance inside the model."""


@dataclass
class TextConfig:
    vocab_size: int = 50265
    """Rows of the token embedding."""
    max_positions: int = 512
    """Longest token sequence; the position table has max_positions + pad_id + 1 rows."""
    pad_id: int = 1
    """Padding token id; positions start at pad_id + 1 (the RoBERTa offset)."""
    embed_norm_eps: float | None = None
    """Epsilon of the embedding LayerNorm; None: the encoder's norm_eps."""


@dataclass
class EncoderConfig:
    modality: Modality
    """Which input encoder feeds the Transformer."""
    embed_dim: int = 768
    num_heads: int = 12
    depth: int = 12
    """Shared Transformer blocks (the ones that produce targets)."""
    prenet_depth: int = 0
    """Modality-specific context-encoder blocks before the shared ones."""
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-5
    dropout: float = 0.1
    """Dropout after the attention projection."""
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    """Dropout after the MLP's GELU."""
    post_mlp_dropout: float = 0.1
    """Dropout on the MLP output before the residual."""
    prenet_dropout: float = 0.0
    """Dropout after the context encoder's embedding LayerNorm."""
    layerdrop: float = 0.0
    """Probability of skipping each shared block while training."""
    drop_path: float = 0.0
    """Stochastic depth, linear from 0 to this over all blocks."""
    image: ImageConfig | None = None
    audio: AudioConfig | None = None
    text: TextConfig | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        for m in MODALITIES:
            if m != self.modality and getattr(self, m) is not None:
                raise ValueError(f"a {self.modality} encoder cannot have an {m!r} section")
        if getattr(self, self.modality) is None:
            setattr(self, self.modality, _SECTIONS[self.modality]())
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def inputs(self) -> ImageConfig | AudioConfig | TextConfig:
        """The modality-specific section."""
        return getattr(self, self.modality)

    def to_dict(self) -> dict[str, Any]:
        """The config.json form; optional input fields at their default are left out, so that a
        config that does not use them reads exactly as before they existed."""
        d = asdict(self)
        d = {k: v for k, v in d.items() if not (k in MODALITIES and v is None)}
        section = d[self.modality]
        for k, default in _OPTIONAL_FIELDS[self.modality].items():
            if section.get(k) == default:
                del section[k]
        return d


_SECTIONS = {"image": ImageConfig, "audio": AudioConfig, "text": TextConfig}
_OPTIONAL_FIELDS: dict[str, dict[str, Any]] = {
    "image": {"stored_pos_embed": False},
    "audio": {"conv_pos_norm_eps": None},
    "text": {"embed_norm_eps": None},
}


@dataclass
class DecoderConfig:
    dim: int = 384
    """Channels of the convolutional decoder."""
    kernel: int = 5
    layers: int = 5
    groups: int = 16
    residual: bool = True
    """Residual around each layer whose input and output widths match."""
    projection_layers: int = 1
    """1: Linear(dim, embed_dim); 2: Linear(dim, dim * ratio), GELU, Linear(., embed_dim)."""
    projection_ratio: float = 2.0
    input_dropout: float = 0.1
    """Dropout on the encoder output before it enters the decoder."""
    mask_noise_std: float = 0.01
    """Std of the Gaussian noise placed at masked positions (there is no learned mask token)."""


@dataclass
class MaskConfig:
    kind: Literal["block", "random"] = "block"
    """Block masks over the token grid (images 2-D, audio 1-D) or uniform random (text)."""
    mask_prob: float = 0.8
    mask_prob_adjust: float = 0.0
    """Extra block centres drawn before trimming to the exact count."""
    mask_length: int = 3
    """Block width (a B x B square on a 2-D grid)."""
    inverse: bool = False
    """The drawn blocks are the visible tokens rather than the masked ones (images)."""
    clone_batch: int = 1
    """M: masked copies of each sample that share one teacher pass."""


@dataclass
class TargetConfig:
    top_k: int = 8
    """Average the FFN outputs of the top K shared blocks."""
    instance_norm_target_layer: bool = True
    layer_norm_target_layer: bool = False
    layer_norm_targets: bool = False
    """Parameter-free LayerNorm over channels of the average."""
    instance_norm_targets: bool = False


@dataclass
class EMAConfig:
    decay: float = 0.999
    end_decay: float = 0.99999
    anneal_end_step: int = 75_000
    ema_local_encoder: bool = False
    """The teacher keeps its own EMA copy of the local encoder (images); otherwise it reads the
    student's local features (audio, text)."""


@dataclass
class ModelConfig:
    encoder: EncoderConfig
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    loss_scale: float | None = None
    """Multiplier of the L2 loss; None means 1 / sqrt(embed_dim)."""
    cls_loss: float = 0.0
    """Weight of the CLS-vs-mean-target loss (images: 0.01)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["encoder"] = self.encoder.to_dict()
        return d


HEAD_TYPES: tuple[str, ...] = ("mean_pool", "first_token", "mean_linear", "ctc")


@dataclass
class HeadConfig:
    type: Literal["mean_pool", "first_token", "mean_linear", "ctc"]
    """mean_pool: mean over real tokens, LayerNorm, Linear (images, audio); first_token: dense, tanh,
    Linear on the first token (text); mean_linear: mean over real tokens, an optional Linear to
    projection_dim, Linear (HF audio classifiers); ctc: Linear over every frame, per-frame
    emissions (B, T, V) for CTC decoding (speech recognition)."""
    labels: list[str]
    """Class names in logit order; for ctc, the output vocabulary in id order."""
    pooling: Literal["mean", "cls"] = "mean"
    """Pooling the head was trained with; the default pooling of /embed for this model."""
    dropout: float = 0.0
    projection_dim: int | None = None
    """mean_linear only: width of the projector between pooling and the classifier (None: none)."""
    blank_id: int | None = None
    """ctc only: the id of the CTC blank (required)."""
    word_delimiter: str | None = None
    """ctc only: the vocabulary entry that separates words ("|"), or None when there is none."""
    ignore_ids: list[int] = field(default_factory=list)
    """ctc only: ids besides the blank that produce no text (fairseq's </s>)."""

    def __post_init__(self) -> None:
        if self.type not in HEAD_TYPES:
            raise ValueError(f"head type must be one of {HEAD_TYPES}, got {self.type!r}")
        if not self.labels:
            raise ValueError("a head needs at least one label")
        if self.type == "ctc":
            n = len(self.labels)
            if self.blank_id is None or not 0 <= self.blank_id < n:
                raise ValueError(f"a ctc head needs a blank_id in [0, {n}), got {self.blank_id!r}")
            if any(not 0 <= i < n for i in self.ignore_ids):
                raise ValueError(f"ctc ignore_ids must lie in [0, {n}), got {self.ignore_ids}")
            if self.word_delimiter is not None and self.word_delimiter not in self.labels:
                raise ValueError(f"the ctc word_delimiter {self.word_delimiter!r} is not in the vocabulary")
        else:
            ctc_only = {"blank_id": self.blank_id, "word_delimiter": self.word_delimiter,
                        "ignore_ids": self.ignore_ids or None}
            set_ = [k for k, v in ctc_only.items() if v is not None]
            if set_:
                raise ValueError(f"{', '.join(set_)} apply to ctc heads only, not {self.type!r}")
        if self.projection_dim is not None and (self.type != "mean_linear" or self.projection_dim < 1):
            raise ValueError(f"projection_dim applies to mean_linear heads only and must be >= 1, "
                             f"got {self.projection_dim!r} for {self.type!r}")

    def to_dict(self) -> dict[str, Any]:
        """The config.json form: the fields a head of this type uses (older heads stay as they were)."""
        d = asdict(self)
        if self.type != "ctc":
            for k in ("blank_id", "word_delimiter", "ignore_ids"):
                del d[k]
        if self.type != "mean_linear":
            del d["projection_dim"]
        return d


def _build(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
    return cls(**data)


def config_from_dict(data: dict[str, Any]) -> ModelConfig | EncoderConfig:
    """Rebuild a `ModelConfig` (has an "encoder" key) or an `EncoderConfig` from its dict form."""
    if "encoder" in data:
        parts = {"encoder": config_from_dict(data["encoder"])}
        sections = {"decoder": DecoderConfig, "mask": MaskConfig, "target": TargetConfig, "ema": EMAConfig}
        for key, cls in sections.items():
            if key in data:
                parts[key] = _build(cls, data[key])
        rest = {k: v for k, v in data.items() if k not in parts}
        return _build(ModelConfig, {**rest, **parts})
    data = dict(data)
    for m, cls in _SECTIONS.items():
        if data.get(m) is not None:
            data[m] = _build(cls, data[m])
    return _build(EncoderConfig, data)
