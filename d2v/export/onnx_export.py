"""`d2v export`: checkpoint directory -> ONNX export directory, verified with onnxruntime.

    <export>/
      config.json       the checkpoint's config plus an "onnx" section: opset, graph files, input and
                        output names, dynamic axes, precision, and the measured parity
      embed.onnx        inputs -> token_states, token_padding_mask, pooled_embedding
      classify.onnx     inputs -> logits (only when the checkpoint has a classification head)
      emissions.onnx    inputs -> emissions, frame_padding_mask (only when it has a CTC head)
      tokenizer files   text models: the checkpoint's tokenizer (d2v.tokenizer), read and checked
                        against the model before anything is exported

Graphs are traced with `torch.export` (the dynamo ONNX exporter) on the PyTorch reference path
(`kernels.exportable()`), so no Triton op reaches a graph; batch and length axes are dynamic. Each
graph passes `onnx.checker`, then runs in onnxruntime (CPU provider) against PyTorch on a batch of
one, padded batches and several lengths. Padding masks must be identical; the max abs difference of
every other output over real (unpadded) positions is written to config.json, and the export fails when it exceeds the tolerance (1e-4 in fp32) or is
not a finite number (a NaN or Inf output).

`--out` is written atomically (`d2v.atomic.atomic_directory`) and may only name a new path, an empty
directory or an earlier d2v export: never the checkpoint itself, another checkpoint, a file, or any
other directory (`check_out`). Temporaries left by a killed export are removed when the next one
starts.

Options: `fp16` converts the graphs' weights and arithmetic to float16 (inputs and outputs stay
float32) for the CUDA provider; `optimize` runs onnxruntime's transformer optimizer (attention,
LayerNorm and GELU fusions). Each variant's parity is measured on what is actually written.
"""

import argparse
import json
import math
import sys
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from d2v import kernels
from d2v.atomic import atomic_directory
from d2v.export import OPSET
from d2v.export.graphs import (
    EMBED_OUTPUTS,
    EMISSIONS_OUTPUTS,
    MASK_OUTPUTS,
    ClassifyGraph,
    EmbedGraph,
    EmissionsGraph,
    GraphSpec,
    graph_spec,
    parity_inputs,
)
from d2v.export.runtime import ExportFormatError, read_export_config
from d2v.legacy_temporaries import clean_temporaries
from d2v.model.checkpoint import WEIGHTS, CheckpointConfig, CheckpointError, load_checkpoint
from d2v.tokenizer import TextTokenizer, TokenizerError, load_tokenizer

__all__ = ["ExportError", "ExportOptions", "check_out", "export_checkpoint", "run_export"]


class ExportError(RuntimeError):
    """The export failed, or its graphs do not match PyTorch within the tolerance."""


@dataclass
class ExportOptions:
    fp16: bool = False
    """Convert weights and arithmetic to float16 (for the CUDA provider); I/O stays float32."""
    optimize: bool = False
    """Run onnxruntime's transformer optimizer over the graphs."""
    tolerance: float | None = None
    """Max abs difference allowed against PyTorch fp32: 1e-4 for fp32 graphs, 2e-2 for fp16."""
    opset: int = OPSET


def _dynamic_shapes(spec: GraphSpec, n_inputs: int) -> tuple[dict[int, Any], ...]:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    length = None
    if spec.min_length:
        name = "tokens" if spec.max_length else "samples"
        length = torch.export.Dim(name, min=spec.min_length, max=spec.max_length or (1 << 31) - 1)
    shapes = []
    for _ in range(n_inputs):
        shapes.append({0: batch} if length is None else {0: batch, 1: length})
    return tuple(shapes)


def _export_graph(module: nn.Module, example: tuple[torch.Tensor, ...], spec: GraphSpec, out_names: list[str],
                  path: Path, opset: int) -> None:
    with kernels.exportable(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, example, dynamo=True, opset_version=opset, input_names=spec.input_names,
            output_names=out_names, dynamic_shapes=_dynamic_shapes(spec, len(example)), verbose=False,
        )
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)


