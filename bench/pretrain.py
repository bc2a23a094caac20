"""Pretraining throughput of the tiny presets for M = 1, 4, 8 masked copies per sample.

One timed step is exactly what `d2v pretrain` does per update: teacher targets, the student on M
masked copies, backward, gradient clipping, AdamW, EMA update. Batches are real data from
`d2v data` (digits, spoken digits, WordNet glosses), read once before timing so that only the model
is measured. Prints a Markdown table.

    python bench/pretrain.py                          # all modalities, M = 1 4 8
    python bench/pretrain.py --modalities image --clone-batch 1 8 --steps 20
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from d2v.model import build_data2vec, build_teacher, preset
from d2v.training.collate import make_collate
from d2v.training.config import PRETRAIN_REFERENCE
from d2v.training.data import PretrainBatches, build_dataset, read_split, train_tokenizer
from d2v.training.data.text import Tokenizer
from d2v.training.optim import param_groups
from d2v.training.pretrain import PretrainLoss

DATA = {"image": "digits", "audio": "spoken-digits", "text": "wordnet"}
BATCH = {"image": 16, "audio": 8, "text": 16}


def batches(modality: str, data: Path, batch_size: int, n: int, tmp: Path):
    cfg = preset(modality, "tiny")
    records = read_split(data / DATA[modality], "train", modality)
    tokenizer = None
    if modality == "text":
        path = tmp / "bench-tokenizer.model"
        if not path.exists():
            train_tokenizer((r.source for r in records), path, 4000)
        tokenizer = Tokenizer(path)
    dataset = build_dataset(cfg.encoder, records, None, True, tokenizer=tokenizer, max_tokens=128)
    sampler = PretrainBatches(len(dataset), batch_size, n, seed=0)
    collate = make_collate(modality)
    return [collate([dataset[i] for i in sampler.batch(s, 0)]) for s in range(n)], tokenizer


def measure(modality: str, clone_batch: int, data: list, tokenizer, warmup: int, steps: int) -> list[float]:
    cfg = preset(modality, "tiny")
    cfg.mask.clone_batch = clone_batch
    if tokenizer is not None:
        cfg.encoder.text.vocab_size = tokenizer.vocab_size
    torch.manual_seed(0)
    student = build_data2vec(cfg)
    teacher = build_teacher(student, cfg)
    step_fn = PretrainLoss(student, teacher)
    ref = PRETRAIN_REFERENCE[modality]
    opt = torch.optim.AdamW(param_groups(student, 0.01), lr=ref["lr"], betas=ref["betas"])
    times = []
    for i in range(warmup + steps):
        batch = data[i % len(data)]
        t0 = time.perf_counter()
        out = step_fn(batch.x, batch.padding_mask, torch.Generator().manual_seed(i))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 4.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        teacher.update(student.encoder, i + 1)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data", help="where `d2v data` wrote the demo datasets")
    parser.add_argument("--modalities", nargs="+", default=["image", "audio", "text"])
    parser.add_argument("--clone-batch", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# pretraining throughput, tiny presets ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} at start)\n")
    print("| modality | M | batch | input | s/step (median) | samples/s | masked copies/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    tmp = Path(tempfile.mkdtemp(prefix="d2v-bench-"))
    for modality in args.modalities:
        data, tokenizer = batches(modality, Path(args.data), BATCH[modality], 8, tmp)
        shape = "x".join(str(s) for s in data[0].x.shape[1:]) if modality == "image" else (
            f"{data[0].x.shape[1] / 16000:.2f} s max" if modality == "audio" else f"{data[0].x.shape[1]} tokens max")
        for m in args.clone_batch:
            times = measure(modality, m, data, tokenizer, args.warmup, args.steps)
            t = statistics.median(times)
            b = BATCH[modality]
            print(f"| {modality} | {m} | {b} | {shape} | {t:.3f} | {b / t:.1f} | {b * m / t:.1f} |", flush=True)


if __name__ == "__main__":
    main()
