"""Typed, serializable configuration of a data2vec 2.0 model.

`EncoderConfig` is everything needed to rebuild the encoder that inference uses (it is the
`encoder` field of a checkpoint's config.json). `ModelConfig` adds what only pretraining needs: the
decoder, masking, targets, loss and EMA teacher. Numbers are those of the reference (data2vec 2.0);
presets live in `presets.py`.

`config_from_dict` validates what it reads: every field's type (from the dataclass annotations) and
value (`RULES`, plus the checks that tie fields together), and names the offending field by its path,
e.g. `encoder.num_heads must be a positive integer, got 0`. This module never imports torch.
"""

import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal

from d2v.model.modality import MODALITIES, Modality
from d2v.tokenizer.spec import PAD_ID

__all__ = [
    "HEAD_TYPES",
    "MODALITIES",
    "AudioConfig",
    "ConfigError",
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
    "check_encoder",
    "config_from_dict",
    "head_from_dict",
]



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
    pad_id: int = PAD_ID
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
        if isinstance(self.num_heads, int) and self.num_heads > 0 and self.embed_dim % self.num_heads:
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


class ConfigError(ValueError):
    """A config has a field of the wrong type or value; the message names the field."""


Rule = tuple[Callable[[Any], bool], str]
POSITIVE_INT: Rule = (lambda v: v >= 1, "a positive integer")
NON_NEGATIVE_INT: Rule = (lambda v: v >= 0, "a non-negative integer")
POSITIVE: Rule = (lambda v: v > 0, "a positive number")
NON_NEGATIVE: Rule = (lambda v: v >= 0, "a non-negative number")
PROBABILITY: Rule = (lambda v: 0 <= v <= 1, "a number from 0 to 1")
CONV_LAYERS: Rule = (lambda v: len(v) > 0 and all(len(x) == 3 and min(x) >= 1 for x in v),
                     "a non-empty list of [channels, kernel, stride] positive integers")
LABELS: Rule = (lambda v: len(v) > 0, "a non-empty list of strings")

RULES: dict[type, dict[str, Rule]] = {
    EncoderConfig: {
        "embed_dim": POSITIVE_INT, "num_heads": POSITIVE_INT, "depth": POSITIVE_INT, "prenet_depth": NON_NEGATIVE_INT,
        "mlp_ratio": POSITIVE, "norm_eps": POSITIVE, "dropout": PROBABILITY, "attention_dropout": PROBABILITY,
        "activation_dropout": PROBABILITY, "post_mlp_dropout": PROBABILITY, "prenet_dropout": PROBABILITY,
        "layerdrop": PROBABILITY, "drop_path": PROBABILITY,
    },
    ImageConfig: {"image_size": POSITIVE_INT, "patch_size": POSITIVE_INT, "in_chans": POSITIVE_INT},
    AudioConfig: {"conv_layers": CONV_LAYERS, "conv_pos_depth": NON_NEGATIVE_INT, "conv_pos_kernel": POSITIVE_INT,
                  "conv_pos_groups": POSITIVE_INT, "sample_rate": POSITIVE_INT},
    TextConfig: {"vocab_size": POSITIVE_INT, "max_positions": POSITIVE_INT, "pad_id": NON_NEGATIVE_INT},
    HeadConfig: {"labels": LABELS, "dropout": PROBABILITY},
    DecoderConfig: {"dim": POSITIVE_INT, "kernel": POSITIVE_INT, "layers": NON_NEGATIVE_INT, "groups": POSITIVE_INT,
                    "projection_layers": POSITIVE_INT, "projection_ratio": POSITIVE, "input_dropout": PROBABILITY,
                    "mask_noise_std": NON_NEGATIVE},
    MaskConfig: {"mask_prob": PROBABILITY, "mask_prob_adjust": PROBABILITY, "mask_length": POSITIVE_INT,
                 "clone_batch": POSITIVE_INT},
    TargetConfig: {"top_k": POSITIVE_INT},
    EMAConfig: {"decay": PROBABILITY, "end_decay": PROBABILITY, "anneal_end_step": NON_NEGATIVE_INT},
    ModelConfig: {"loss_scale": POSITIVE, "cls_loss": NON_NEGATIVE},
}
"""Allowed values per field, beyond its annotated type; a field without a rule is only type-checked."""


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(hint: Any) -> str:
    """What a value of type `hint` looks like, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict or hint is dict:
        return "an object"
    if is_dataclass(hint):
        return "an object"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


class _Mismatch(Exception):
    """A value does not have the annotated type (internal: turned into a ConfigError by the caller)."""


def _typed(value: Any, hint: Any, path: str) -> Any:
    """`value` checked against the annotation `hint` (nested dataclasses built); raises _Mismatch or
    ConfigError."""
    if hint is Any or hint is object:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise _Mismatch
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _typed(value, a, path)
            except _Mismatch:
                continue
        raise _Mismatch
    if is_dataclass(hint):
        return _build(hint, value, path)
    if origin is list or hint is list:
        if not isinstance(value, list):
            raise _Mismatch
        return [_typed(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return tuple(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _Mismatch
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        try:
            value = float(value)
        except OverflowError:
            raise _Mismatch from None
        if not math.isfinite(value):
            raise _Mismatch
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _Mismatch
        return value
    if isinstance(hint, type) and not isinstance(value, hint):
        raise _Mismatch
    return value


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_value(cls: type, name: str, hint: Any, value: Any, path: str) -> Any:
    rule = RULES.get(cls, {}).get(name)
    where = _join(path, name)
    try:
        value = _typed(value, hint, where)
    except _Mismatch:
        want = rule[1] if rule is not None else _describe(hint)
        raise ConfigError(f"{where} must be {want}, got {_got(value)}") from None
    if rule is not None and value is not None and not rule[0](value):
        raise ConfigError(f"{where} must be {rule[1]}, got {_got(value)}")
    return value


def _build(cls: type, data: Any, path: str = "") -> Any:
    """`cls(**data)` with every field type- and value-checked; errors name the field by its path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__} must be an object, got {_got(data)}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        prefix = f"{path}: " if path else ""
        raise ConfigError(f"{prefix}unknown {cls.__name__} fields: {', '.join(map(str, unknown))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            kwargs[f.name] = _field_value(cls, f.name, hints[f.name], data[f.name], path)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{_join(path, f.name)} is missing")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        prefix = f"{path}: " if path else ""
        raise ConfigError(f"{prefix}{e}") from None


