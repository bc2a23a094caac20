"""Pretraining step time of the tiny presets, whole and split by phase, for M masked copies per sample.

One timed step is exactly what `d2v pretrain` does per update: teacher targets, the student on M
masked copies, the decoder, the loss, backward, gradient clipping, AdamW, EMA update. Batches are
real data from `d2v data` (digits, spoken digits, WordNet glosses), read before timing so that only
the model is measured; `--equal-lengths` makes batches without padding as the reference feeds them
(audio cropped to the batch's shortest clip, text packed into full blocks).

`--phases` splits the step (synchronizing the device at every boundary): masks (drawn where the
batch is made: in the data loader when the code has `BatchMasks`, else inside the step), local
encoder, teacher, student encoder, decoder, loss, backward, optimizer (clip + AdamW), EMA.
`--against TREE` times another checkout of d2v (e.g. a `git worktree` of the base commit) on the
same batches and weights, in ABBA order of subprocesses, and prints both and their ratio per phase.

    python bench/pretrain.py                                 # all modalities, M = 1 4 8
    python bench/pretrain.py --phases --clone-batch 1 ref    # phases, M = 1 and the reference M
    python bench/pretrain.py --phases --clone-batch 1 ref --against ../d2v-base
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from d2v.model import build_data2vec, build_teacher, preset
from d2v.training import collate as collate_module
from d2v.training.collate import make_collate
from d2v.training.config import PRETRAIN_REFERENCE
from d2v.training.data import PretrainBatches, build_dataset, read_split, train_tokenizer
from d2v.training.data.text import Tokenizer
from d2v.training.optim import param_groups

DATA = {"image": "digits", "audio": "spoken-digits", "text": "wordnet"}
BATCH = {"image": 16, "audio": 8, "text": 16}
REFERENCE_M = {"image": 16, "audio": 8, "text": 8}
"""M of the reference's base configs (fairseq examples/data2vec/config/v2)."""
PHASES = ("masks", "local encoder", "teacher", "student encoder", "decoder", "loss", "backward", "optimizer", "EMA")
TEXT_BLOCK = 64
"""Tokens per packed text block with --equal-lengths (the demo glosses are short)."""


def batches(modality: str, data: Path, batch_size: int, n: int, tmp: Path, equal: bool):
    cfg = preset(modality, "tiny")
    records = read_split(data / DATA[modality], "train", modality)
    tokenizer = None
    if modality == "text":
        path = tmp / "bench-tokenizer.model"
        if not path.exists():
            train_tokenizer((r.source for r in records), path, 4000)
        tokenizer = Tokenizer(path)
    if modality == "text" and equal:
        from d2v.training.data import PackedTextDataset

        dataset = PackedTextDataset(records, tokenizer, TEXT_BLOCK)
    else:
        dataset = build_dataset(cfg.encoder, records, None, True, tokenizer=tokenizer, max_tokens=128)
    sampler = PretrainBatches(len(dataset), batch_size, n, seed=0)
    collate = make_collate(modality, 0 if tokenizer is None else tokenizer.pad_id)
    out = []
    for s in range(n):
        examples = [dataset[i] for i in sampler.batch(s, 0)]
        if modality == "audio" and equal:  # the reference crops a batch to its shortest clip
            shortest = min(e.x.shape[0] for e in examples)
            examples = [e._replace(x=e.x[:shortest]) for e in examples]
        out.append(collate(examples))
    return out, tokenizer


