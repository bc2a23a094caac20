"""Import HuggingFace `Data2VecText` and `Data2VecAudio` weights into a d2v `Data2VecEncoder`.

HF ships data2vec 1.0 models. Their text and audio encoders are post-LN
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
Task-head checkpoints keep the encoder under a `data2vec_text.` / `data2vec_audio.` prefix; it is
stripped, and three heads are kept (labels from `id2label`, vocabulary from vocab.json):

    Data2VecTextForSequenceClassification   classifier.{dense,out_proj}  -> head.{dense,out_proj}  (first_token)
    Data2VecAudioForSequenceClassification  projector / classifier       -> head.projector / head.classifier
                                                                            (mean_linear: mean over real frames)
    Data2VecAudioForCTC                      lm_head                      -> head.proj  (ctc: blank = pad token,
                                                                            word delimiter "|")

Any other head (masked LM, token classification, x-vector, ...) is dropped with a warning, as are
the text pooler, the audio `masked_spec_embed` (used only for masked training) and the audio
adapter. Any other key, or a missing one, is an error.
`Data2VecVision` is BEiT-style pre-LN with layer-scale and relative positions and cannot be mapped
onto the post-LN d2v image encoder.

The functions here do no file I/O: they take the parsed config.json (and preprocessor_config.json)
and a state dict.
"""

from typing import Any

import torch
from torch import Tensor

from d2v.model.checkpoint import CheckpointError, default_preprocessing
from d2v.model.config import AudioConfig, EncoderConfig, HeadConfig, TextConfig
from d2v.model.importers.imported import Imported, build_imported

__all__ = ["HFImport", "build_from_hf", "map_hf", "map_hf_audio", "map_hf_text"]

TEXT, AUDIO, VISION = "data2vec-text", "data2vec-audio", "data2vec-vision"
_PREFIX = {TEXT: "data2vec_text.", AUDIO: "data2vec_audio."}
_IGNORED = {
    TEXT: ("pooler.", "embeddings.position_ids", "embeddings.token_type_ids"),
    AUDIO: ("masked_spec_embed", "adapter."),
}


HFImport = Imported
"""The former name of `Imported` (what every importer returns)."""
build_from_hf = build_imported
"""The former name of `build_imported`."""

TEXT_CLASSIFIER = "Data2VecTextForSequenceClassification"
AUDIO_CLASSIFIER = "Data2VecAudioForSequenceClassification"
AUDIO_CTC = "Data2VecAudioForCTC"


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


