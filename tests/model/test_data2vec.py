"""data2vec 2.0 pretraining: student outputs, teacher targets, gradients, the loss against a hand
computation, and a few optimizer steps on real data for every modality."""

import pytest
import torch
from realdata import byte_tokens, pad_waveforms, tiny_config

from d2v.model import build_data2vec, build_teacher, data2vec_loss, teacher_targets
from d2v.model.masking import mask_info

MODALITIES = ["image", "audio", "text"]
D = 32


@pytest.fixture(scope="module")
def batches(digit_images, spoken_digits, glosses):
    """A small real batch per modality: (input, raw padding mask or None)."""
    wav, wav_pad = pad_waveforms(spoken_digits[:4])
    return {
        "image": (digit_images[0][:4], None),
        "audio": (wav, wav_pad),
        "text": (byte_tokens(glosses[:6], vocab=4000, max_len=40), None),
    }


def _setup(modality, seed=0):
    torch.manual_seed(seed)
    cfg = tiny_config(modality)
    student = build_data2vec(cfg)
    return student, build_teacher(student, cfg), cfg


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("modality", MODALITIES)
def test_student_outputs(modality, batches):
    student, teacher, cfg = _setup(modality)
    x, pad = batches[modality]
    student.eval()
    enc = student.encoder.input_encoder
    feats, fpad = enc.local_features(x, pad)
    B, T, _ = feats.shape
    M = cfg.mask.clone_batch
    out = student(feats, fpad, generator=_gen())
    assert out.predictions.shape == (B * M, T, D)
    assert torch.isfinite(out.predictions).all()
    assert out.info.mask.shape == (B * M, T)
    if modality == "image":
        assert out.cls.shape == (B * M, D)
    else:
        assert out.cls is None
    if fpad is None:
        assert out.padding_mask is None
    else:
        assert torch.equal(out.padding_mask, fpad.repeat_interleave(M, 0))
        assert not (out.info.mask & out.padding_mask).any()  # padding is never masked
    y = teacher_targets(teacher, x, feats, fpad, student.target)
    assert y.shape == (B, T, D) and y.dtype == torch.float32  # CLS stripped for images
    if fpad is not None:
        assert (y[fpad] == 0).all()


@pytest.mark.parametrize("modality", MODALITIES)
def test_every_student_parameter_gets_a_gradient(modality, batches):
    student, teacher, _ = _setup(modality)
    x, pad = batches[modality]
    student.train()
    torch.manual_seed(0)
    out = data2vec_loss(student, teacher, x, pad, generator=_gen())
    assert torch.isfinite(out.loss)
    out.loss.backward()
    trainable = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    assert trainable
    for name, p in trainable:
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"
    assert not teacher.model.training
    for name, p in teacher.model.named_parameters():
        assert not p.requires_grad and p.grad is None, name


@pytest.mark.parametrize("modality", MODALITIES)
def test_student_and_targets_are_padding_invariant(modality, batches):
    """Each sample of a padded batch, with its own M masks, gives the same predictions (and CLS)
    and the same targets as that sample alone, unpadded: padding and the other rows' visible
    counts never leak in."""
    student, teacher, cfg = _setup(modality)
    student.eval()
    student.mask_noise_std = 0.0  # the noise tensor's shape depends on the batch
    x, pad = batches[modality]
    enc = student.encoder.input_encoder
    M = cfg.mask.clone_batch
    with torch.no_grad():
        feats, fpad = enc.local_features(x, pad)
        B, T, _ = feats.shape
        mask = torch.rand(B * M, T, generator=_gen(9)) < torch.linspace(0.2, 0.8, B * M)[:, None]
        out = student(feats, fpad, mask)
        y = teacher_targets(teacher, x, feats, fpad, student.target)
        for b in range(B):
            if modality == "audio":
                xb, pb = x[b:b + 1, : int((~pad[b]).sum())], None
            elif modality == "text":
                xb, pb = x[b:b + 1, : int(x[b].ne(1).sum())], None
            else:
                xb, pb = x[b:b + 1], None
            fb, fpb = enc.local_features(xb, pb)
            n = fb.shape[1]
            assert fpad is None or int((~fpad[b]).sum()) == n
            rows = slice(b * M, (b + 1) * M)
            alone = student(fb, fpb, mask[rows, :n])
            torch.testing.assert_close(alone.predictions, out.predictions[rows, :n], atol=1e-5, rtol=1e-5)
            if out.cls is not None:
                torch.testing.assert_close(alone.cls, out.cls[rows], atol=1e-5, rtol=1e-5)
            yb = teacher_targets(teacher, xb, fb, fpb, student.target)
            torch.testing.assert_close(yb[0], y[b, :n], atol=1e-5, rtol=1e-5)


