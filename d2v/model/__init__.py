"""data2vec 2.0 models: input encoders per modality, the shared post-LN Transformer, the conv
decoder, masking, targets, the EMA teacher, heads, presets and checkpoints."""

from d2v.model.builder import build_data2vec, build_encoder, build_head, build_teacher
from d2v.model.config import (
    MODALITIES,
    AudioConfig,
    DecoderConfig,
    EMAConfig,
    EncoderConfig,
    HeadConfig,
    ImageConfig,
    MaskConfig,
    ModelConfig,
    TargetConfig,
    TextConfig,
    config_from_dict,
)
from d2v.model.data2vec import Data2Vec, Data2VecOutput, data2vec_loss, teacher_targets
from d2v.model.ema import EMATeacher, annealed_decay
from d2v.model.encoder import Data2VecEncoder
from d2v.model.presets import preset, preset_names

__all__ = [
    "MODALITIES",
    "AudioConfig",
    "Data2Vec",
    "Data2VecEncoder",
    "Data2VecOutput",
    "DecoderConfig",
    "EMAConfig",
    "EMATeacher",
    "EncoderConfig",
    "HeadConfig",
    "ImageConfig",
    "MaskConfig",
    "ModelConfig",
    "TargetConfig",
    "TextConfig",
    "annealed_decay",
    "build_data2vec",
    "build_encoder",
    "build_head",
    "build_teacher",
    "config_from_dict",
    "data2vec_loss",
    "preset",
    "preset_names",
    "teacher_targets",
]
