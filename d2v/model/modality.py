"""What the rest of d2v needs to know about a modality without building a model: the modalities,
the tokens an input encoder puts before the real ones, which tokens pooling reads, and the audio
feature extractor's frame arithmetic. The model's modules use these same definitions, and the
server, the export and training read them from here. This module never imports torch.

Audio: the feature extractor is a stack of unpadded 1-D convolutions given as
`[channels, kernel, stride]` layers (`AudioConfig.conv_layers`); each turns L inputs into
floor((L - kernel) / stride) + 1 outputs, and no input gives fewer than 0.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

if TYPE_CHECKING:  # numpy is imported where pooling runs: the command line reads this module too
    import numpy as np

__all__ = ["HAS_CLS_TOKEN", "MODALITIES", "NUM_EXTRA_TOKENS", "Modality", "Pooling", "conv_frames", "min_samples",
           "pool_numpy", "receptive_field"]

Modality = Literal["image", "audio", "text"]
MODALITIES: tuple[str, ...] = ("image", "audio", "text")

Pooling = Literal["mean", "cls"]
"""How token states become one embedding: "mean" over the real tokens, or the "cls" (first) token."""

NUM_EXTRA_TOKENS: dict[str, int] = {"image": 1, "audio": 0, "text": 0}
"""Tokens before the real ones in an encoder's output: the image encoder prepends a CLS token; text's
<s> is part of the input, not an extra token."""

HAS_CLS_TOKEN: dict[str, bool] = {"image": True, "audio": False, "text": True}
"""Whether "cls" pooling is meaningful: the image encoder's prepended token, text's <s>."""

ConvLayers = Sequence[Sequence[int]]
N = TypeVar("N")


def conv_frames(samples: N, conv_layers: ConvLayers) -> N:
    """Frames the feature extractor makes of `samples` samples: an int, or an integer numpy array or
    torch tensor of lengths (the model's batched frame lengths use this with tensors)."""
    for _, k, s in conv_layers:
        samples = (samples - k) // s + 1
    return max(samples, 0) if isinstance(samples, int) else samples.clip(0)


def min_samples(conv_layers: ConvLayers, frames: int = 1) -> int:
    """The shortest input the feature extractor turns into `frames` frames (at least 1)."""
    n = frames
    for _, k, s in reversed(conv_layers):
        n = (n - 1) * s + k
    return n


def receptive_field(conv_layers: ConvLayers) -> int:
    """Samples one frame of the feature extractor sees, which is also the shortest input giving one frame."""
    return min_samples(conv_layers, 1)


def pool_numpy(tokens: "np.ndarray", padding_mask: "np.ndarray | None", pooling: str,
               num_extra_tokens: int) -> "np.ndarray":
    """(B, T, D) token states -> (B, D): the first token ("cls"), or the mean of the real tokens after
    the extra ones ("mean"); the same arithmetic as `d2v.model.heads.pool`, for runtimes without torch."""
    import numpy as np

    if pooling == "cls":
        return tokens[:, 0]
    x = tokens[:, num_extra_tokens:]
    if padding_mask is None:
        return x.mean(1)
    valid = ~padding_mask[:, num_extra_tokens:]
    x = np.where(valid[..., None], x, 0.0)
    return (x.sum(1) / np.maximum(valid.sum(1, keepdims=True), 1)).astype(np.float32)