def _to_fp16(path: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(path))
    model = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(model, str(path))


def _optimize(path: Path, modality: str, num_heads: int, hidden: int) -> dict[str, int]:
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = "vit" if modality == "image" else "bert"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimize_model(str(path), model_type=model_type, num_heads=num_heads, hidden_size=hidden,
                                   opt_level=1)
    optimized.save_model_to_file(str(path))
    return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _parity(module: nn.Module, path: Path, inputs: list[tuple[torch.Tensor, ...]], names: list[str],
            outputs: list[str]) -> float:
    """Max abs difference between onnxruntime and PyTorch over every output (real positions only);
    NaN as soon as any compared value is not finite on either side."""
    session = _session(path)
    worst = 0.0
    for example in inputs:
        with torch.inference_mode():
            expected = module(*example)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(outputs, {n: t.numpy() for n, t in zip(names, example, strict=False)})
        ref = dict(zip(outputs, expected, strict=True))
        res = dict(zip(outputs, got, strict=True))
        for mask in MASK_OUTPUTS:
            if mask in ref and not np.array_equal(res[mask], ref[mask].numpy()):
                raise ExportError(f"{path.name}: onnxruntime and PyTorch disagree on the {mask.replace('_', ' ')}")
        for name in outputs:
            if name in MASK_OUTPUTS:
                continue
            r, g = ref[name].float().numpy(), res[name].astype(np.float32)
            if r.shape != g.shape:
                raise ExportError(f"{path.name}: output {name} has shape {g.shape} in onnxruntime, {r.shape} in PyTorch")
            if name in ("token_states", "emissions"):  # real positions only
                real = ~ref["token_padding_mask" if name == "token_states" else "frame_padding_mask"].numpy()
                r, g = r[real], g[real]
            if not (np.isfinite(r).all() and np.isfinite(g).all()):
                return math.nan
            worst = max(worst, float(np.abs(r - g).max()) if r.size else 0.0)
    return worst