def _split_prefix(state: dict[str, Tensor], prefix: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A task-head checkpoint -> (the encoder's weights with `prefix` stripped, the head's weights);
    a bare model -> (its weights, {})."""
    if not any(k.startswith(prefix) for k in state):
        return dict(state), {}
    encoder = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return encoder, {k: v for k, v in state.items() if not k.startswith(prefix)}


def _architecture(config: dict[str, Any]) -> str | None:
    archs = config.get("architectures")
    return archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None


def _labels(config: dict[str, Any], classes: int, labels: list[str] | None) -> list[str]:
    """Class names: `labels` when given, else config.json's id2label, else "0".."C-1"."""
    if labels is not None:
        if len(labels) != classes:
            raise ValueError(f"{len(labels)} labels given but the classifier has {classes} classes")
        return list(labels)
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return [str(i) for i in range(classes)]
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{config.get('model_type')}: id2label keys are not integers") from None
    if sorted(by_id) != list(range(classes)):
        raise ValueError(f"{config.get('model_type')}: id2label has ids {sorted(by_id)[:8]} but the classifier has "
                         f"{classes} classes")
    return [by_id[i] for i in range(classes)]


def _ctc_vocabulary(config: dict[str, Any], vocab: dict[str, Any], tokenizer_config: dict[str, Any] | None,
                    classes: int) -> HeadConfig:
    """vocab.json ({token: id}) -> a ctc head: the pad token is the blank, "|" the word delimiter."""
    if not all(isinstance(v, int) for v in vocab.values()):
        raise ValueError("vocab.json is not a flat {token: id} map (a multilingual vocabulary is not supported)")
    by_id = {i: t for t, i in vocab.items()}
    if sorted(by_id) != list(range(classes)):
        raise ValueError(f"vocab.json has {len(by_id)} tokens with ids {min(by_id, default=None)}.."
                         f"{max(by_id, default=None)} but lm_head has {classes} outputs")
    labels = [by_id[i] for i in range(classes)]
    blank = config.get("pad_token_id", 0)
    if not isinstance(blank, int) or not 0 <= blank < classes:
        raise ValueError(f"{AUDIO}: pad_token_id={blank!r} (the CTC blank) is not an output id")
    delimiter = (tokenizer_config or {}).get("word_delimiter_token", "|")
    return HeadConfig("ctc", labels, "mean", dropout=float(config.get("final_dropout", 0.0)), blank_id=blank,
                      word_delimiter=delimiter if delimiter in labels else None)


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


def map_hf_text(config: dict[str, Any], state: dict[str, Tensor], labels: list[str] | None = None) -> HFImport:
    """Map a `Data2VecText*` config and state dict onto a d2v text encoder.

    Args:
        config: the parsed HF config.json (model_type "data2vec-text").
        state: the HF weights, bare or under the `data2vec_text.` prefix of a task-head model.
        labels: class names of a sequence classifier (default: config's id2label).

    Returns:
        The d2v encoder config, its state dict, its head (sequence classifiers) and preprocessing
        (special token ids from `config`).
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

    encoder_state, head_state = _split_prefix(state, _PREFIX[TEXT])
    w, out, warnings = _Weights(encoder_state, TEXT), {}, []
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

    head = None
    arch = _architecture(config)
    keys = {"classifier.dense.weight", "classifier.out_proj.weight"}
    if head_state and (arch == TEXT_CLASSIFIER or (arch is None and keys <= set(head_state))):
        h = _Weights(head_state, TEXT)
        h.move("classifier.dense", "head.dense", out)
        h.move("classifier.out_proj", "head.out_proj", out)
        h.finish()
        dropout = config.get("classifier_dropout")
        head = HeadConfig("first_token", _labels(config, out["head.out_proj.weight"].shape[0], labels), "cls",
                          float(p_drop if dropout is None else dropout))
    elif head_state:
        warnings.append(_dropped_head(arch, head_state, TEXT_CLASSIFIER))
    if labels is not None and head is None:
        raise ValueError(f"--labels applies to classifiers; this {TEXT} model has no classification head")

    preprocessing = default_preprocessing(enc)
    for ours, theirs in (("bos_id", "bos_token_id"), ("eos_id", "eos_token_id")):
        if isinstance(config.get(theirs), int):
            preprocessing[ours] = config[theirs]
    return HFImport(TEXT, enc, out, preprocessing, warnings, head)


def _dropped_head(arch: str | None, head_state: dict[str, Tensor], kept: str) -> str:
    modules = sorted({k.split(".")[0] for k in head_state})
    return f"the {arch or 'task'} head ({', '.join(modules)}) is dropped; d2v keeps only {kept} heads"


def map_hf_audio(
    config: dict[str, Any],
    state: dict[str, Tensor],
    preprocessor: dict[str, Any] | None = None,
    vocab: dict[str, Any] | None = None,
    tokenizer_config: dict[str, Any] | None = None,
    labels: list[str] | None = None,
) -> HFImport:
    """Map a `Data2VecAudio*` config and state dict onto a d2v audio encoder.

    Args:
        config: the parsed HF config.json (model_type "data2vec-audio").
        state: the HF weights, bare or under the `data2vec_audio.` prefix of a task-head model.
        preprocessor: the parsed preprocessor_config.json, if any; `do_normalize` (default True) and
            `sampling_rate` (default 16000) come from it. HF normalizes outside the model, d2v inside.
        vocab: the parsed vocab.json of a CTC model ({token: id}); without it a CTC head is dropped.
        tokenizer_config: the parsed tokenizer_config.json (its word_delimiter_token), if any.
        labels: class names of a sequence classifier (default: config's id2label).

    Returns:
        The d2v encoder config, its state dict, its head (sequence classifier or CTC) and
        preprocessing.
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

    encoder_state, head_state = _split_prefix(state, _PREFIX[AUDIO])
    w, out, warnings = _Weights(encoder_state, AUDIO), {}, []
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
    head = _audio_head(config, head_state, vocab, tokenizer_config, labels, out, warnings)
    if config.get("add_adapter"):
        if head is not None:
            raise ValueError(f"{AUDIO}: add_adapter=True is not supported with a task head (the head reads the "
                             "adapter's output, which d2v does not have)")
        warnings.append("the HF adapter after the encoder is dropped; d2v returns the encoder's states")
    return HFImport(AUDIO, enc, out, default_preprocessing(enc), warnings, head)


def _audio_head(config: dict[str, Any], head_state: dict[str, Tensor], vocab: dict[str, Any] | None,
                tokenizer_config: dict[str, Any] | None, labels: list[str] | None, out: dict[str, Tensor],
                warnings: list[str]) -> HeadConfig | None:
    """Map a sequence-classification or CTC head into `out`; other heads are dropped with a warning."""
    arch = _architecture(config)
    keys = set(head_state)
    head = None
    if head_state and (arch == AUDIO_CLASSIFIER or (arch is None and {"projector.weight", "classifier.weight"} <= keys)):
        _require(config, "use_weighted_layer_sum", (False,), False,
                 "d2v's classification head reads the last layer only")
        h = _Weights(head_state, AUDIO)
        h.move("projector", "head.projector", out)
        h.move("classifier", "head.classifier", out)
        h.finish()
        classes, proj = out["head.classifier.weight"].shape
        head = HeadConfig("mean_linear", _labels(config, classes, labels), "mean", projection_dim=int(proj))
    elif head_state and (arch == AUDIO_CTC or (arch is None and "lm_head.weight" in keys)):
        if labels is not None:
            raise ValueError("--labels applies to classifiers; a CTC model's vocabulary comes from its vocab.json")
        if vocab is None:
            warnings.append("the CTC head (lm_head) is dropped: the directory has no vocab.json to name its outputs")
            return None
        h = _Weights(head_state, AUDIO)
        h.move("lm_head", "head.proj", out)
        h.finish()
        head = _ctc_vocabulary(config, vocab, tokenizer_config, out["head.proj.weight"].shape[0])
    elif head_state:
        warnings.append(_dropped_head(arch, head_state, f"{AUDIO_CLASSIFIER} and {AUDIO_CTC}"))
    if labels is not None and head is None:
        raise ValueError(f"--labels applies to classifiers; this {AUDIO} model has no classification head")
    return head


def map_hf(
    config: dict[str, Any],
    state: dict[str, Tensor],
    preprocessor: dict[str, Any] | None = None,
    vocab: dict[str, Any] | None = None,
    tokenizer_config: dict[str, Any] | None = None,
    labels: list[str] | None = None,
) -> HFImport:
    """Map any supported HF Data2Vec model, chosen by `config["model_type"]` (arguments as in
    `map_hf_text` / `map_hf_audio`).

    Raises:
        ValueError: the model type or one of its settings has no d2v equivalent.
        CheckpointError: a weight is missing or left over.
    """
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type is None:
        raise ValueError("config.json names no model_type; is this a HuggingFace model directory?")
    if model_type == TEXT:
        return map_hf_text(config, state, labels)
    if model_type == AUDIO:
        return map_hf_audio(config, state, preprocessor, vocab, tokenizer_config, labels)
    if model_type == VISION:
        raise ValueError(
            "data2vec-vision cannot be converted: HF Data2VecVision is BEiT-style pre-LN with layer-scale and "
            "relative position bias, which does not map onto the post-LN d2v 2.0 image encoder")
    raise ValueError(f"unsupported HF model_type {model_type!r}; d2v converts {TEXT!r} and {AUDIO!r}")
