"""What goes into an ONNX graph: wrappers with fixed input/output names per modality, the dynamic
axes, and seeded example inputs (batch of one, padded batches, several lengths) for tracing and
for the parity check.

Graph inputs: images `pixel_values` (B, C, H, W); audio `waveform` (B, L) and `padding_mask` (B, L);
text `input_ids` (B, T) and `padding_mask` (B, T). Padding masks are bool, True at padding.
Outputs of embed.onnx: `token_states` (B, T', D), `token_padding_mask` (B, T') and `pooled_embedding`
(B, D, the model's default pooling); classify.onnx (classification heads): `logits` (B, C);
emissions.onnx (CTC heads): `emissions` (B, T', V), per-frame vocabulary logits whose padded frames
hold 0 for the blank and -1e4 elsewhere, and `frame_padding_mask` (B, T').
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from d2v.model.checkpoint import CheckpointConfig
from d2v.model.encoder import Data2VecEncoder
from d2v.model.modality import min_samples

__all__ = ["EMBED_OUTPUTS", "EMISSIONS_OUTPUTS", "ClassifyGraph", "EmbedGraph", "EmissionsGraph", "GraphSpec",
           "graph_spec", "parity_inputs"]

EMBED_OUTPUTS = ["token_states", "token_padding_mask", "pooled_embedding"]
EMISSIONS_OUTPUTS = ["emissions", "frame_padding_mask"]
MASK_OUTPUTS = ("token_padding_mask", "frame_padding_mask")
"""Boolean outputs: compared exactly, never as numbers."""


@dataclass(frozen=True)
class GraphSpec:
    input_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    """Per input: axis -> name, as written to config.json."""
    min_length: int
    """Shortest length along the dynamic length axis the graph is traced for (0: no length axis)."""
    max_length: int | None


def graph_spec(config: CheckpointConfig) -> GraphSpec:
    """Input names and dynamic axes of a checkpoint's graphs."""
    modality = config.modality
    if modality == "image":
        return GraphSpec(["pixel_values"], {"pixel_values": {0: "batch"}}, 0, None)
    if modality == "audio":
        axes = {0: "batch", 1: "samples"}
        # the shortest input the conv feature extractor turns into two frames
        return GraphSpec(["waveform", "padding_mask"], {"waveform": axes, "padding_mask": axes},
                         min_samples(config.encoder.audio.conv_layers, 2), None)
    axes = {0: "batch", 1: "tokens"}
    return GraphSpec(["input_ids", "padding_mask"], {"input_ids": axes, "padding_mask": axes}, 2,
                     config.encoder.text.max_positions)


class EmbedGraph(nn.Module):
    """inputs -> (token_states, token_padding_mask, pooled_embedding)."""

    def __init__(self, model: Data2VecEncoder, pooling: str):
        super().__init__()
        self.model = model
        self.pooling = pooling

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        tokens, pad = self.model.forward_features(x, padding_mask)
        if pad is None:  # images: no padding, but every graph has the same outputs
            pad = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return tokens, pad, self.model.pool(tokens, pad, self.pooling)


class ClassifyGraph(nn.Module):
    """inputs -> logits."""

    def __init__(self, model: Data2VecEncoder):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.model.forward_head(*self.model.forward_features(x, padding_mask))


class EmissionsGraph(nn.Module):
    """CTC models: audio -> (emissions, frame_padding_mask), what a greedy decoder reads."""

    def __init__(self, model: Data2VecEncoder):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        tokens, pad = self.model.forward_features(x, padding_mask)
        if pad is None:
            pad = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return self.model.forward_head(tokens, pad), pad


def _padded(rows: list[Tensor], pad_value: float) -> tuple[Tensor, Tensor]:
    n = max(len(r) for r in rows)
    x = torch.full((len(rows), n), pad_value, dtype=rows[0].dtype)
    mask = torch.ones(len(rows), n, dtype=torch.bool)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
        mask[i, : len(r)] = False
    return x, mask


def parity_inputs(config: CheckpointConfig, seed: int = 0) -> list[tuple[Tensor, ...]]:
    """Seeded inputs covering a batch of one, padded batches and several lengths; the first one
    (a batch of two) is used for tracing."""
    g = torch.Generator().manual_seed(seed)
    enc = config.encoder
    if config.modality == "image":
        c = enc.image
        return [(torch.randn(b, c.in_chans, c.image_size, c.image_size, generator=g),) for b in (2, 1, 3)]
    if config.modality == "audio":
        rate = enc.audio.sample_rate
        sets = []
        for seconds in ([1.0, 0.7], [1.3], [2.5, 1.1, 0.6]):
            rows = [torch.randn(int(s * rate), generator=g) * 0.1 for s in seconds]
            sets.append(_padded(rows, 0.0))
        return sets
    c = enc.text
    sets = []
    for lengths in ([12, 7], [7], [c.max_positions, 17, 5, 2]):
        rows = []
        for n in lengths:
            ids = torch.randint(4, c.vocab_size, (n,), generator=g)
            ids[0], ids[-1] = 0, 2  # <s> ... </s>
            rows.append(ids)
        sets.append(_padded(rows, c.pad_id))
    return sets
