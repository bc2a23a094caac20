"""Cheaper numbers on CPU: speed and fidelity of bf16 weights and dynamic int8 linear layers against
float32, per model, on real inputs.

For each model (the demo models of models/, and the "small" size of bench/serve.py's build_models)
and each variant, the backend is loaded as `d2v serve` would load it (`load_backend`, the load-time
fidelity check off so that every variant is measured):

    fp32         PyTorch, float32 (the reference)
    bf16         PyTorch, bf16 weights on CPU (--dtype bfloat16)
    int8-torch   PyTorch, dynamic int8 nn.Linear (--quantize int8 on a checkpoint)
    fp32-onnx    onnxruntime, the export as written
    int8-onnx    onnxruntime, the export's int8 copy (--quantize int8 on an export)

Throughput: every variant embeds the same real inputs in batches of --batch; the variants are timed
in ABBA order (v1..vn then vn..v1, --rounds times) and each one's inputs/s is reported with its ratio
to fp32 of the same backend (PyTorch fp32 for bf16 and int8-torch, onnx fp32 for int8-onnx), all
measured in this one run. Fidelity, against PyTorch fp32 on the same inputs: cosine of each pooled
embedding (mean and min over inputs), top-1 agreement of classification heads, and for CTC models
the share of identical greedy transcripts.

Real inputs: scikit-learn's digits (images), espeak-ng speaking digit words (audio), WordNet noun
glosses (text).

    python bench/precision.py                       # demo models + small, 2 rounds
    python bench/precision.py --sizes demo --rounds 1
    python bench/precision.py --matmul --threads 1   # only: this CPU's bf16 matmul speed against fp32
"""

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEMOS = ("digits-image", "spoken-digits-audio", "wordnet-text", "spoken-commands-ctc")
VARIANTS = ("fp32", "bf16", "int8-torch", "fp32-onnx", "int8-onnx")
BASELINE = {"fp32": "fp32", "bf16": "fp32", "int8-torch": "fp32", "fp32-onnx": "fp32-onnx", "int8-onnx": "fp32-onnx"}


def load(variant: str, ckpt: Path, export: Path | None, threads: int, cache: Path):
    from d2v.server.backends import load_backend

    if variant.endswith("onnx"):
        return load_backend(export, threads=threads, min_cosine=0, cache_dir=str(cache),
                            quantize="int8" if variant == "int8-onnx" else "none")
    return load_backend(ckpt, threads=threads, min_cosine=0, dtype="bfloat16" if variant == "bf16" else "float32",
                        quantize="int8" if variant == "int8-torch" else "none")


def real_inputs(ckpt: Path, raw: dict[str, list[str]], n: int) -> list[np.ndarray]:
    from d2v.server.decode import make_input_decoder

    config = json.loads((ckpt / "config.json").read_text())
    dec = make_input_decoder(config, ckpt, 10**8, 60, 0)
    values = raw[config["modality"]]
    return [dec(values[i % len(values)], i).data for i in range(n)]


def forward(backend, items: list[np.ndarray], tasks, batch: int) -> list[np.ndarray]:
    out = []
    for i in range(0, len(items), batch):
        out += backend.run(items[i:i + batch], tasks[i:i + batch])
    return out


def fidelity(ref: dict[str, list[np.ndarray]], got: dict[str, list[np.ndarray]], backend) -> dict[str, float | None]:
    from d2v.ctc import greedy_decode
    from d2v.server.backends.fidelity import cosine

    cos = np.array([cosine(a, b) for a, b in zip(ref["embed"], got["embed"], strict=True)])
    out: dict[str, float | None] = {"mean_cos": float(cos.mean()), "min_cos": float(cos.min()), "top1": None,
                                    "same_text": None}
    if "classify" in ref:
        out["top1"] = float(np.mean([a.argmax() == b.argmax() for a, b in zip(ref["classify"], got["classify"],
                                                                                strict=True)]))
    if "transcribe" in ref:
        same = [greedy_decode(a[None], backend.vocabulary) == greedy_decode(b[None], backend.vocabulary)
                for a, b in zip(ref["transcribe"], got["transcribe"], strict=True)]
        out["same_text"] = float(np.mean(same))
    return out


