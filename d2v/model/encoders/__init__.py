"""Modality input encoders. Each one maps raw input to `Tokens` for the shared Transformer and
splits into `local_features` (run once per sample) and `contextualize` (run per masked copy): the
`InputEncoder` protocol."""

from d2v.model.encoders.audio import AudioEncoder, AudioLocalEncoder, FeatureExtractor, PositionalConv
from d2v.model.encoders.context import ContextEncoder, InputEncoder, Tokens
from d2v.model.encoders.image import ImageEncoder, PatchEmbed, sincos_2d
from d2v.model.encoders.text import TextEmbedding, TextEncoder

__all__ = [
    "AudioEncoder",
    "AudioLocalEncoder",
    "ContextEncoder",
    "FeatureExtractor",
    "ImageEncoder",
    "InputEncoder",
    "PatchEmbed",
    "PositionalConv",
    "TextEmbedding",
    "TextEncoder",
    "Tokens",
    "sincos_2d",
]
