"""Map Meta's fairseq data2vec 2.0 checkpoints onto a d2v `Data2VecEncoder`.

Three fairseq model types are read, each with its architecture in its own cfg:

    data2vec_multi            pretrained image / audio / text     cfg.model
    mae_image_classification  image classifier (ImageNet)         cfg.model.pretrained_model_args.model
    wav2vec_ctc               speech recognizer (CTC)             cfg.model.w2v_args.model

The encoder (`Data2VecMultiModel`) maps name for name; the prefix is "" for a pretrained model,
"model." for the classifier and "w2v_encoder.w2v_model." for the CTC model:

    blocks.N.*                                        -> blocks.N.*    (same block layout)
    modality_encoders.M.context_encoder.{norm,blocks.N}  -> encoders.m.context_encoder.{norm,blocks.N}
    image  modality_encoders.IMAGE.extra_tokens       -> encoders.image.cls_token
           .local_encoder.proj                        -> encoders.image.local_encoder.proj
           .fixed_positional_encoder.positions        -> encoders.image.pos_embed (stored table)
    audio  .local_encoder.conv_layers.i.0 / .2.1      -> encoders.audio.local_encoder.extractor.layers.i.conv / .norm
           .project_features.1 / .2                   -> encoders.audio.local_encoder.norm / .proj
           .relative_positional_encoder.{i+1}.0       -> encoders.audio.positional_encoder.layers.i
           .alibi_scale (1, 1, H or 1, 1, 1)          -> encoders.audio.alibi.alibi_scale (H,)
    text   .local_encoder.embed_tokens / .embed_positions / .layernorm_embedding
                                                      -> encoders.text.local_encoder.embed_tokens / .embed_positions / .layernorm
    classifier  fc_norm / head                        -> head.fc_norm / head.fc       (mean_pool head)
    CTC         w2v_encoder.proj                      -> head.proj                    (ctc head)

The pretraining decoders (`modality_encoders.*.decoder`, `shared_decoder`, `recon_proj`) are
dropped. `_ema` (the fp32 EMA teacher) replaces the student weights it covers when `ema` is set;
what it does not hold (audio: the conv extractor and feature projection; text: everything but the
shared blocks) is the student's, which is also what the teacher read during pretraining.

A cfg value d2v cannot represent is refused with a `ValueError` naming the cfg key; keys the
mapping does not read are ignored. No file I/O here: the checkpoint dict comes from
`safe_pickle.load_fairseq_checkpoint`.
"""

import ast
import re
from typing import Any

from torch import Tensor

from d2v.model.checkpoint import CheckpointError, default_preprocessing
from d2v.model.config import AudioConfig, EncoderConfig, HeadConfig, ImageConfig, TextConfig
from d2v.model.importers.imported import Imported
from d2v.model.importers.safe_pickle import Pickled, to_plain

__all__ = [
    "FAIRSEQ_MODELS",
    "dictionary_symbols",
    "fairseq_model_name",
    "map_fairseq",
    "parse_conv_spec",
    "read_dictionary",
]

PRETRAINED, CLASSIFIER, CTC = "data2vec_multi", "mae_image_classification", "wav2vec_ctc"
FAIRSEQ_MODELS: tuple[str, ...] = (PRETRAINED, CLASSIFIER, CTC)
_OTHER_MODELS = {
    "wav2vec2": "wav2vec 2.0", "wav2vec": "wav2vec", "hubert": "HuBERT", "roberta": "RoBERTa",
    "roberta_base": "RoBERTa", "roberta_large": "RoBERTa", "bart": "BART", "transformer": "Transformer",
    "data2vec_audio": "data2vec 1.0 audio", "data2vec_text": "data2vec 1.0 text",
    "data2vec_vision": "data2vec 1.0 vision", "wav2vec_seq2seq": "wav2vec seq2seq",
}
_MODALITIES = {"IMAGE": "image", "AUDIO": "audio", "TEXT": "text"}
_PREFIX = {PRETRAINED: "", CLASSIFIER: "model.", CTC: "w2v_encoder.w2v_model."}
_DROPPED = re.compile(r"^(modality_encoders\.\w+\.decoder\.|shared_decoder\.|recon_proj\.)")
_MISSING = object()


