"""data2vec 2.0 pretraining: the student (encoder + conv decoder) and the loss against the EMA
teacher's targets.

One pretraining step (Baevski et al. 2022, section 2; fairseq `Data2VecMultiModel.forward`):
1. the student's local encoder runs once per sample;
2. the teacher encodes the whole, unmasked input once and builds targets from its top K blocks;
3. the local features are repeated M times, each copy gets its own mask, masked tokens are dropped
   and the visible ones run through the context encoder and the shared blocks;
4. the decoder sees the visible outputs back at their positions, Gaussian noise at the masked ones,
   and predicts the targets there;
5. loss: scaled L2 at masked positions, averaged over masked tokens, plus (images) the CLS loss.
"""

from dataclasses import replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from d2v.model.config import MaskConfig, TargetConfig
from d2v.model.decoder import ConvDecoder
from d2v.model.ema import EMATeacher
from d2v.model.encoder import Data2VecEncoder
from d2v.model.masking import MaskInfo, decoder_input, draw_mask, mask_info
from d2v.model.targets import targets_from_config

__all__ = ["Data2Vec", "Data2VecOutput", "StudentOutput", "data2vec_loss", "teacher_targets", "without_empty"]


class StudentOutput(NamedTuple):
    predictions: Tensor
    """(B*M, T, D) decoder output at every position (only masked ones are trained)."""
    cls: Tensor | None
    """(B*M, D) the student's CLS output (images), else None."""
    info: MaskInfo
    padding_mask: Tensor | None
    """(B*M, T) token padding."""


class Data2VecOutput(NamedTuple):
    loss: Tensor
    """Scalar training loss."""
    logs: dict[str, float]
    """regression_loss, cls_loss, target_std, pred_std, masked (count), visible (count)."""


