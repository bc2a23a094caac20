"""Import HuggingFace `Data2VecText` and `Data2VecAudio` weights into a d2v `Data2VecEncoder`.

HF ships data2vec 1.0 models (DATA2VEC2.md section 7). Their text and audio encoders are post-LN
Transformers with exactly d2v's block layout, so they map onto `EncoderConfig` weight for weight:

    text (model_type "data2vec-text")
      embeddings.word_embeddings              -> encoders.text.local_encoder.embed_tokens
      embeddings.position_embeddings          -> encoders.text.local_encoder.embed_positions
        + token_type_embeddings[0] folded into every row (HF adds type 0 to every token)
      embeddings.LayerNorm                    -> encoders.text.local_encoder.layernorm
      encoder.layer.N.attention.self.{query,key,value}  -> blocks.N.attn.qkv (concatenated q, k, v)
      encoder.layer.N.attention.output.dense / .LayerNorm -> blocks.N.attn.proj / blocks.N.norm1
      encoder.layer.N.intermediate.dense      -> blocks.N.mlp.fc1
      encoder.layer.N.output.dense / .LayerNorm -> blocks.N.mlp.fc2 / blocks.N.norm2

    audio (model_type "data2vec-audio")
      feature_extractor.conv_layers.i.{conv,layer_norm} -> encoders.audio.local_encoder.extractor.layers.i.{conv,norm}
      feature_projection.{layer_norm,projection}        -> encoders.audio.local_encoder.{norm,proj}
      encoder.pos_conv_embed.layers.i.conv              -> encoders.audio.positional_encoder.layers.i
      encoder.layer_norm                                -> encoders.audio.context_encoder.norm
      encoder.layers.N.attention.{q,k,v}_proj           -> blocks.N.attn.qkv (concatenated q, k, v)
      encoder.layers.N.attention.out_proj / .layer_norm -> blocks.N.attn.proj / blocks.N.norm1
      encoder.layers.N.feed_forward.{intermediate,output}_dense -> blocks.N.mlp.{fc1,fc2}
      encoder.layers.N.final_layer_norm                 -> blocks.N.norm2

Every HF layer becomes a shared block (prenet_depth 0). HF audio has no ALiBi, so use_alibi is off.
Task-head checkpoints (`Data2VecTextForSequenceClassification`, `Data2VecAudioForCTC`, ...) keep
the encoder under a `data2vec_text.` / `data2vec_audio.` prefix; it is stripped and everything
outside it (the heads) is dropped, as are the text pooler, the audio `masked_spec_embed` (used only
for masked training) and the audio adapter. Any other key, or a missing one, is an error.
`Data2VecVision` is BEiT-style pre-LN with layer-scale and relative positions and cannot be mapped
onto the post-LN d2v image encoder.

The functions here do no file I/O: they take the parsed config.json (and preprocessor_config.json)
and a state dict.
"""

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from d2v.model.builder import build_encoder
from d2v.model.checkpoint import CheckpointError, check_state_dict, default_preprocessing
from d2v.model.config import AudioConfig, EncoderConfig, TextConfig
from d2v.model.encoder import Data2VecEncoder

__all__ = ["HFImport", "build_from_hf", "map_hf", "map_hf_audio", "map_hf_text"]

TEXT, AUDIO, VISION = "data2vec-text", "data2vec-audio", "data2vec-vision"
_PREFIX = {TEXT: "data2vec_text.", AUDIO: "data2vec_audio."}
_IGNORED = {
    TEXT: ("pooler.", "embeddings.position_ids", "embeddings.token_type_ids"),
    AUDIO: ("masked_spec_embed", "adapter."),
}


@dataclass
class HFImport:
    """A HuggingFace model mapped onto d2v: everything needed to build and save the encoder."""

    model_type: str
    """The source's HF model_type."""
    encoder: EncoderConfig
    state: dict[str, Tensor]
    """Weights under the names of `build_encoder(encoder).state_dict()`."""
    preprocessing: dict[str, Any]
    """The checkpoint's preprocessing section (sample rate and normalization, or special token ids)."""
    warnings: list[str] = field(default_factory=list)
    """What the conversion dropped or cannot vouch for."""