class _Cfg:
    """A read-only view of one cfg section that names the full key in every error."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, dict):
            raise ValueError(f"cfg key {path} is {type(data).__name__}, expected a section")  # noqa: TRY004 - a bad file
        self.data, self.path = data, path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def section(self, name: str) -> "_Cfg":
        if self.data.get(name) is None:
            raise ValueError(f"cfg key {self.key(name)} is missing")
        return _Cfg(self.data[name], self.key(name))

    def get(self, name: str, default: Any = _MISSING) -> Any:
        if name in self.data and self.data[name] is not None:
            return self.data[name]
        if default is _MISSING:
            raise ValueError(f"cfg key {self.key(name)} is missing")
        return default

    def num(self, name: str, kind: type, default: Any = _MISSING) -> Any:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
            raise ValueError(f"cfg key {self.key(name)}={value!r} is not {'an integer' if kind is int else 'a number'}")
        return kind(value)

    def flag(self, name: str, default: Any = _MISSING) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise ValueError(f"cfg key {self.key(name)}={value!r} is not a boolean")  # noqa: TRY004 - a bad file
        return value

    def require(self, name: str, allowed: tuple[Any, ...], default: Any, why: str) -> None:
        """Refuse a value of `name` outside `allowed` (an absent key counts as `default`)."""
        value = self.get(name, default)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise ValueError(f"cfg key {self.key(name)}={value!r} is not supported ({why})")


def parse_conv_spec(spec: str, key: str) -> list[list[int]]:
    """Read fairseq's `feature_encoder_spec`, a Python expression such as
    "[(512, 10, 5)] + [(512, 3, 2)] * 4", without `eval`: only list/tuple literals of integers,
    `+` and `*` are accepted."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if any(isinstance(v, int) and not 0 <= v <= 1000 for v in (left, right)):
                raise ValueError("a repeat count outside 0..1000")
            return left * right
        raise ValueError(f"unsupported expression {ast.dump(node)[:60]}")

    try:
        layers = value(ast.parse(str(spec), mode="eval").body)
        if not isinstance(layers, list) or not layers:
            raise ValueError("not a non-empty list")
        out = []
        for layer in layers:
            if not (isinstance(layer, tuple) and len(layer) == 3 and all(isinstance(v, int) and v > 0 for v in layer)):
                raise ValueError(f"layer {layer!r} is not (dim, kernel, stride)")
            out.append(list(layer))
        return out
    except (SyntaxError, TypeError, ValueError, RecursionError, MemoryError) as e:
        raise ValueError(f"cfg key {key}={spec!r} is not a list of (dim, kernel, stride) layers: {e}") from None


def dictionary_symbols(task_state: Any) -> list[str] | None:
    """The symbols (id order) of the fairseq `Dictionary` in a checkpoint's task_state, if any."""
    if not isinstance(task_state, dict):
        return None
    record = task_state.get("target_dictionary")
    if not isinstance(record, Pickled) or not isinstance(getattr(record, "state", None), dict):
        return None
    symbols = record.state.get("symbols")
    if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
        return None
    return list(symbols)


def fairseq_model_name(checkpoint: dict[str, Any]) -> str | None:
    """cfg.model._name of a loaded fairseq checkpoint (None when there is none)."""
    cfg = to_plain(checkpoint.get("cfg"))
    model = cfg.get("model") if isinstance(cfg, dict) else None
    return model.get("_name") if isinstance(model, dict) else None