class Data2Vec(nn.Module):
    """The student: encoder plus convolutional decoder, and the pretraining settings (masking and
    targets as their typed configs, shown in the module's repr)."""

    def __init__(
        self,
        encoder: Data2VecEncoder,
        decoder: ConvDecoder,
        mask: MaskConfig,
        target: TargetConfig,
        decoder_input_dropout: float = 0.0,
        mask_noise_std: float = 0.01,
        loss_scale: float | None = None,
        cls_loss: float = 0.0,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.mask = replace(mask)  # copies: the module's settings do not follow later edits of a config
        self.target = replace(target)
        self.decoder_input_dropout = nn.Dropout(decoder_input_dropout)
        self.mask_noise_std = mask_noise_std
        self.loss_scale = loss_scale
        self.cls_loss = cls_loss

    @property
    def clone_batch(self) -> int:
        """M, the masked copies of each sample."""
        return self.mask.clone_batch

    def extra_repr(self) -> str:
        return (f"mask={self.mask}, target={self.target}, mask_noise_std={self.mask_noise_std}, "
                f"loss_scale={self.loss_scale}, cls_loss={self.cls_loss}")

    def make_mask(self, padding_mask: Tensor | None, batch: int, grid: tuple[int, ...],
                  generator: torch.Generator | None = None) -> Tensor:
        """(batch * M, prod(grid)) masks drawn by the mask settings (`masking.draw_mask`)."""
        return draw_mask(self.mask, grid, padding_mask, batch, generator)

    def make_targets(self, layer_outputs: list[Tensor], padding_mask: Tensor | None) -> Tensor:
        """The teacher's block outputs -> targets, by the target settings (`targets.make_targets`)."""
        return targets_from_config(layer_outputs, padding_mask, self.target)

    def forward(
        self,
        features: Tensor,
        padding_mask: Tensor | None,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> StudentOutput:
        """Student pass over M masked copies of already-computed local features.

        Args:
            features: (B, T, D) the student's local features (one row per sample).
            padding_mask: (B, T) token padding or None.
            mask: (B*M, T) True at masked positions; drawn with `generator` when None.

        Returns:
            StudentOutput with predictions (B*M, T, D).
        """
        enc = self.encoder.input_encoder
        B, T, _ = features.shape
        M = self.clone_batch
        if mask is None:
            mask = self.make_mask(padding_mask, B, enc.mask_grid(T), generator)
        mask = mask.to(features.device)  # drawn on the CPU (here or in the data loader)
        x = features.repeat_interleave(M, 0)  # (B*M, T, D)
        pad = None if padding_mask is None else padding_mask.repeat_interleave(M, 0)
        info = mask_info(mask, pad)
        out, _ = self.encoder.forward_layers(enc.contextualize(x, pad, info))  # (B*M, n_extra+K, D)
        n_extra = enc.num_extra_tokens
        cls = out[:, 0] if n_extra else None
        visible = self.decoder_input_dropout(out[:, n_extra:])
        full = decoder_input(visible, info, self.mask_noise_std)  # (B*M, T, D): visible tokens, noise at masked
        return StudentOutput(self.decoder(full, pad), cls, info, pad)


@torch.no_grad()
def teacher_targets(
    teacher: EMATeacher,
    x: Tensor,
    student_features: Tensor,
    padding_mask: Tensor | None,
    target: TargetConfig,
) -> Tensor:
    """Teacher pass on the unmasked input: (B, T, D) float32 targets.

    With `ema_local_encoder` the teacher encodes `x` itself; otherwise it reads the student's
    local features."""
    enc = teacher.model.input_encoder
    if teacher.ema_local_encoder:
        features, padding_mask = enc.local_features(x, padding_mask)
    else:
        features = student_features.detach().float()  # the teacher's weights are fp32
    _, layers = teacher.model.forward_layers(enc.contextualize(features, padding_mask))
    n_extra = enc.num_extra_tokens
    return targets_from_config([t[:, n_extra:] for t in layers], padding_mask, target)


def without_empty(padding_mask: Tensor | None) -> Tensor | None:
    """None for a padding mask without a True (a batch of equal lengths: cropped audio, packed text),
    so that attention and the decoder skip masks that change nothing; the mask itself otherwise.
    A clip's result is the same either way (the models compute padded and unpadded rows by one
    formula), so this changes speed, not what is learned."""
    if padding_mask is None or bool(padding_mask.any()):
        return padding_mask
    return None


def _std(x: Tensor) -> float:
    """fairseq `compute_var`: mean over channels of the std over rows."""
    x = x.float().reshape(-1, x.shape[-1])
    if x.shape[0] < 2:
        return float("nan")
    return float(torch.sqrt(x.var(dim=0) + 1e-6).mean())


def data2vec_loss(
    student: Data2Vec,
    teacher: EMATeacher,
    x: Tensor,
    padding_mask: Tensor | None = None,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Data2VecOutput:
    """One data2vec 2.0 pretraining forward: teacher once, student on M masked copies, loss.

    Args:
        x: raw input, (B, C, H, W) images, (B, L) waveforms or (B, T) token ids.
        padding_mask: raw-input padding (B, L) / (B, T), True at padding.
        mask: (B*M, T_tokens) masks, drawn with `generator` when None.

    Returns:
        The loss, normalized by the number of masked tokens as in the reference, and logs.
    """
    enc = student.encoder.input_encoder
    features, token_padding = enc.local_features(x, without_empty(padding_mask))  # (B, T, D)
    token_padding = without_empty(token_padding)  # no padding: no mask built and applied in every layer
    y = teacher_targets(teacher, x, features, token_padding, student.target)  # (B, T, D)
    out = student(features, token_padding, mask, generator)
    M = student.clone_batch
    masked = out.info.mask if out.padding_mask is None else out.info.mask & ~out.padding_mask
    y_rep = y.repeat_interleave(M, 0)  # (B*M, T, D)
    pred = out.predictions[masked].float()  # (N_masked, D)
    target = y_rep[masked]
    scale = student.loss_scale if student.loss_scale is not None else pred.shape[-1] ** -0.5
    n_masked = pred.shape[0]
    regression = F.mse_loss(pred, target, reduction="sum") * scale
    loss = regression / max(n_masked, 1)
    cls_term = torch.zeros((), device=loss.device)
    if out.cls is not None and student.cls_loss > 0:
        if token_padding is None:
            cls_target = y.mean(1)
        else:
            valid = (~token_padding).unsqueeze(-1).float()
            cls_target = (y * valid).sum(1) / valid.sum(1).clamp(min=1)
        cls_target = cls_target.repeat_interleave(M, 0)  # (B*M, D)
        # reference: each copy's CLS term weighs cls_loss x its summed, scaled squared error
        cls_term = student.cls_loss * F.mse_loss(out.cls.float(), cls_target, reduction="sum") * scale
        loss = loss + cls_term
    logs = {
        "regression_loss": float(regression.detach()) / max(n_masked, 1),
        "cls_loss": float(cls_term.detach()),
        "target_std": _std(target),
        "pred_std": _std(pred.detach()),
        "masked": float(n_masked),
        "visible": float((~out.info.kept_padding_mask).sum()),
    }
    return Data2VecOutput(loss, logs)