def check_encoder(cfg: EncoderConfig, path: str = "encoder") -> None:
    """The checks that tie an encoder's fields together (each field alone is checked on read).

    Raises:
        ConfigError: naming the fields, e.g. `encoder.image.image_size 30 is not a multiple of ...`."""
    def fail(message: str) -> None:
        raise ConfigError(message)

    p = _join(path, "")
    if cfg.embed_dim % cfg.num_heads:
        fail(f"{p}embed_dim {cfg.embed_dim} is not divisible by {p}num_heads {cfg.num_heads}")
    if int(cfg.embed_dim * cfg.mlp_ratio) < 1:
        fail(f"{p}mlp_ratio {cfg.mlp_ratio} leaves the MLP without units (embed_dim {cfg.embed_dim})")
    if cfg.modality == "image":
        c = cfg.image
        if c.image_size % c.patch_size:
            fail(f"{p}image.image_size {c.image_size} is not a multiple of {p}image.patch_size {c.patch_size}")
        if cfg.embed_dim % 4:
            fail(f"{p}embed_dim must be a multiple of 4 for an image encoder (2-D positions), got {cfg.embed_dim}")
    elif cfg.modality == "audio":
        c = cfg.audio
        if cfg.embed_dim % c.conv_pos_groups:
            fail(f"{p}embed_dim {cfg.embed_dim} is not divisible by {p}audio.conv_pos_groups {c.conv_pos_groups}")
    elif cfg.modality == "text":
        c = cfg.text
        if c.pad_id >= c.vocab_size:
            fail(f"{p}text.pad_id {c.pad_id} must be below {p}text.vocab_size {c.vocab_size}")


def _check_model(cfg: ModelConfig, path: str) -> None:
    p = _join(path, "")
    d, e = cfg.decoder, cfg.encoder
    if d.dim % d.groups or e.embed_dim % d.groups:
        raise ConfigError(f"{p}decoder.groups {d.groups} must divide {p}decoder.dim {d.dim} and "
                          f"{p}encoder.embed_dim {e.embed_dim}")


def config_from_dict(data: dict[str, Any], path: str = "") -> ModelConfig | EncoderConfig:
    """Rebuild a `ModelConfig` (has an "encoder" key) or an `EncoderConfig` from its dict form,
    validating every field.

    Args:
        path: where `data` sits in its file (e.g. "encoder"), the prefix of field names in errors.

    Raises:
        ConfigError: a field is unknown, missing, of the wrong type or out of range (named by path).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'the config'} must be an object, got {_got(data)}")
    if "encoder" in data:
        model = _build(ModelConfig, data, path)
        check_encoder(model.encoder, _join(path, "encoder"))
        _check_model(model, path)
        return model
    encoder = _build(EncoderConfig, data, path)
    check_encoder(encoder, path)
    return encoder


def head_from_dict(data: Any, path: str = "head") -> HeadConfig:
    """Rebuild a `HeadConfig` from its dict form, validating every field (named `head.<field>`).

    Raises:
        ConfigError: a field is unknown, missing, of the wrong type or out of range."""
    return _build(HeadConfig, data, path)
