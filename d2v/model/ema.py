"""The EMA teacher of data2vec 2.0 as a standalone object (fairseq `EMAModule` +
`get_annealed_rate`). Nothing steps it implicitly: training calls `update(student, step)` after
each optimizer step.

The teacher is an fp32 copy of the student's encoder, always in eval mode, with no gradients. What it
owns depends on the modality: with `ema_local_encoder` (images) it keeps its own EMA copy of the local
encoder and encodes raw input itself; otherwise (audio, text) it has no local encoder and reads the
student's local features. Decoder and head are never part of it.
"""

import copy

import torch
from torch import nn

from d2v.model.encoder import Data2VecEncoder

__all__ = ["EMATeacher", "annealed_decay"]


def annealed_decay(step: int, start: float, end: float, anneal_end_step: int) -> float:
    """Linear from `start` at step 0 to `end` at `anneal_end_step`, constant after."""
    if step >= anneal_end_step or anneal_end_step <= 0:
        return end
    return end - (end - start) * (1.0 - step / anneal_end_step)


class EMATeacher:
    def __init__(self, student: Data2VecEncoder, decay: float, end_decay: float, anneal_end_step: int,
                 ema_local_encoder: bool):
        self.decay_start, self.decay_end, self.anneal_end_step = decay, end_decay, anneal_end_step
        self.ema_local_encoder = ema_local_encoder
        self.model = copy.deepcopy(student).float()
        self.model.head = None
        if not ema_local_encoder:
            self.model.input_encoder.local_encoder = nn.Identity()
        self.model.eval().requires_grad_(False)

    def decay(self, step: int) -> float:
        return annealed_decay(step, self.decay_start, self.decay_end, self.anneal_end_step)

    @torch.no_grad()
    def update(self, student: Data2VecEncoder, step: int) -> float:
        """ema = d * ema + (1 - d) * student for every teacher parameter; frozen parameters and
        buffers are copied. Returns the decay d used. A decay of 1 leaves the teacher unchanged."""
        d = self.decay(step)
        if d >= 1.0:
            return d
        src_params = dict(student.named_parameters())
        for name, p in self.model.named_parameters():
            s = src_params[name]
            if s.requires_grad:
                p.mul_(d).add_(s.detach().float(), alpha=1.0 - d)
            else:
                p.copy_(s.detach())
        src_buffers = dict(student.named_buffers())
        for name, b in self.model.named_buffers():
            b.copy_(src_buffers[name])
        return d

    def to(self, device: torch.device | str) -> "EMATeacher":
        self.model.to(device)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
