"""Imported models for end-to-end tests: every kind `d2v convert` reads, converted once per session
(lazily, so a test pays only for what it uses) and exported once with `d2v export`.

- fairseq data2vec 2.0: the real reference checkpoints of tests/fixtures/fairseq_d2v2 (pretrained
  image, audio and text; the image classifier, with a labels file; the CTC speech recognizer), with
  the inputs and outputs fairseq computed from them;
- HuggingFace task models with random weights built here (`transformers`): text and audio sequence
  classifiers (labels from `id2label`) and an audio CTC model (`vocab.json`); the HF model objects
  are kept, as the reference their conversions are compared with.

A plain module (`from imported import ...`); the session fixture `imported` is in tests/conftest.py.
"""

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fairseq_d2v2"

FAIRSEQ = {"fairseq-image": "image", "fairseq-audio": "audio", "fairseq-text": "text",
           "fairseq-image-classifier": "image_finetuned", "fairseq-ctc": "audio_ctc"}
HF = ("hf-text-classifier", "hf-audio-classifier", "hf-ctc")
KINDS = (*FAIRSEQ, *HF)
"""Every imported model kind, by name."""

IMAGE_LABELS = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead", "electric ray", "stingray",
                "cock", "hen", "ostrich"]
"""The fairseq image classifier's --labels (its 10 classes, named as ImageNet's first ten)."""
TEXT_LABELS = {0: "negative", 1: "neutral", 2: "positive"}
AUDIO_LABELS = {0: "zero", 1: "one", 2: "two", 3: "three"}
CTC_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R"]
HF_TEXT_VOCAB = 96


def fairseq_fixture(kind: str) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The fixture of a fairseq kind: its checkpoint.pt, inputs and fairseq's outputs."""
    d = FIXTURES / FAIRSEQ[kind]
    return d / "checkpoint.pt", dict(np.load(d / "inputs.npz")), dict(np.load(d / "expected.npz"))


def _hf_audio_config(transformers: Any, **overrides: Any) -> Any:
    return transformers.Data2VecAudioConfig(**{
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "conv_dim": (32, 32, 32), "conv_kernel": (10, 3, 3), "conv_stride": (5, 2, 2), "num_conv_pos_embeddings": 2,
        "conv_pos_kernel_size": 5, "num_conv_pos_embedding_groups": 2, "attn_implementation": "eager", **overrides})


def build_hf(kind: str, directory: Path) -> Any:
    """A random-weight HF task model of `kind` saved to `directory` (with its vocab.json for CTC);
    returns the model, in eval mode."""
    import torch
    import transformers

    torch.manual_seed(0)
    if kind == "hf-text-classifier":
        config = transformers.Data2VecTextConfig(
            vocab_size=HF_TEXT_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
            eos_token_id=2, attn_implementation="eager", num_labels=3, id2label=TEXT_LABELS,
            label2id={v: k for k, v in TEXT_LABELS.items()})
        model = transformers.Data2VecTextForSequenceClassification(config)
    elif kind == "hf-audio-classifier":
        model = transformers.Data2VecAudioForSequenceClassification(_hf_audio_config(
            transformers, num_labels=4, id2label=AUDIO_LABELS, label2id={v: k for k, v in AUDIO_LABELS.items()},
            classifier_proj_size=24))
    elif kind == "hf-ctc":
        model = transformers.Data2VecAudioForCTC(_hf_audio_config(transformers, vocab_size=len(CTC_VOCAB),
                                                                  pad_token_id=0))
    else:
        raise ValueError(f"not an HF kind: {kind}")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # distinct values everywhere, so a swapped mapping cannot go unnoticed
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    model.eval()
    model.save_pretrained(directory)
    if kind == "hf-ctc":
        (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(CTC_VOCAB)}))
    return model


@dataclass
class Imported:
    """Converted (and exported) imported models under `root`, made on first use."""

    root: Path
    hf_models: dict[str, Any] = field(default_factory=dict)
    """The HF model each hf-* kind was converted from (the reference)."""
    _checkpoints: dict[str, Path] = field(default_factory=dict)
    _exports: dict[str, Path] = field(default_factory=dict)

    def checkpoint(self, kind: str) -> Path:
        """The d2v checkpoint directory `d2v convert` makes of this kind."""
        if kind not in self._checkpoints:
            from d2v.model.importers import convert

            out = self.root / kind
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "takes token ids only", dropped decoders: known and tested elsewhere
                if kind in FAIRSEQ:
                    labels = None
                    if kind == "fairseq-image-classifier":
                        labels = self.root / "imagenet_classes.txt"
                        labels.write_text("\n".join(IMAGE_LABELS) + "\n")
                    convert(fairseq_fixture(kind)[0], out, name=kind, labels=labels)
                else:
                    source = self.root / f"{kind}-hf"
                    self.hf_models[kind] = build_hf(kind, source)
                    convert(source, out, name=kind)
            self._checkpoints[kind] = out
        return self._checkpoints[kind]

    def export(self, kind: str) -> Path:
        """The `d2v export` directory of this kind's checkpoint."""
        if kind not in self._exports:
            from d2v.export import export_checkpoint

            out = self.root / f"{kind}-onnx"
            export_checkpoint(self.checkpoint(kind), out)
            self._exports[kind] = out
        return self._exports[kind]
