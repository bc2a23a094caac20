"""The data2vec 2.0 multi-mask claim at small scale: downstream accuracy against pretraining
wall-clock, M = 8 masked copies per sample against M = 1, same batch of samples per step.

For each M: a short calibration gives seconds per step; a pretraining run is then sized to the same
wall-clock budget (its own cosine schedule and EMA anneal end at the budget), with a training
checkpoint at each fraction of it. Every checkpoint's student is fine-tuned with the same budget (a
fixed labelled subset, fixed epochs) and tested. A from-scratch fine-tune is the 0-second point.
Prints a Markdown table, writes `<out>/multimask.json` and, with matplotlib installed,
`<out>/multimask.png`.

    python bench/multimask.py --data data/digits --out runs/multimask --budget 240
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from d2v.training.checkpointing import export_student
from d2v.training.config import FinetuneConfig, PretrainConfig
from d2v.training.finetune import finetune
from d2v.training.metrics import read_metrics
from d2v.training.pretrain import pretrain


def pretrain_config(args: argparse.Namespace, m: int, out: Path, steps: int, every: int) -> PretrainConfig:
    return PretrainConfig(args.modality, args.data, out=str(out), steps=steps, batch_size=args.batch_size,
                          clone_batch=m, ema_decay=args.ema_decay, ema_end_decay=args.ema_end_decay,
                          ema_anneal_end_step=steps, crop_scale_min=args.crop_scale_min, hflip=args.hflip,
                          checkpoint_every=every, keep_checkpoints=1000, log_every=5, progress=False,
                          seed=args.seed)


def finetune_accuracy(args: argparse.Namespace, init: Path | None, out: Path) -> float:
    cfg = FinetuneConfig(args.data, out=str(out), init=None if init is None else str(init),
                         modality=args.modality if init is None else None, labels_per_class=args.labels_per_class,
                         epochs=args.finetune_epochs, crop_scale_min=args.finetune_crop_scale_min, hflip=args.hflip,
                         progress=False, seed=args.seed)
    finetune(cfg)
    return json.loads((out / "results.json").read_text())["test_accuracy"]


def seconds_per_step(args: argparse.Namespace, m: int, out: Path) -> float:
    pretrain(pretrain_config(args, m, out, steps=args.calibration_steps, every=10**9))
    records = read_metrics(out / "metrics.jsonl")
    return statistics.median(r["s_per_step"] for r in records[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/digits")
    parser.add_argument("--modality", default="image")
    parser.add_argument("--out", default="runs/multimask")
    parser.add_argument("--clone-batch", nargs="+", type=int, default=[8, 1])
    parser.add_argument("--budget", type=float, default=240.0, help="pretraining seconds per M")
    parser.add_argument("--points", type=int, default=4, help="checkpoints along the budget")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ema-decay", type=float, default=0.99)
    parser.add_argument("--ema-end-decay", type=float, default=0.999)
    parser.add_argument("--crop-scale-min", type=float, default=0.6)
    parser.add_argument("--hflip", type=lambda s: s.lower() == "true", default=False)
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=40)
    parser.add_argument("--finetune-crop-scale-min", type=float, default=0.8)
    parser.add_argument("--calibration-steps", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = [{"M": "-", "step": 0, "pretrain_s": 0.0,
             "test_accuracy": finetune_accuracy(args, None, out / "scratch"), "note": "from scratch"}]
    for m in args.clone_batch:
        s = seconds_per_step(args, m, out / f"calibrate-M{m}")
        every = max(int(args.budget / s) // args.points, 1)
        steps = every * args.points  # checkpoints at each fraction of the budget, the last one at the end
        run = out / f"pretrain-M{m}"
        t0 = time.perf_counter()
        pretrain(pretrain_config(args, m, run, steps, every))
        print(f"M={m}: {steps} steps ({s:.3f} s/step calibrated) in {time.perf_counter() - t0:.0f} s", flush=True)
        for ckpt in sorted((run / "checkpoints").glob("step-*")):
            state = json.loads((ckpt / "state.json").read_text())
            student = export_student(ckpt, out / f"student-M{m}-{ckpt.name}")
            acc = finetune_accuracy(args, student, out / f"finetune-M{m}-{ckpt.name}")
            rows.append({"M": m, "step": state["step"], "pretrain_s": round(state["elapsed"], 1),
                         "samples": state["samples"], "test_accuracy": acc, "note": ""})
            print(rows[-1], flush=True)
    (out / "multimask.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")

    print("\n| M | pretraining steps | pretraining wall-clock (s) | samples seen | test accuracy |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['M']} | {r['step']} | {r['pretrain_s']:.0f} | {r.get('samples', 0)} | "
              f"{r['test_accuracy']:.1%} {r['note']} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m in args.clone_batch:
        pts = [(0.0, rows[0]["test_accuracy"])] + [(r["pretrain_s"], r["test_accuracy"]) for r in rows if r["M"] == m]
        ax.plot(*zip(*pts, strict=True), marker="o", label=f"M = {m}")
    ax.set_xlabel("pretraining wall-clock (s)")
    ax.set_ylabel("test accuracy after fine-tuning")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "multimask.png", dpi=120)


if __name__ == "__main__":
    main()