def _hand_loss(pred, cls, y, mask, pad, M, scale, cls_weight):
    """The reference objective with explicit loops: sum over masked real positions of
    scale * ||pred - y||^2 divided by their count, plus cls_weight * scale * ||cls - mean(y)||^2 for
    every copy."""
    total, n = 0.0, 0
    for r in range(pred.shape[0]):
        b = r // M  # copy r belongs to sample b (repeat_interleave order)
        for t in range(pred.shape[1]):
            if mask[r, t] and (pad is None or not pad[r, t]):
                total += float(((pred[r, t].double() - y[b, t].double()) ** 2).sum()) * scale
                n += 1
    loss = total / n
    if cls is not None and cls_weight > 0:
        for r in range(cls.shape[0]):
            b = r // M
            real = y[b] if pad is None else y[b][~pad[r]]
            loss += cls_weight * scale * float(((cls[r].double() - real.double().mean(0)) ** 2).sum())
    return loss, n


@pytest.mark.parametrize("modality", MODALITIES)
def test_loss_matches_hand_computation(modality, batches):
    student, teacher, cfg = _setup(modality)
    x, pad = batches[modality]
    student.eval()  # no dropout; the decoder noise is replayed with the same seed
    enc = student.encoder.input_encoder
    feats, fpad = enc.local_features(x, pad)
    B, T, _ = feats.shape
    M = cfg.mask.clone_batch
    mask = torch.rand(B * M, T, generator=_gen(3)) < 0.6  # explicit; rows differ in visible counts
    if fpad is not None:
        mask[:, 0] = True  # also masked bits at padding, which the loss must ignore
        mask |= fpad.repeat_interleave(M, 0) & (torch.rand(B * M, T, generator=_gen(4)) < 0.5)

    torch.manual_seed(11)
    out = data2vec_loss(student, teacher, x, pad, mask=mask)
    with torch.no_grad():
        torch.manual_seed(11)
        s = student(feats, fpad, mask)
        y = teacher_targets(teacher, x, feats, fpad, student.target)
    scale = D ** -0.5 if cfg.loss_scale is None else cfg.loss_scale
    assert scale == {"image": D ** -0.5, "audio": D ** -0.5, "text": 1.0}[modality]
    rep_pad = None if fpad is None else fpad.repeat_interleave(M, 0)
    expected, n = _hand_loss(s.predictions, s.cls, y, mask, rep_pad, M, scale, cfg.cls_loss)
    assert cfg.cls_loss == (0.01 if modality == "image" else 0.0)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert out.logs["masked"] == n
    regression, _ = _hand_loss(s.predictions, None, y, mask, rep_pad, M, scale, 0.0)
    assert out.logs["regression_loss"] == pytest.approx(regression, rel=1e-5)
    visible = ~mask if rep_pad is None else ~mask & ~rep_pad
    assert out.logs["visible"] == float(visible.sum())


def test_explicit_loss_scale_and_cls_weight(batches):
    student, teacher, _ = _setup("image")
    x, _ = batches["image"]
    student.eval()
    student.loss_scale, student.cls_loss = 0.3, 0.5
    feats, _ = student.encoder.input_encoder.local_features(x)
    mask = torch.rand(4 * 3, 64, generator=_gen(5)) < 0.7
    torch.manual_seed(2)
    out = data2vec_loss(student, teacher, x, mask=mask)
    with torch.no_grad():
        torch.manual_seed(2)
        s = student(feats, None, mask)
        y = teacher_targets(teacher, x, feats, None, student.target)
    expected, _ = _hand_loss(s.predictions, s.cls, y, mask, None, 3, 0.3, 0.5)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert out.logs["cls_loss"] > 0