class Phases:
    """Accumulated seconds per phase; every boundary synchronizes the device."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = self.now()
        try:
            yield
        finally:
            self.seconds[name] += self.now() - t0

    def hook(self, module: torch.nn.Module, name: str) -> None:
        """Time every forward of `module` as `name`."""
        starts = []
        module.register_forward_pre_hook(lambda *_: starts.append(self.now()))
        module.register_forward_hook(lambda *_: self.seconds.__setitem__(name, self.seconds[name] + self.now()
                                                                         - starts.pop()))

    def wrap(self, fn, name: str):
        def timed(*args, **kwargs):
            with self(name):
                return fn(*args, **kwargs)
        return timed


def measure(modality: str, clone_batch: int, data: list, tokenizer, warmup: int, steps: int, phases: bool,
            device: torch.device) -> list[dict[str, float]]:
    """Seconds per timed step: {"step": whole step, phase: seconds, ...}."""
    from d2v.model import data2vec as data2vec_module

    cfg = preset(modality, "tiny")
    cfg.mask.clone_batch = clone_batch
    if tokenizer is not None:
        cfg.encoder.text.vocab_size = tokenizer.vocab_size
    torch.manual_seed(0)
    student = build_data2vec(cfg).to(device)
    teacher = build_teacher(student, cfg).to(device)
    ref = PRETRAIN_REFERENCE[modality]
    opt = torch.optim.AdamW(param_groups(student, 0.01), lr=ref["lr"], betas=ref["betas"])
    masks = collate_module.BatchMasks(cfg) if hasattr(collate_module, "BatchMasks") else None  # new code
    timer = Phases(device)
    loss_fn = data2vec_module.data2vec_loss
    original_targets = data2vec_module.teacher_targets
    if phases:
        timer.hook(student.encoder.input_encoder.local_encoder, "local encoder")
        timer.hook(student, "student")
        timer.hook(student.decoder, "decoder")
        student.make_mask = timer.wrap(student.make_mask, "masks in step")
        data2vec_module.teacher_targets = timer.wrap(original_targets, "teacher")
    results = []
    try:
        for i in range(warmup + steps):
            batch = data[i % len(data)]
            generator = torch.Generator().manual_seed(i)
            timer.seconds.clear()
            mask = None
            if masks is not None:  # where `d2v pretrain` draws them: with the batch, in the data loader
                with timer("masks in loader"):
                    mask = masks(batch, generator)
            batch = batch.to(device)
            t0 = timer.now()
            with timer("forward"):
                out = loss_fn(student, teacher, batch.x, batch.padding_mask, mask, generator)
            with timer("backward"):
                out.loss.backward()
            with timer("optimizer"):
                torch.nn.utils.clip_grad_norm_(student.parameters(), 4.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            with timer("EMA"):
                teacher.update(student.encoder, i + 1)
            step = timer.now() - t0
            if i >= warmup:
                results.append({"step": step, **_split(timer.seconds)} if phases else {"step": step})
    finally:
        data2vec_module.teacher_targets = original_targets
    return results


def _split(s: dict[str, float]) -> dict[str, float]:
    """Raw timers -> the phases of PHASES (nested timers subtracted)."""
    masks = s["masks in loader"] + s["masks in step"]
    student = s["student"] - s["decoder"] - s["masks in step"]
    return {"masks": masks, "local encoder": s["local encoder"], "teacher": s["teacher"],
            "student encoder": student, "decoder": s["decoder"],
            "loss": s["forward"] - s["local encoder"] - s["teacher"] - s["student"], "backward": s["backward"],
            "optimizer": s["optimizer"], "EMA": s["EMA"]}


def _median(results: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def _shape(modality: str, batch) -> str:
    if modality == "image":
        return "x".join(str(s) for s in batch.x.shape[1:])
    pad = "" if batch.padding_mask is not None and batch.padding_mask.any() else ", no padding"
    if modality == "audio":
        return f"{batch.x.shape[1] / 16000:.2f} s max{pad}"
    return f"{batch.x.shape[1]} tokens max{pad}"


def run_one(args, modality: str, m: int, tmp: Path) -> tuple[dict[str, float], str]:
    data, tokenizer = batches(modality, Path(args.data), BATCH[modality], 8, tmp, args.equal_lengths)
    device = torch.device(args.device)
    results = measure(modality, m, data, tokenizer, args.warmup, args.steps, args.phases, device)
    return _median(results), _shape(modality, data[0])


def clone_batches(args, modality: str) -> list[int]:
    return [REFERENCE_M[modality] if m == "ref" else int(m) for m in args.clone_batch]


def header(args) -> str:
    return (f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} "
            f"torch threads, torch {torch.__version__}, device {args.device}, load average "
            f"{os.getloadavg()[0]:.1f} at start)")


def main_single(args) -> None:
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="d2v-bench-"))
    if args.emit_json:  # one (modality, M) for --against: medians as JSON on stdout
        modality, m = args.modalities[0], clone_batches(args, args.modalities[0])[0]
        medians, shape = run_one(args, modality, m, tmp)
        print(json.dumps({"medians": medians, "shape": shape}))
        return
    print(f"# pretraining step, tiny presets {header(args)}\n")
    cols = ["modality", "M", "batch", "input", "s/step (median)", "samples/s", "masked copies/s"]
    if args.phases:
        cols += [f"{p} ms" for p in PHASES]
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for modality in args.modalities:
        for m in clone_batches(args, modality):
            med, shape = run_one(args, modality, m, tmp)
            t, b = med["step"], BATCH[modality]
            row = [modality, str(m), str(b), shape, f"{t:.3f}", f"{b / t:.1f}", f"{b * m / t:.1f}"]
            if args.phases:
                row += [f"{med[p] * 1e3:.1f}" for p in PHASES]
            print("| " + " | ".join(row) + " |", flush=True)


def main_against(args) -> None:
    """ABBA: this checkout (B) and `--against` (A), one subprocess per (tree, modality, M), A B B A."""
    here = Path(__file__).resolve().parents[1]
    trees = {"before": Path(args.against).resolve(), "after": here}
    tmp = Path(tempfile.mkdtemp(prefix="d2v-bench-"))
    print(f"# pretraining step by phase, before ({args.against}) and after (this checkout), ABBA, "
          f"median of {args.steps} steps per run, mean of the two runs of each {header(args)}\n")
    cols = ["modality", "M", "input", "phase", "before ms", "after ms", "after / before"]
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for modality in args.modalities:
        for m in clone_batches(args, modality):
            runs = defaultdict(list)
            for which in ("before", "after", "after", "before"):
                cmd = [sys.executable, str(Path(__file__).resolve()), "--emit-json", "--phases", "--modalities",
                       modality, "--clone-batch", str(m), "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--data", str(Path(args.data).resolve()), "--device", args.device, "--tmp", str(tmp)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                if args.equal_lengths:
                    cmd.append("--equal-lengths")
                env = {**os.environ, "PYTHONPATH": str(trees[which])}
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                runs[which].append(json.loads(done.stdout.strip().splitlines()[-1]))
            shape = runs["after"][0]["shape"]
            for phase in ("step", *PHASES):
                a = statistics.mean(r["medians"][phase] for r in runs["before"])
                b = statistics.mean(r["medians"][phase] for r in runs["after"])
                ratio = f"{b / a:.2f}" if a > 1e-4 else "-"
                name = "**whole step**" if phase == "step" else phase
                print(f"| {modality} | {m} | {shape} | {name} | {a * 1e3:.1f} | {b * 1e3:.1f} | {ratio} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data", help="where `d2v data` wrote the demo datasets")
    parser.add_argument("--modalities", nargs="+", default=["image", "audio", "text"],
                        choices=["image", "audio", "text"])
    parser.add_argument("--clone-batch", nargs="+", default=["1", "4", "8"],
                        help="M values; `ref` is the reference's M (image 16, audio 8, text 8)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--phases", action="store_true", help="split each step by phase (synchronizing)")
    parser.add_argument("--equal-lengths", action="store_true",
                        help="batches without padding: audio cropped to the shortest clip, text packed")
    parser.add_argument("--against", metavar="TREE", help="another d2v checkout to compare with (ABBA)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--emit-json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for m in args.clone_batch:
        if m != "ref" and not (m.isdigit() and int(m) > 0):
            parser.error(f"--clone-batch takes positive integers or `ref`, not {m!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.against:
        main_against(args)
    else:
        main_single(args)


if __name__ == "__main__":
    main()