def _io(path: Path) -> dict[str, Any]:
    model = onnx.load(str(path), load_external_data=False)

    def describe(values) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append({"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims})
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def _checked_tokenizer(checkpoint: Path, config: CheckpointConfig) -> TextTokenizer | None:
    """A text checkpoint's tokenizer, read and checked against the model (None for other modalities
    and for text models that take token ids only)."""
    if config.modality != "text":
        return None
    try:
        return load_tokenizer(checkpoint, config.preprocessing, config.encoder.text.vocab_size)
    except TokenizerError as e:
        raise CheckpointError(str(e)) from None


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def check_out(checkpoint: Path, out: Path) -> None:
    """Refuse an `--out` that the export must not replace: the checkpoint itself or a directory
    holding it, a file, any checkpoint, or any directory that is neither empty nor a d2v export.

    Raises:
        ExportError: naming `out` and why."""
    if not out.exists() and not out.is_symlink():
        return
    src, dst = checkpoint.resolve(), out.resolve()
    if _inside(src, dst):
        raise ExportError(f"refusing to replace {out}: it is (or holds) the checkpoint being exported")
    if out.is_symlink() or not out.is_dir():
        raise ExportError(f"refusing to replace {out}: it is not a directory")
    if not any(out.iterdir()):
        return
    if (out / WEIGHTS).exists():
        raise ExportError(f"refusing to replace {out}: it is a d2v checkpoint, not an export")
    try:
        read_export_config(out)
    except ExportFormatError:
        raise ExportError(f"refusing to replace {out}: it exists and is not a d2v export directory") from None


def export_checkpoint(checkpoint: str | Path, out: str | Path, options: ExportOptions | None = None) -> dict[str, Any]:
    """Export a checkpoint directory to an ONNX export directory, atomically.

    Returns:
        The "onnx" section written to config.json (graphs, parity, options).

    Raises:
        CheckpointError: the checkpoint cannot be read, or its tokenizer cannot be read or does not fit.
        ExportError: `out` must not be replaced (see `check_out`), the export fails, or a graph's
            parity exceeds the tolerance or is not finite.
    """
    options = options or ExportOptions()
    tolerance = options.tolerance if options.tolerance is not None else (2e-2 if options.fp16 else 1e-4)
    checkpoint, out = Path(checkpoint), Path(out)
    check_out(checkpoint, out)
    model, config = load_checkpoint(checkpoint)
    tokenizer = _checked_tokenizer(checkpoint, config)
    torch.manual_seed(0)
    spec = graph_spec(config)
    pooling = config.head.pooling if config.head is not None else "mean"
    graphs: dict[str, tuple[nn.Module, list[str]]] = {"embed": (EmbedGraph(model, pooling).eval(), EMBED_OUTPUTS)}
    if config.head is not None and config.head.type == "ctc":
        graphs["emissions"] = (EmissionsGraph(model).eval(), EMISSIONS_OUTPUTS)
    elif config.head is not None:
        graphs["classify"] = (ClassifyGraph(model).eval(), ["logits"])
    inputs = parity_inputs(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_temporaries(out.parent, [out.name])
    with atomic_directory(out) as tmp:
        section: dict[str, Any] = {
            "opset": options.opset,
            "precision": "float16" if options.fp16 else "float32",
            "optimized": options.optimize,
            "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in spec.dynamic_axes.items()},
            "graphs": {},
            "parity": {},
        }
        for name, (module, outputs) in graphs.items():
            path = tmp / f"{name}.onnx"
            try:
                _export_graph(module, inputs[0], spec, outputs, path, options.opset)
            except Exception as e:
                raise ExportError(f"exporting {name}.onnx failed: {type(e).__name__}: {str(e)[:2000]}") from e
            graph: dict[str, Any] = {"file": path.name, **_io(path)}
            if options.optimize:
                graph["fusions"] = _optimize(path, config.modality, config.encoder.num_heads, config.encoder.embed_dim)
            if options.fp16:
                _to_fp16(path)
            diff = _parity(module, path, inputs, spec.input_names, outputs)
            if not math.isfinite(diff):
                raise ExportError(f"{name}.onnx: the outputs of onnxruntime or PyTorch are not finite (NaN or Inf); "
                                  f"parity cannot be established")
            section["graphs"][name] = graph
            section["parity"][name] = {
                "max_abs_diff": diff,
                "tolerance": tolerance,
                "provider": "CPUExecutionProvider",
                "inputs": [[list(t.shape) for t in example] for example in inputs],
            }
            if not diff <= tolerance:
                raise ExportError(f"{name}.onnx differs from PyTorch by {diff:.3g} (tolerance {tolerance:g})")
        data = config.to_dict()
        data["provenance"] = {**data["provenance"], "exported_from": str(checkpoint),
                              "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "torch": torch.__version__, "onnx": onnx.__version__}
        data["onnx"] = section
        if tokenizer is not None:  # under its canonical names, which the export's config names
            data["preprocessing"]["tokenizer"] = tokenizer.files.copy_to(tmp).spec.to_field()
        (tmp / "config.json").write_text(json.dumps(data, indent=2) + "\n")
        check_out(checkpoint, out)  # again: `out` may have changed while the graphs were exported
    return section


def run_export(args: argparse.Namespace) -> int:
    options = ExportOptions(args.fp16, args.optimize, args.tolerance, args.opset)
    try:
        section = export_checkpoint(args.checkpoint, args.out, options)
    except (CheckpointError, ExportError) as e:
        print(f"d2v export: error: {e}", file=sys.stderr)
        return 2
    for name, p in section["parity"].items():
        print(f"{args.out / section['graphs'][name]['file']}: max abs diff vs PyTorch {p['max_abs_diff']:.2e} "
              f"(tolerance {p['tolerance']:g}, {section['precision']})")
    return 0
