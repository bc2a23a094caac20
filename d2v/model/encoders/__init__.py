"""Modality input encoders. Each one maps raw input to `Tokens` for the shared Transformer and
splits into `local_features` (run once per sample) and `contextualize` (run per masked copy)."""

from d2v.model.encoders.audio import AudioEncoder, AudioLocalEncoder, FeatureExtractor, PositionalConv
from d2v.model.encoders.context import ContextEncoder, Tokens
from d2v.model.encoders.image import ImageEncoder, PatchEmbed, sincos_2d
from d2v.model.encoders.text import TextEmbedding, TextEncoder

__all__ = [
    "AudioEncoder",
    "AudioLocalEncoder",
    "ContextEncoder",
    "FeatureExtractor",
    "ImageEncoder",
    "PatchEmbed",
    "PositionalConv",
    "TextEmbedding",
    "TextEncoder",
    "Tokens",
    "sincos_2d",
]