class _Weights:
    """The HF state dict being consumed: `take` pops a key or reports it missing by its HF name."""

    def __init__(self, state: dict[str, Tensor], model_type: str):
        self.model_type = model_type
        self.state = dict(state)

    def take(self, key: str) -> Tensor:
        if key not in self.state:
            raise CheckpointError(f"{self.model_type} weights: missing key {key!r}")
        return self.state.pop(key)

    def move(self, src: str, dst: str, out: dict[str, Tensor]) -> None:
        """`src`.weight and `src`.bias (a Linear, LayerNorm or Conv1d) become `dst`.weight and .bias."""
        out[f"{dst}.weight"] = self.take(f"{src}.weight")
        out[f"{dst}.bias"] = self.take(f"{src}.bias")

    def take_qkv(self, q: str, k: str, v: str, dst: str, out: dict[str, Tensor]) -> None:
        """Fuse three (D, D) projections into one (3D, D) qkv, in q, k, v order."""
        for part in ("weight", "bias"):
            out[f"{dst}.{part}"] = torch.cat([self.take(f"{n}.{part}") for n in (q, k, v)], dim=0)

    def finish(self) -> None:
        """Fail on leftover keys (those not mapped and not deliberately ignored)."""
        left = sorted(k for k in self.state if not k.startswith(_IGNORED[self.model_type]))
        if left:
            shown = ", ".join(left[:8]) + (f", ... ({len(left)} in all)" if len(left) > 8 else "")
            raise CheckpointError(f"{self.model_type} weights: unexpected keys {shown}")


