"""data2vec 2.0 models: input encoders per modality, the shared post-LN Transformer, the conv
decoder, masking, targets, the EMA teacher, heads, presets and checkpoints.

Names are imported lazily, so that the torch-free parts (`d2v.model.config`,
`d2v.model.checkpoint_config`, `d2v.model.safetensors_header`) can be read without torch, as the
onnxruntime server does.
"""

from d2v.lazy import lazy_exports

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
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
