"""data2vec 2.0 models: input encoders per modality, the shared post-LN Transformer, the conv
decoder, masking, targets, the EMA teacher, heads, presets and checkpoints.

Names are imported lazily, so that the torch-free parts (`d2v.model.config`,
`d2v.model.checkpoint_config`, `d2v.model.safetensors_header`) can be read without torch, as the
onnxruntime server does.
"""

import importlib
from typing import Any

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

_HOMES = {
    "d2v.model.builder": ("build_data2vec", "build_encoder", "build_head", "build_teacher"),
    "d2v.model.config": ("MODALITIES", "AudioConfig", "DecoderConfig", "EMAConfig", "EncoderConfig", "HeadConfig",
                         "ImageConfig", "MaskConfig", "ModelConfig", "TargetConfig", "TextConfig",
                         "config_from_dict"),
    "d2v.model.data2vec": ("Data2Vec", "Data2VecOutput", "data2vec_loss", "teacher_targets"),
    "d2v.model.ema": ("EMATeacher", "annealed_decay"),
    "d2v.model.encoder": ("Data2VecEncoder",),
    "d2v.model.presets": ("preset", "preset_names"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'd2v.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