def _strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Keep the encoder of a task-head checkpoint (keys under `prefix`); a bare model is unchanged."""
    if not any(k.startswith(prefix) for k in state):
        return dict(state)
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _require(config: dict[str, Any], key: str, allowed: tuple[Any, ...], default: Any, why: str) -> None:
    value = config.get(key, default)
    if value not in allowed:
        raise ValueError(f"{config.get('model_type')}: {key}={value!r} is not supported ({why})")


def _mlp_ratio(config: dict[str, Any]) -> float:
    dim, hidden = int(config["hidden_size"]), int(config["intermediate_size"])
    ratio = hidden / dim
    if int(dim * ratio) != hidden:
        raise ValueError(f"{config.get('model_type')}: intermediate_size {hidden} is not representable as "
                         f"hidden_size {dim} x mlp_ratio")
    return ratio


def map_hf_text(config: dict[str, Any], state: dict[str, Tensor]) -> HFImport:
    """Map a `Data2VecText*` config and state dict onto a d2v text encoder.

    Args:
        config: the parsed HF config.json (model_type "data2vec-text").
        state: the HF weights, bare or under the `data2vec_text.` prefix of a task-head model.

    Returns:
        The d2v encoder config, its state dict and preprocessing (special token ids from `config`).
    """
    _require(config, "hidden_act", ("gelu",), "gelu", "d2v blocks use exact (erf) GELU")
    _require(config, "position_embedding_type", ("absolute",), "absolute", "d2v has learned absolute positions")
    _require(config, "is_decoder", (False,), False, "d2v text encoders attend bidirectionally")
    _require(config, "add_cross_attention", (False,), False, "d2v has no cross-attention")
    pad_id = config.get("pad_token_id", 1)
    if pad_id is None:
        raise ValueError(f"{TEXT}: pad_token_id is null; d2v needs it for the position offset")
    max_positions = int(config["max_position_embeddings"]) - pad_id - 1
    if max_positions < 1:
        raise ValueError(f"{TEXT}: max_position_embeddings {config['max_position_embeddings']} leaves no "
                         f"positions after the pad offset {pad_id + 1}")
    p_drop = float(config.get("hidden_dropout_prob", 0.1))
    enc = EncoderConfig(
        modality="text",
        embed_dim=int(config["hidden_size"]),
        num_heads=int(config["num_attention_heads"]),
        depth=int(config["num_hidden_layers"]),
        mlp_ratio=_mlp_ratio(config),
        norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        dropout=p_drop,
        attention_dropout=float(config.get("attention_probs_dropout_prob", 0.1)),
        activation_dropout=0.0,
        post_mlp_dropout=p_drop,
        text=TextConfig(vocab_size=int(config["vocab_size"]), max_positions=max_positions, pad_id=pad_id),
    )

    w, out, warnings = _Weights(_strip_prefix(state, _PREFIX[TEXT]), TEXT), {}, []
    local = "encoders.text.local_encoder"
    out[f"{local}.embed_tokens.weight"] = w.take("embeddings.word_embeddings.weight")
    token_types = w.take("embeddings.token_type_embeddings.weight")  # (type_vocab_size, D)
    if token_types.shape[0] > 1:
        warnings.append(f"token_type_embeddings has {token_types.shape[0]} rows; only type 0 (the default) is "
                        "kept, folded into the position embeddings")
    positions = w.take("embeddings.position_embeddings.weight")  # (max_position_embeddings, D)
    # HF adds token type 0 to every token, padding included, so adding it to every position row is exact
    out[f"{local}.embed_positions.weight"] = (positions.float() + token_types[0].float()).to(positions.dtype)
    w.move("embeddings.LayerNorm", f"{local}.layernorm", out)
    for i in range(enc.depth):
        src, dst = f"encoder.layer.{i}", f"blocks.{i}"
        qkv = [f"{src}.attention.self.{n}" for n in ("query", "key", "value")]
        w.take_qkv(*qkv, f"{dst}.attn.qkv", out)
        w.move(f"{src}.attention.output.dense", f"{dst}.attn.proj", out)
        w.move(f"{src}.attention.output.LayerNorm", f"{dst}.norm1", out)
        w.move(f"{src}.intermediate.dense", f"{dst}.mlp.fc1", out)
        w.move(f"{src}.output.dense", f"{dst}.mlp.fc2", out)
        w.move(f"{src}.output.LayerNorm", f"{dst}.norm2", out)
    w.finish()

    preprocessing = default_preprocessing(enc)
    for ours, theirs in (("bos_id", "bos_token_id"), ("eos_id", "eos_token_id")):
        if isinstance(config.get(theirs), int):
            preprocessing[ours] = config[theirs]
    return HFImport(TEXT, enc, out, preprocessing, warnings)


def map_hf_audio(
    config: dict[str, Any], state: dict[str, Tensor], preprocessor: dict[str, Any] | None = None
) -> HFImport:
    """Map a `Data2VecAudio*` config and state dict onto a d2v audio encoder.

    Args:
        config: the parsed HF config.json (model_type "data2vec-audio").
        state: the HF weights, bare or under the `data2vec_audio.` prefix of a task-head model.
        preprocessor: the parsed preprocessor_config.json, if any; `do_normalize` (default True) and
            `sampling_rate` (default 16000) come from it. HF normalizes outside the model, d2v inside.

    Returns:
        The d2v encoder config, its state dict and preprocessing.
    """
    _require(config, "hidden_act", ("gelu",), "gelu", "d2v blocks use exact (erf) GELU")
    _require(config, "feat_extract_activation", ("gelu",), "gelu", "d2v's convolutions use GELU")
    # d2v's feature projection and positional-conv LayerNorms use 1e-5, as fairseq and HF's defaults do
    _require(config, "layer_norm_eps", (1e-5,), 1e-5, "d2v audio encoders use LayerNorm eps 1e-5")
    preprocessor = preprocessor or {}
    dims, kernels, strides = config["conv_dim"], config["conv_kernel"], config["conv_stride"]
    if not len(dims) == len(kernels) == len(strides):
        raise ValueError(f"{AUDIO}: conv_dim, conv_kernel and conv_stride differ in length")
    p_drop = float(config.get("hidden_dropout", 0.1))
    enc = EncoderConfig(
        modality="audio",
        embed_dim=int(config["hidden_size"]),
        num_heads=int(config["num_attention_heads"]),
        depth=int(config["num_hidden_layers"]),
        mlp_ratio=_mlp_ratio(config),
        norm_eps=float(config.get("layer_norm_eps", 1e-5)),
        dropout=p_drop,
        attention_dropout=float(config.get("attention_dropout", 0.1)),
        activation_dropout=float(config.get("activation_dropout", 0.1)),
        post_mlp_dropout=p_drop,
        prenet_dropout=p_drop,
        layerdrop=float(config.get("layerdrop", 0.1)),
        audio=AudioConfig(
            conv_layers=[[int(c), int(k), int(s)] for c, k, s in zip(dims, kernels, strides)],
            conv_bias=bool(config.get("conv_bias", False)),
            conv_pos_depth=int(config.get("num_conv_pos_embeddings", 5)),
            conv_pos_kernel=int(config.get("conv_pos_kernel_size", 19)),
            conv_pos_groups=int(config.get("num_conv_pos_embedding_groups", 16)),
            use_alibi=False,
            sample_rate=int(preprocessor.get("sampling_rate", 16000)),
            normalize=bool(preprocessor.get("do_normalize", True)),
        ),
    )

    w, out, warnings = _Weights(_strip_prefix(state, _PREFIX[AUDIO]), AUDIO), {}, []
    audio = "encoders.audio"
    for i in range(len(dims)):
        src, dst = f"feature_extractor.conv_layers.{i}", f"{audio}.local_encoder.extractor.layers.{i}"
        out[f"{dst}.conv.weight"] = w.take(f"{src}.conv.weight")
        if enc.audio.conv_bias:
            out[f"{dst}.conv.bias"] = w.take(f"{src}.conv.bias")
        w.move(f"{src}.layer_norm", f"{dst}.norm", out)
    w.move("feature_projection.layer_norm", f"{audio}.local_encoder.norm", out)
    w.move("feature_projection.projection", f"{audio}.local_encoder.proj", out)
    for i in range(enc.audio.conv_pos_depth):
        w.move(f"encoder.pos_conv_embed.layers.{i}.conv", f"{audio}.positional_encoder.layers.{i}", out)
    w.move("encoder.layer_norm", f"{audio}.context_encoder.norm", out)
    for i in range(enc.depth):
        src, dst = f"encoder.layers.{i}", f"blocks.{i}"
        qkv = [f"{src}.attention.{n}_proj" for n in ("q", "k", "v")]
        w.take_qkv(*qkv, f"{dst}.attn.qkv", out)
        w.move(f"{src}.attention.out_proj", f"{dst}.attn.proj", out)
        w.move(f"{src}.layer_norm", f"{dst}.norm1", out)
        w.move(f"{src}.feed_forward.intermediate_dense", f"{dst}.mlp.fc1", out)
        w.move(f"{src}.feed_forward.output_dense", f"{dst}.mlp.fc2", out)
        w.move(f"{src}.final_layer_norm", f"{dst}.norm2", out)
    w.finish()
    if config.get("add_adapter"):
        warnings.append("the HF adapter after the encoder is dropped; d2v returns the encoder's states")
    return HFImport(AUDIO, enc, out, default_preprocessing(enc), warnings)


def map_hf(
    config: dict[str, Any], state: dict[str, Tensor], preprocessor: dict[str, Any] | None = None
) -> HFImport:
    """Map any supported HF Data2Vec model, chosen by `config["model_type"]`.

    Raises:
        ValueError: the model type or one of its settings has no d2v equivalent.
        CheckpointError: a weight is missing or left over.
    """
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type is None:
        raise ValueError("config.json names no model_type; is this a HuggingFace model directory?")
    if model_type == TEXT:
        return map_hf_text(config, state)
    if model_type == AUDIO:
        return map_hf_audio(config, state, preprocessor)
    if model_type == VISION:
        raise ValueError(
            "data2vec-vision cannot be converted: HF Data2VecVision is BEiT-style pre-LN with layer-scale and "
            "relative position bias, which does not map onto the post-LN d2v 2.0 image encoder")
    raise ValueError(f"unsupported HF model_type {model_type!r}; d2v converts {TEXT!r} and {AUDIO!r}")


def build_from_hf(imported: HFImport) -> Data2VecEncoder:
    """Build the encoder of `imported` and load its weights (float32, eval mode).

    Raises:
        CheckpointError: the mapped weights do not fit the encoder (missing, unexpected, wrong shape).
    """
    model = build_encoder(imported.encoder)
    check_state_dict(model.state_dict(), imported.state, f"the mapped {imported.model_type} weights")
    model.load_state_dict(imported.state, strict=True)
    return model.eval()
