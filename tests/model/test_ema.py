"""The EMA teacher: decay schedule, the update formula, what it owns, and that it never trains."""

import pytest
import torch
from realdata import tiny_config

from d2v.model import EMATeacher, HeadConfig, annealed_decay, build_data2vec, build_encoder, build_teacher


def test_annealed_decay():
    start, end, T = 0.999, 0.99999, 1000
    assert annealed_decay(0, start, end, T) == pytest.approx(start, abs=1e-12)
    assert annealed_decay(500, start, end, T) == pytest.approx((start + end) / 2, abs=1e-12)
    assert annealed_decay(250, start, end, T) == pytest.approx(start + 0.25 * (end - start), abs=1e-12)
    assert annealed_decay(T, start, end, T) == end
    assert annealed_decay(10 * T, start, end, T) == end
    assert annealed_decay(5, start, end, 0) == end  # no annealing
    # d(t) = end - (end - start) * (1 - t / T), the reference formula
    for t in [1, 37, 999]:
        assert annealed_decay(t, start, end, T) == pytest.approx(end - (end - start) * (1 - t / T), abs=1e-15)


def _student(modality, seed=0):
    torch.manual_seed(seed)
    cfg = tiny_config(modality)
    return build_data2vec(cfg), cfg


def _perturb_(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_update_follows_the_formula_on_every_parameter(modality):
    student, cfg = _student(modality)
    teacher = build_teacher(student, cfg)
    _perturb_(student.encoder)
    before = {k: v.clone() for k, v in teacher.model.named_parameters()}
    src = dict(student.encoder.named_parameters())
    step = 700
    d = teacher.update(student.encoder, step)
    assert d == pytest.approx(annealed_decay(step, cfg.ema.decay, cfg.ema.end_decay, cfg.ema.anneal_end_step))
    assert 0 < d < 1
    params = dict(teacher.model.named_parameters())
    assert params.keys() == before.keys() and len(params) > 0
    for name, p in params.items():
        expected = d * before[name] + (1 - d) * src[name].detach()
        torch.testing.assert_close(p, expected, atol=1e-7, rtol=1e-6, msg=name)


def test_frozen_parameters_and_buffers_are_copied():
    student, cfg = _student("image")
    teacher = build_teacher(student, cfg)
    enc = student.encoder
    enc.input_encoder.cls_token.requires_grad_(False)
    with torch.no_grad():
        enc.input_encoder.cls_token.fill_(3.0)
        enc.input_encoder.pos_embed.add_(1.0)
    teacher.update(enc, 0)
    t_enc = teacher.model.input_encoder
    assert torch.equal(t_enc.cls_token, enc.input_encoder.cls_token)
    assert torch.equal(t_enc.pos_embed, enc.input_encoder.pos_embed)

    student, cfg = _student("audio")
    teacher = build_teacher(student, cfg)
    with torch.no_grad():
        student.encoder.input_encoder.alibi.slopes.mul_(2.0)
    teacher.update(student.encoder, 0)
    assert torch.equal(teacher.model.input_encoder.alibi.slopes, student.encoder.input_encoder.alibi.slopes)


def test_what_the_teacher_owns():
    # images: an EMA copy of the patch embedding; audio/text: no local encoder, no decoder, no head
    for modality, has_local in [("image", True), ("audio", False), ("text", False)]:
        student, cfg = _student(modality)
        assert cfg.ema.ema_local_encoder is has_local
        teacher = build_teacher(student, cfg)
        names = [n for n, _ in teacher.model.named_parameters()]
        local = [n for n in names if ".local_encoder." in n]
        assert bool(local) is has_local, modality
        assert not any("decoder" in n for n in names)
        assert isinstance(teacher.model.input_encoder.local_encoder, torch.nn.Identity) is (not has_local)
        # the student keeps its own local encoder
        assert any(".local_encoder." in n for n, _ in student.encoder.named_parameters())

    enc = build_encoder(tiny_config("image").encoder, HeadConfig("mean_pool", ["a", "b"]))
    teacher = EMATeacher(enc, 0.9, 0.99, 10, True)
    assert teacher.model.head is None and enc.head is not None
    teacher.update(enc, 1)  # the student's head is simply not part of the teacher


def test_teacher_never_trains():
    student, cfg = _student("audio")
    teacher = build_teacher(student, cfg)
    student.train()
    assert not teacher.model.training and not any(m.training for m in teacher.model.modules())
    assert not any(p.requires_grad for p in teacher.model.parameters())
    _perturb_(student.encoder)
    teacher.update(student.encoder, 3)
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_decay_one_leaves_the_teacher_unchanged():
    student, _ = _student("text")
    teacher = EMATeacher(student.encoder, 1.0, 1.0, 100, False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    _perturb_(student.encoder)
    assert teacher.update(student.encoder, 50) == 1.0
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    # a schedule that ends at 1.0 (large audio) freezes the teacher after annealing
    teacher = EMATeacher(student.encoder, 0.9, 1.0, 10, False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    _perturb_(student.encoder, seed=2)
    assert teacher.update(student.encoder, 10) == 1.0
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_teacher_is_fp32_for_a_low_precision_student():
    student, cfg = _student("text")
    enc = student.encoder.to(torch.bfloat16)
    teacher = build_teacher(student, cfg)
    assert all(p.dtype == torch.float32 for p in teacher.model.parameters())
    teacher.update(enc, 0)
    assert all(p.dtype == torch.float32 for p in teacher.model.parameters())


def test_state_dict_round_trip():
    student, cfg = _student("image")
    a = build_teacher(student, cfg)
    _perturb_(student.encoder)
    b = build_teacher(student, cfg)
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v)
