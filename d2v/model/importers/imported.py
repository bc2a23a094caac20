"""What every importer produces: a foreign model mapped onto d2v, ready to build and save."""

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from d2v.model.builder import build_encoder
from d2v.model.checkpoint import check_state_dict
from d2v.model.config import EncoderConfig, HeadConfig
from d2v.model.encoder import Data2VecEncoder

__all__ = ["Imported", "build_imported"]


@dataclass
class Imported:
    """A foreign model mapped onto d2v: everything needed to build and save the encoder."""

    model_type: str
    """What the source was (HF model_type, or the fairseq model name)."""
    encoder: EncoderConfig
    state: dict[str, Tensor]
    """Weights under the names of `build_encoder(encoder, head).state_dict()`."""
    preprocessing: dict[str, Any]
    """The checkpoint's preprocessing section (image size and normalization, sample rate and
    normalization, or special token ids)."""
    warnings: list[str] = field(default_factory=list)
    """What the conversion dropped or cannot vouch for."""
    head: HeadConfig | None = None
    """The task head kept from the source (classifier or CTC), if any."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Extra provenance facts (e.g. which weights were taken: student or EMA teacher)."""


def build_imported(imported: Imported) -> Data2VecEncoder:
    """Build the encoder (and head) of `imported` and load its weights (float32, eval mode).

    Raises:
        CheckpointError: the mapped weights do not fit the encoder (missing, unexpected, wrong shape).
    """
    model = build_encoder(imported.encoder, imported.head)
    check_state_dict(model.state_dict(), imported.state, f"the mapped {imported.model_type} weights")
    model.load_state_dict(imported.state, strict=True)
    return model.eval()