def test_teacher_input_per_modality(batches):
    """Images: the teacher encodes the raw image with its own EMA patch embedding. Audio and text:
    it reads the student's local features and ignores the raw input."""
    student, teacher, _ = _setup("image")
    x, _ = batches["image"]
    feats, _ = student.encoder.input_encoder.local_features(x)
    y = teacher_targets(teacher, x, feats, None, student.target)
    other_features = torch.randn_like(feats)
    torch.testing.assert_close(teacher_targets(teacher, x, other_features, None, student.target), y)
    with torch.no_grad():
        teacher.model.input_encoder.local_encoder.proj.weight.mul_(2.0)
    assert not torch.allclose(teacher_targets(teacher, x, feats, None, student.target), y)

    for modality in ["audio", "text"]:
        student, teacher, _ = _setup(modality)
        x, pad = batches[modality]
        feats, fpad = student.encoder.input_encoder.local_features(x, pad)
        y = teacher_targets(teacher, x, feats, fpad, student.target)
        garbage = torch.zeros_like(x)
        torch.testing.assert_close(teacher_targets(teacher, garbage, feats, fpad, student.target), y)
        assert not torch.allclose(teacher_targets(teacher, x, feats * 1.5, fpad, student.target), y)


def test_teacher_sees_the_whole_input(batches):
    """Targets come from the unmasked input: equal to the teacher's blocks run on all tokens."""
    student, teacher, _ = _setup("text")
    x, _ = batches["text"]
    feats, fpad = student.encoder.input_encoder.local_features(x)
    y = teacher_targets(teacher, x, feats, fpad, student.target)
    all_visible = mask_info(torch.zeros(fpad.shape, dtype=torch.bool), fpad)
    ie = teacher.model.input_encoder
    with torch.no_grad():
        _, layers = teacher.model.forward_layers(ie.contextualize(feats, fpad, all_visible))
    ref = student.make_targets(layers, all_visible.kept_padding_mask)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


def test_masks_come_from_the_generator(batches):
    student, teacher, _ = _setup("audio")
    x, pad = batches["audio"]
    student.eval()
    torch.manual_seed(0)
    a = data2vec_loss(student, teacher, x, pad, generator=_gen(7))
    torch.manual_seed(0)
    b = data2vec_loss(student, teacher, x, pad, generator=_gen(7))
    torch.manual_seed(0)
    c = data2vec_loss(student, teacher, x, pad, generator=_gen(8))
    assert torch.equal(a.loss, b.loss) and not torch.equal(a.loss, c.loss)


@pytest.mark.parametrize("modality", MODALITIES)
def test_optimizer_steps_lower_the_loss(modality, batches):
    """15 AdamW steps on one real batch with fixed masks; the EMA teacher is updated every step. The
    text decoder's projections start from BERT init (N(0, 0.02), as the reference), so its predictions
    start near zero and need a larger step to fall as far in 15 updates."""
    student, teacher, _ = _setup(modality)
    x, pad = batches[modality]
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3 if modality == "text" else 1e-3)
    student.train()
    losses = []
    for step in range(15):
        torch.manual_seed(0)  # same dropout and decoder noise every step
        out = data2vec_loss(student, teacher, x, pad, generator=_gen(0))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        teacher.update(student.encoder, step)
        losses.append(float(out.loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses


def test_masking_and_target_settings_are_typed_and_shown():
    cfg = tiny_config("audio")
    student = build_data2vec(cfg)
    assert student.mask == cfg.mask and student.target == cfg.target and student.clone_batch == cfg.mask.clone_batch
    cfg.mask.mask_prob = 0.1  # the module keeps its own copy
    assert student.mask.mask_prob != 0.1
    text = repr(student)
    assert "mask=MaskConfig(kind='block'" in text and f"target=TargetConfig(top_k={cfg.target.top_k}" in text


@pytest.mark.parametrize("modality", MODALITIES)
def test_a_batch_without_padding_runs_without_padding_masks(modality, batches):
    """Equal lengths (cropped audio, text cut to its shortest row, images) with an all-False padding
    mask: no block of the student or the teacher and no decoder layer is handed a padding mask."""
    student, teacher, _ = _setup(modality)
    x, pad = batches[modality]
    if modality == "audio":
        x = x[:, : int((~pad).sum(1).min())]
    elif modality == "text":
        x = x[:, : int(x.ne(1).sum(1).min())]
    pad = None if modality == "image" else torch.zeros(x.shape, dtype=torch.bool)
    handed = []
    for module in [*student.encoder.modules(), *teacher.model.modules(), student.decoder]:
        if type(module).__name__ in ("Block", "ConvDecoder"):
            module.register_forward_pre_hook(lambda m, args: handed.append(args[1] if len(args) > 1 else None))
    out = data2vec_loss(student, teacher, x, pad, generator=_gen())
    assert torch.isfinite(out.loss) and len(handed) > 3
    assert all(p is None for p in handed)
