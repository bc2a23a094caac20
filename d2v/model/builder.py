"""Builders: wire configs into modules. Modules themselves take only plain arguments."""

from torch import nn

from d2v.model.alibi import ALiBi
from d2v.model.config import HEAD_TYPES, EncoderConfig, HeadConfig, ModelConfig
from d2v.model.data2vec import Data2Vec
from d2v.model.decoder import ConvDecoder
from d2v.model.ema import EMATeacher
from d2v.model.encoder import Data2VecEncoder
from d2v.model.encoders import (
    AudioEncoder,
    AudioLocalEncoder,
    ContextEncoder,
    ImageEncoder,
    PositionalConv,
    TextEmbedding,
    TextEncoder,
)
from d2v.model.heads import CTCHead, FirstTokenHead, MeanLinearHead, MeanPoolHead
from d2v.model.transformer import Block, bert_init_

__all__ = ["build_data2vec", "build_encoder", "build_head", "build_teacher"]


def _blocks(cfg: EncoderConfig, start: int, count: int) -> list[Block]:
    total = cfg.prenet_depth + cfg.depth
    rates = [cfg.drop_path * i / max(total - 1, 1) for i in range(total)]  # linear over all blocks
    return [
        Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps, cfg.dropout, cfg.attention_dropout,
              cfg.activation_dropout, cfg.post_mlp_dropout, rates[start + i])
        for i in range(count)
    ]


def _context_encoder(cfg: EncoderConfig, norm: nn.Module) -> ContextEncoder:
    return ContextEncoder(norm, cfg.prenet_dropout, _blocks(cfg, 0, cfg.prenet_depth))


def _image_encoder(cfg: EncoderConfig) -> ImageEncoder:
    c = cfg.image
    ctx = _context_encoder(cfg, nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps))
    enc = ImageEncoder(c.image_size, c.patch_size, c.in_chans, cfg.embed_dim, ctx, c.stored_pos_embed)
    enc.context_encoder.apply(bert_init_)
    return enc


def _audio_encoder(cfg: EncoderConfig) -> AudioEncoder:
    c = cfg.audio
    local = AudioLocalEncoder(c.conv_layers, c.conv_bias, cfg.embed_dim)  # PyTorch-default projection init
    pos_eps = cfg.norm_eps if c.conv_pos_norm_eps is None else c.conv_pos_norm_eps
    pos = PositionalConv(cfg.embed_dim, c.conv_pos_depth, c.conv_pos_kernel, c.conv_pos_groups, pos_eps)
    ctx = _context_encoder(cfg, nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps))
    ctx.apply(bert_init_)
    alibi = ALiBi(cfg.num_heads) if c.use_alibi else None
    return AudioEncoder(local, pos, alibi, ctx, c.normalize)


def _text_encoder(cfg: EncoderConfig) -> TextEncoder:
    c = cfg.text
    embed_eps = cfg.norm_eps if c.embed_norm_eps is None else c.embed_norm_eps
    local = TextEmbedding(c.vocab_size, c.max_positions, c.pad_id, cfg.embed_dim, embed_eps, cfg.dropout)
    # the reference text encoder has no context-encoder LayerNorm unless it has prenet blocks
    norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps) if cfg.prenet_depth > 0 else nn.Identity()
    enc = TextEncoder(local, _context_encoder(cfg, norm))
    enc.apply(bert_init_)
    return enc


_INPUT_ENCODERS = {"image": _image_encoder, "audio": _audio_encoder, "text": _text_encoder}


def build_head(cfg: EncoderConfig, head: HeadConfig, num_extra_tokens: int) -> nn.Module:
    if head.type == "mean_pool":
        return MeanPoolHead(cfg.embed_dim, len(head.labels), num_extra_tokens, eps=1e-6, dropout=head.dropout)
    if head.type == "first_token":
        return FirstTokenHead(cfg.embed_dim, len(head.labels), head.dropout)
    if head.type == "mean_linear":
        return MeanLinearHead(cfg.embed_dim, len(head.labels), num_extra_tokens, head.projection_dim, head.dropout)
    if head.type == "ctc":
        return CTCHead(cfg.embed_dim, len(head.labels), head.blank_id, head.dropout)
    raise ValueError(f"unknown head type {head.type!r}; expected one of {HEAD_TYPES}")


def build_encoder(cfg: EncoderConfig, head: HeadConfig | None = None) -> Data2VecEncoder:
    """The inference encoder (input encoder + shared blocks + optional head), reference init."""
    input_encoder = _INPUT_ENCODERS[cfg.modality](cfg)
    blocks = _blocks(cfg, cfg.prenet_depth, cfg.depth)
    for blk in blocks:
        blk.apply(bert_init_)
    head_module = None if head is None else build_head(cfg, head, input_encoder.num_extra_tokens)
    return Data2VecEncoder(cfg.modality, input_encoder, blocks, cfg.layerdrop, head_module)


def build_data2vec(cfg: ModelConfig) -> Data2Vec:
    """The pretraining student: encoder, decoder and the masking / target / loss settings."""
    encoder = build_encoder(cfg.encoder)
    e, d = cfg.encoder, cfg.decoder
    decoder = ConvDecoder(e.embed_dim, d.dim, d.kernel, d.layers, d.groups, d.residual, e.embed_dim,
                          d.projection_layers, d.projection_ratio, encoder.input_encoder.grid)
    if e.modality == "text":
        # the reference's BERT init covers the text decoder's projections (its image and audio
        # encoders reset theirs to PyTorch's default; the convolutions keep the default everywhere)
        decoder.proj.apply(bert_init_)
    return Data2Vec(encoder, decoder, cfg.mask, cfg.target, d.input_dropout, d.mask_noise_std, cfg.loss_scale,
                    cfg.cls_loss)


def build_teacher(student: Data2Vec, cfg: ModelConfig) -> EMATeacher:
    """The EMA teacher of a freshly built (or resumed) student."""
    return EMATeacher(student.encoder, cfg.ema.decay, cfg.ema.end_decay, cfg.ema.anneal_end_step,
                      cfg.ema.ema_local_encoder)
