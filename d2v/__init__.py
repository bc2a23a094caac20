"""d2v: train, export and serve data2vec 2.0 models for images, speech and text."""

__version__ = "0.1.0"
