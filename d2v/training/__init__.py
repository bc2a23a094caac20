"""Training: datasets and readers, `d2v data` (the demo datasets), `d2v pretrain` (data2vec 2.0
self-supervised pretraining) and `d2v finetune` (classification), on one process or under torchrun.

`training` imports `d2v.model`, never `d2v.export` or `d2v.server`.
"""

from d2v.training.config import FinetuneConfig, PretrainConfig

__all__ = ["FinetuneConfig", "PretrainConfig"]