def read_dictionary(text: str, where: str) -> list[str]:
    """A fairseq dictionary file (`<symbol> <count>` lines, e.g. dict.ltr.txt) -> symbols in id
    order: `<s>`, `<pad>`, `</s>`, `<unk>`, then the file's symbols (fairseq `Dictionary`)."""
    symbols = ["<s>", "<pad>", "</s>", "<unk>"]
    for n, line in enumerate(text.splitlines(), 1):
        line = line.rstrip()
        if not line:
            continue
        parts = line.rsplit(" ", 1)
        if len(parts) == 2 and parts[1] == "#fairseq:overwrite":
            line = parts[0]
            parts = line.rsplit(" ", 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{where}:{n}: expected '<symbol> <count>', got {line!r}")
        symbols.append(parts[0])
    return symbols


class _Weights:
    """The fairseq state dict being consumed; `finish` refuses whatever was neither used nor dropped."""

    def __init__(self, state: dict[str, Tensor], prefix: str, model_type: str):
        self.state, self.prefix, self.model_type = state, prefix, model_type
        self.out: dict[str, Tensor] = {}

    def take(self, key: str, absolute: bool = False) -> Tensor:
        name = key if absolute else self.prefix + key
        if name not in self.state:
            raise CheckpointError(f"{self.model_type} weights: missing key {name!r}")
        t = self.state.pop(name)
        return t.float() if t.is_floating_point() else t

    def move(self, src: str, dst: str, absolute: bool = False, parts: tuple[str, ...] = ("weight", "bias")) -> None:
        for p in parts:
            self.out[f"{dst}.{p}"] = self.take(f"{src}.{p}", absolute)

    def block(self, src: str, dst: str) -> None:
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            self.move(f"{src}.{part}", f"{dst}.{part}")

    def has(self, key: str, absolute: bool = False) -> bool:
        return (key if absolute else self.prefix + key) in self.state

    def finish(self) -> None:
        left = sorted(k for k in self.state if not _DROPPED.match(k.removeprefix(self.prefix)))
        if left:
            shown = ", ".join(left[:8]) + (f", ... ({len(left)} in all)" if len(left) > 8 else "")
            raise CheckpointError(f"{self.model_type} weights: unexpected keys {shown}")


def _model_section(cfg: dict[str, Any]) -> tuple[str, _Cfg, _Cfg, _Cfg]:
    """-> (fairseq model name, the top model cfg, the data2vec_multi architecture cfg, its task cfg)."""
    root = _Cfg(cfg, "")
    top = root.section("model")
    name = top.get("_name", None)
    if name not in FAIRSEQ_MODELS:
        what = _OTHER_MODELS.get(str(name), None)
        kind = f"a fairseq {what} checkpoint (model._name={name!r})" if what else f"model._name={name!r}"
        raise ValueError(f"{kind} is not supported: d2v converts fairseq data2vec 2.0 checkpoints "
                         f"({', '.join(FAIRSEQ_MODELS)})")
    if name == PRETRAINED:
        arch, task = top, root.section("task") if root.get("task", None) is not None else None
    else:
        inner = top.section("pretrained_model_args" if name == CLASSIFIER else "w2v_args")
        arch = inner.section("model")
        task = inner.section("task") if inner.get("task", None) is not None else None
    arch_name = arch.get("_name", None)
    if arch_name != PRETRAINED:
        what = _OTHER_MODELS.get(str(arch_name), repr(arch_name))
        raise ValueError(f"cfg key {arch.key('_name')}={arch_name!r}: a {name} model over {what} is not supported "
                         f"(d2v converts data2vec 2.0, {PRETRAINED!r})")
    return name, top, arch, task


def _modality(arch: _Cfg, state: dict[str, Tensor], prefix: str) -> str:
    value = arch.get("supported_modality", None)
    if value is None:  # a multi-modality cfg: accept it when the weights hold exactly one encoder
        found = sorted({k[len(prefix):].split(".")[1] for k in state
                        if k.startswith(prefix + "modality_encoders.")})
        if len(found) != 1:
            raise ValueError(f"cfg key {arch.key('supported_modality')} is null and the weights hold modality "
                             f"encoders {found}; d2v converts one modality")
        value = found[0]
    if str(value).upper() not in _MODALITIES:
        raise ValueError(f"cfg key {arch.key('supported_modality')}={value!r} is not IMAGE, AUDIO or TEXT")
    return str(value).upper()


def _encoder_config(arch: _Cfg, mod: _Cfg, modality: str, inputs: Any) -> EncoderConfig:
    arch.require("layer_norm_first", (False,), False, "d2v blocks are post-LN")
    arch.require("norm_affine", (True,), True, "d2v LayerNorms have a gain and a bias")
    embed_dim, ratio = arch.num("embed_dim", int), arch.num("mlp_ratio", float, 4.0)
    return EncoderConfig(
        modality=modality,
        embed_dim=embed_dim,
        num_heads=arch.num("num_heads", int),
        depth=arch.num("depth", int),
        prenet_depth=mod.num("prenet_depth", int),
        mlp_ratio=ratio,
        norm_eps=arch.num("norm_eps", float),
        dropout=arch.num("encoder_dropout", float, 0.0),
        attention_dropout=arch.num("attention_dropout", float, 0.0),
        activation_dropout=arch.num("activation_dropout", float, 0.0),
        post_mlp_dropout=arch.num("post_mlp_drop", float, 0.0),
        prenet_dropout=mod.num("prenet_dropout", float, 0.0),
        layerdrop=arch.num("layerdrop", float, 0.0),
        drop_path=arch.num("end_drop_path_rate", float, 0.0),
        **{modality: inputs},
    )


def _image(arch: _Cfg, mod: _Cfg, w: _Weights) -> EncoderConfig:
    mod.require("num_extra_tokens", (1,), 0, "d2v image encoders prepend exactly one CLS token")
    mod.require("fixed_positions", (True,), True, "d2v image encoders add fixed sin-cos positions")
    mod.require("use_alibi_encoder", (False,), False, "d2v image encoders have no ALiBi")
    if mod.num("embed_dim", int) != arch.num("embed_dim", int):
        raise ValueError(f"cfg key {mod.key('embed_dim')}={mod.get('embed_dim')} differs from "
                         f"{arch.key('embed_dim')}={arch.get('embed_dim')}: the extra patch projection is not supported")
    image = ImageConfig(image_size=mod.num("input_size", int), patch_size=mod.num("patch_size", int),
                        in_chans=mod.num("in_chans", int), stored_pos_embed=True)
    enc = _encoder_config(arch, mod, "image", image)
    src, dst = "modality_encoders.IMAGE", "encoders.image"
    w.out[f"{dst}.cls_token"] = w.take(f"{src}.extra_tokens")
    w.move(f"{src}.local_encoder.proj", f"{dst}.local_encoder.proj")
    w.out[f"{dst}.pos_embed"] = w.take(f"{src}.fixed_positional_encoder.positions")
    _context(w, src, dst, enc.prenet_depth, norm=True)
    return enc


def _audio(arch: _Cfg, mod: _Cfg, task: _Cfg | None, w: _Weights) -> EncoderConfig:
    mod.require("num_extra_tokens", (0,), 0, "d2v audio encoders have no extra tokens")
    mod.require("extractor_mode", ("layer_norm",), "layer_norm", "d2v's feature extractor is the layer_norm mode")
    mod.require("conv_pos_pre_ln", (False,), False, "d2v's positional convolutions have no LayerNorm before them")
    mod.require("learned_alibi", (False,), False, "d2v computes the ALiBi bias; a learned bias table is not supported")
    mod.require("learned_alibi_scale_per_layer", (False,), False,
                "d2v shares one ALiBi scale per head across all layers")
    use_alibi = mod.flag("use_alibi_encoder", False)
    if use_alibi and mod.num("num_alibi_heads", int, arch.num("num_heads", int)) != arch.num("num_heads", int):
        raise ValueError(f"cfg key {mod.key('num_alibi_heads')}={mod.get('num_alibi_heads')} differs from "
                         f"{arch.key('num_heads')}; d2v gives every head an ALiBi bias")
    depth = mod.num("conv_pos_depth", int, 5)
    normalize = task.flag("normalize", False) if task is not None else False
    sample_rate = task.num("sample_rate", int, 16000) if task is not None else 16000
    audio = AudioConfig(
        conv_layers=parse_conv_spec(mod.get("feature_encoder_spec"), mod.key("feature_encoder_spec")),
        conv_bias=False,  # fairseq's data2vec 2.0 extractor has no conv bias
        conv_pos_depth=depth,
        conv_pos_kernel=max(3, mod.num("conv_pos_width", int, 95) // depth),
        conv_pos_groups=mod.num("conv_pos_groups", int, 16),
        conv_pos_norm_eps=1e-5,  # fairseq's LayerNorm default, whatever model.norm_eps is
        use_alibi=use_alibi,
        sample_rate=sample_rate,
        normalize=normalize,
    )
    enc = _encoder_config(arch, mod, "audio", audio)
    src, dst = "modality_encoders.AUDIO", "encoders.audio"
    for i in range(len(audio.conv_layers)):
        layer = f"{dst}.local_encoder.extractor.layers.{i}"
        w.move(f"{src}.local_encoder.conv_layers.{i}.0", f"{layer}.conv", parts=("weight",))
        w.move(f"{src}.local_encoder.conv_layers.{i}.2.1", f"{layer}.norm")
    w.move(f"{src}.project_features.1", f"{dst}.local_encoder.norm")
    w.move(f"{src}.project_features.2", f"{dst}.local_encoder.proj")
    for i in range(depth):
        w.move(f"{src}.relative_positional_encoder.{i + 1}.0", f"{dst}.positional_encoder.layers.{i}")
    if use_alibi:
        scale = w.take(f"{src}.alibi_scale")
        heads = enc.num_heads
        if scale.numel() not in (1, heads):
            raise CheckpointError(f"{w.model_type} weights: {w.prefix}{src}.alibi_scale has shape "
                                  f"{tuple(scale.shape)}, expected one scale or one per head ({heads})")
        w.out[f"{dst}.alibi.alibi_scale"] = scale.reshape(-1).expand(heads).clone()
    _context(w, src, dst, enc.prenet_depth, norm=True)
    return enc


def _text(arch: _Cfg, mod: _Cfg, w: _Weights) -> EncoderConfig:
    mod.require("num_extra_tokens", (0,), 0, "d2v text encoders have no extra tokens")
    mod.require("use_alibi_encoder", (False,), False, "d2v text encoders have no ALiBi")
    mod.require("learned_pos", (True,), True, "d2v text encoders have learned positions")
    mod.require("no_scale_embedding", (True,), True, "d2v does not scale token embeddings by sqrt(D)")
    mod.require("layernorm_embedding", (True,), True, "d2v text encoders normalize the embeddings")
    mod.require("no_token_positional_embeddings", (False,), False, "d2v text encoders add positions")
    src, dst = "modality_encoders.TEXT", "encoders.text"
    tokens = w.take(f"{src}.local_encoder.embed_tokens.weight")
    positions = w.take(f"{src}.local_encoder.embed_positions.weight")
    max_positions = mod.num("max_source_positions", int)
    pad_id = positions.shape[0] - max_positions - 1  # fairseq: max_source_positions + pad + 1 rows
    if not 0 <= pad_id < tokens.shape[0]:
        raise ValueError(f"the position table has {positions.shape[0]} rows, which does not fit cfg key "
                         f"{mod.key('max_source_positions')}={max_positions} (expected max + pad + 1)")
    text = TextConfig(vocab_size=int(tokens.shape[0]), max_positions=max_positions, pad_id=pad_id,
                      embed_norm_eps=1e-5)  # fairseq's LayerNorm default, whatever model.norm_eps is
    enc = _encoder_config(arch, mod, "text", text)
    w.out[f"{dst}.local_encoder.embed_tokens.weight"] = tokens
    w.out[f"{dst}.local_encoder.embed_positions.weight"] = positions
    w.move(f"{src}.local_encoder.layernorm_embedding", f"{dst}.local_encoder.layernorm")
    _context(w, src, dst, enc.prenet_depth, norm=enc.prenet_depth > 0)
    return enc


def _context(w: _Weights, src: str, dst: str, prenet_depth: int, norm: bool) -> None:
    if norm:
        w.move(f"{src}.context_encoder.norm", f"{dst}.context_encoder.norm")
    for i in range(prenet_depth):
        w.block(f"{src}.context_encoder.blocks.{i}", f"{dst}.context_encoder.blocks.{i}")


def _overlay_ema(state: dict[str, Tensor], model_type: str) -> tuple[dict[str, Tensor], list[str]]:
    """Replace the student weights by the `_ema` teacher's; returns the state and the modules the
    teacher does not hold (kept from the student)."""
    ema = state.get("_ema")
    if not isinstance(ema, dict) or not ema:
        raise ValueError(f"{model_type}: the checkpoint holds no EMA teacher (_ema); convert without --ema")
    if all(re.match(r"^\d+\.", k) for k in ema):  # ema_encoder_only: the shared blocks alone
        ema = {f"blocks.{k}": v for k, v in ema.items()}
    student = {k: v for k, v in state.items() if k != "_ema"}
    unknown = sorted(set(ema) - set(student))
    if unknown:
        raise CheckpointError(f"{model_type} weights: _ema holds keys the student has not: {', '.join(unknown[:8])}")
    kept = sorted({".".join(k.split(".")[:3] if k.startswith("modality_encoders.") else k.split(".")[:1])
                   for k in student if k not in ema and not _DROPPED.match(k)})
    return {**student, **ema}, kept


def _classifier_head(top: _Cfg, w: _Weights, labels: list[str] | None) -> HeadConfig:
    top.require("prediction_mode", ("MEAN_POOLING",), "MEAN_POOLING",
                "d2v's image classification head mean-pools the patch tokens")
    top.require("use_fc_norm", (True,), True, "d2v's image classification head normalizes the pooled vector")
    w.move("fc_norm", "head.fc_norm", absolute=True)
    w.move("head", "head.fc", absolute=True)
    classes = w.out["head.fc.weight"].shape[0]
    if top.num("num_classes", int, classes) != classes:
        raise ValueError(f"cfg key {top.key('num_classes')}={top.get('num_classes')} but the head has {classes} rows")
    return HeadConfig("mean_pool", _labels(labels, classes), "mean")


def _labels(labels: list[str] | None, classes: int) -> list[str]:
    if labels is None:
        return [str(i) for i in range(classes)]
    if len(labels) != classes:
        raise ValueError(f"{len(labels)} labels given but the classifier has {classes} classes")
    return list(labels)


def _ctc_head(top: _Cfg, w: _Weights, symbols: list[str] | None) -> tuple[HeadConfig, list[str]]:
    if symbols is None:
        raise ValueError("the CTC model's letter dictionary was not found: the checkpoint's task_state holds "
                         "none; pass its dict.ltr.txt")
    w.move("w2v_encoder.proj", "head.proj", absolute=True)
    weight, bias = w.out["head.proj.weight"], w.out["head.proj.bias"]
    if weight.shape[0] != len(symbols):
        raise ValueError(f"the CTC dictionary has {len(symbols)} symbols but w2v_encoder.proj has "
                         f"{weight.shape[0]} outputs")
    notes = []
    blank_weight, mode = top.num("blank_weight", float, 0.0), top.get("blank_mode", "add")
    if blank_weight != 0.0:  # fairseq get_logits edits class 0's logit; fold it into the layer
        if mode == "add":
            bias[0] += blank_weight
        elif mode == "set":
            weight[0].zero_()
            bias[0] = blank_weight
        else:
            raise ValueError(f"cfg key {top.key('blank_mode')}={mode!r} is not supported (add or set)")
        notes.append(f"blank_weight {blank_weight} ({mode}) is folded into the output layer's class 0")
    blank = symbols.index("<ctc_blank>") if "<ctc_blank>" in symbols else 0  # fairseq: <ctc_blank>, else bos
    ignore = [i for i, s in enumerate(symbols) if s in ("<s>", "</s>") and i != blank]  # Dictionary.string
    delimiter = "|" if "|" in symbols else None
    return HeadConfig("ctc", list(symbols), "mean", blank_id=blank, word_delimiter=delimiter,
                      ignore_ids=ignore), notes


def map_fairseq(
    checkpoint: dict[str, Any],
    ema: bool = False,
    labels: list[str] | None = None,
    dictionary: list[str] | None = None,
) -> Imported:
    """Map a loaded fairseq data2vec 2.0 checkpoint onto d2v.

    Args:
        checkpoint: the dict `load_fairseq_checkpoint` returns (cfg, model, task_state, ...); plain
            dicts are accepted for `cfg` too.
        ema: take the EMA teacher's weights (`model._ema`) instead of the student's.
        labels: class names for an image classifier (default "0".."N-1").
        dictionary: CTC output symbols in id order (e.g. `read_dictionary` of dict.ltr.txt); by
            default the dictionary in the checkpoint's task_state. Both given: they must agree.

    Returns:
        The mapped encoder config, head, float32 weights and preprocessing.

    Raises:
        ValueError: another architecture, or a cfg value d2v cannot represent (named).
        CheckpointError: a weight is missing or left over.
    """
    cfg = to_plain(checkpoint.get("cfg"))
    if not isinstance(cfg, dict):  # a bad file, not a caller's type error
        raise ValueError("the checkpoint has no cfg section (a fairseq checkpoint from before hydra configs, "  # noqa: TRY004
                         "or not a fairseq checkpoint)")
    name, top, arch, task = _model_section(cfg)
    state = checkpoint.get("model")
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{name}: the checkpoint holds no model weights")
    model_type = f"fairseq {name}"
    provenance: dict[str, Any] = {"weights": "student"}
    warnings: list[str] = []
    if ema:
        if name != PRETRAINED:
            raise ValueError(f"{model_type}: fine-tuned checkpoints hold no EMA teacher; convert without --ema")
        state, kept = _overlay_ema(state, model_type)
        provenance = {"weights": "ema", "from_student": kept}
        if kept:
            warnings.append(f"--ema: the EMA teacher does not hold {', '.join(kept)}; those are the student's "
                            "(what the teacher itself read during pretraining)")
    else:
        state = {k: v for k, v in state.items() if k != "_ema"}
    if labels is not None and name != CLASSIFIER:
        raise ValueError(f"{model_type}: --labels applies to image classifiers (mae_image_classification)")
    if dictionary is not None and name != CTC:
        raise ValueError(f"{model_type}: a CTC dictionary applies to CTC models (wav2vec_ctc)")
    w = _Weights({k: v for k, v in state.items() if isinstance(v, Tensor)}, _PREFIX[name], model_type)
    modality = _modality(arch, w.state, w.prefix)
    mod = arch.section("modalities").section(_MODALITIES[modality].lower())
    if modality == "IMAGE":
        enc = _image(arch, mod, w)
    elif modality == "AUDIO":
        if name == CTC:  # the fine-tuning task normalizes the waveform (fairseq asserts it equals w2v_args')
            task = _Cfg(cfg["task"], "task") if isinstance(cfg.get("task"), dict) else task
        enc = _audio(arch, mod, task, w)
    else:
        enc = _text(arch, mod, w)
    for i in range(enc.depth):
        w.block(f"blocks.{i}", f"blocks.{i}")
    model_type = f"{model_type} ({modality})"
    head = None
    if name == CLASSIFIER:
        if modality != "IMAGE":
            raise ValueError(f"cfg key {arch.key('supported_modality')}={modality} in an image classifier")
        head = _classifier_head(top, w, labels)
    elif name == CTC:
        if modality != "AUDIO":
            raise ValueError(f"cfg key {arch.key('supported_modality')}={modality} in a CTC speech model")
        found = dictionary_symbols(checkpoint.get("task_state"))
        if dictionary is not None and found is not None and dictionary != found:
            raise ValueError(f"the given dictionary ({len(dictionary)} symbols) differs from the one in the "
                             f"checkpoint's task_state ({len(found)} symbols)")
        head, notes = _ctc_head(top, w, dictionary if dictionary is not None else found)
        warnings += notes
    w.finish()
    _check_mlp(enc, w.out, arch.key("mlp_ratio"))
    preprocessing = default_preprocessing(enc)
    return Imported(model_type, enc, w.out, preprocessing, warnings, head, provenance)


def _check_mlp(enc: EncoderConfig, out: dict[str, Tensor], key: str) -> None:
    hidden = out["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in out else None
    if hidden is not None and hidden != int(enc.embed_dim * enc.mlp_ratio):
        raise ValueError(f"cfg key {key}={enc.mlp_ratio} gives {int(enc.embed_dim * enc.mlp_ratio)} hidden "
                         f"units but the blocks have {hidden}")