def bench_model(name: str, ckpt: Path, export: Path | None, raw: dict[str, list[str]], args: argparse.Namespace,
                cache: Path) -> list[dict]:
    from d2v.server.backends import Task

    variants = [v for v in args.variants if export is not None or not v.endswith("onnx")]
    backends = {v: load(v, ckpt, export, args.threads, cache) for v in variants}
    first = backends[variants[0]]
    items = real_inputs(ckpt, raw, args.inputs)
    heads = (["classify"] if first.labels else []) + (["transcribe"] if first.vocabulary else [])
    outputs = {}
    for v, b in backends.items():
        outputs[v] = {k: forward(b, items, [Task(k)] * len(items), args.batch) for k in ["embed", *heads]}
    embed = [Task("embed")] * len(items)
    spent = dict.fromkeys(variants, 0.0)
    for _ in range(args.rounds):
        for v in variants + variants[::-1]:  # ABBA
            t = time.perf_counter()
            forward(backends[v], items, embed, args.batch)
            spent[v] += time.perf_counter() - t
    rate = {v: 2 * args.rounds * len(items) / spent[v] for v in variants}
    rows = []
    for v in variants:
        rows.append({"model": name, "modality": first.modality, "variant": v, "inputs_per_s": rate[v],
                     "ratio": rate[v] / rate[BASELINE[v]] if BASELINE[v] in rate else None,
                     **fidelity(outputs["fp32"], outputs[v], first)})
    del backends
    gc.collect()
    return rows


def matmul_ratio(rounds: int = 3) -> str:
    """One (512 x 1024) @ (1024 x 1024) matmul, bf16 against fp32, timed ABBA: the CPU's bf16 speed."""
    import torch

    a, b = torch.randn(512, 1024), torch.randn(1024, 1024)
    pairs = {torch.float32: (a, b), torch.bfloat16: (a.bfloat16(), b.bfloat16())}
    spent = dict.fromkeys(pairs, 0.0)
    for x, y in pairs.values():
        x @ y
    for _ in range(rounds):
        for dt in [torch.float32, torch.bfloat16, torch.bfloat16, torch.float32]:
            x, y = pairs[dt]
            t = time.perf_counter()
            for _ in range(5):
                x @ y
            spent[dt] += time.perf_counter() - t
    return (f"matmul (512x1024 @ 1024x1024), {torch.get_num_threads()} threads: bf16 runs at "
            f"{spent[torch.float32] / spent[torch.bfloat16]:.3f}x the speed of fp32 "
            f"(fp32 {spent[torch.float32] / (10 * rounds) * 1e3:.1f} ms, bf16 {spent[torch.bfloat16] / (10 * rounds) * 1e3:.1f} ms)")


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="demo,small", help="demo (the models/ checkpoints) and/or small")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--onnx-sizes", default="demo", help="sizes also measured through exports (exporting is slow)")
    p.add_argument("--inputs", type=int, default=32, help="real inputs per model")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2, help="ABBA rounds")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: the library default)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/d2v-bench-precision"))
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--matmul", action="store_true", help="only time one matmul in bf16 against fp32")
    args = p.parse_args()
    if args.matmul:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(matmul_ratio())
        return
    args.variants = [v for v in args.variants.split(",") if v]
    assert args.variants[0] == "fp32" and set(args.variants) <= set(VARIANTS), f"variants: fp32 first, of {VARIANTS}"
    from serve import build_models, export_models, make_inputs

    import d2v

    args.workdir.mkdir(parents=True, exist_ok=True)
    raw = make_inputs(max(args.inputs, 20))
    root = Path(d2v.__file__).resolve().parents[1] / "models"
    models: dict[str, Path] = {}
    sizes = args.sizes.split(",")
    if "demo" in sizes:
        models |= {m: root / m for m in DEMOS}
    if "small" in sizes:
        models |= {f"small-{m}": p for m, p in build_models(args.workdir, "small").items()}
    onnx = {n for n in models if ("small" if n.startswith("small-") else "demo") in args.onnx_sizes.split(",")}
    needs_onnx = any(v.endswith("onnx") for v in args.variants)
    exports = export_models({n: models[n] for n in onnx}, args.workdir) if needs_onnx else {}
    rows = []
    for name, ckpt in models.items():
        print(f"measuring {name}", file=sys.stderr)
        rows += bench_model(name, ckpt, exports.get(name), raw, args, args.workdir / "cache")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\n{args.inputs} real inputs per model, batches of {args.batch}, {args.rounds} ABBA rounds, "
          f"threads={args.threads or 'default'}\n")
    print("| model | variant | inputs/s | x fp32 (same backend) | cosine mean | cosine min | top-1 agree | "
          "same transcript |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | {r['inputs_per_s']:.1f} | {fmt(r['ratio'], '.2f')} | "
              f"{r['mean_cos']:.5f} | {r['min_cos']:.5f} | {fmt(r['top1'], '.3f')} | {fmt(r['same_text'], '.3f')} |")


if __name__ == "__main__":
    main()
