"""Parameter counts of every preset next to the reference models, and the tiny presets' speed on
this machine's CPU: inference forward and one pretraining step (teacher + M student copies +
backward).

    python bench/presets.py [--repeats 10]
"""

import argparse
import statistics
import time

import torch

from d2v.model import build_data2vec, build_encoder, build_teacher, data2vec_loss, preset

# Published encoder sizes of the models each preset reproduces (millions of parameters).
REFERENCE = {
    ("image", "base"): ("ViT-B/16 (data2vec 2.0 / MAE base)", 86),
    ("image", "large"): ("ViT-L/16", 304),
    ("audio", "base"): ("wav2vec 2.0 / data2vec Base", 95),
    ("audio", "large"): ("wav2vec 2.0 / data2vec Large", 317),
    ("text", "base"): ("RoBERTa base", 125),
    ("text", "large"): ("RoBERTa large", 355),
}


def inputs(modality: str, cfg, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(0)
    if modality == "image":
        c = cfg.encoder.image
        return torch.rand(batch, c.in_chans, c.image_size, c.image_size, generator=g), None
    if modality == "audio":
        return torch.randn(batch, cfg.encoder.audio.sample_rate, generator=g), None  # 1 s clips
    return torch.randint(4, cfg.encoder.text.vocab_size, (batch, 64), generator=g), None


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def time_tiny(modality: str, batch: int, repeats: int) -> tuple[float, float, int]:
    """Median ms of an inference forward and of one pretraining step of the tiny preset."""
    cfg = preset(modality, "tiny")
    x, pad = inputs(modality, cfg, batch)
    model = build_encoder(cfg.encoder).eval()
    with torch.inference_mode():
        fwd = timed(lambda: model.forward_features(x, pad), repeats)
    student = build_data2vec(cfg).train()
    teacher = build_teacher(student, cfg)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)

    def step() -> None:
        out = data2vec_loss(student, teacher, x, pad, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        teacher.update(student.encoder, 1)

    return fwd, timed(step, repeats), cfg.mask.clone_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)

    print("## Parameter counts (encoder only; the pretraining decoder in brackets)\n")
    print("| preset | encoder params | decoder params | reference model | reference params |")
    print("|---|---:|---:|---|---:|")
    for modality in ("image", "audio", "text"):
        for size in ("tiny", "base", "large"):
            cfg = preset(modality, size)
            with torch.device("meta"):
                student = build_data2vec(cfg)
            enc = sum(p.numel() for p in student.encoder.parameters())
            dec = sum(p.numel() for p in student.decoder.parameters())
            ref, ref_n = REFERENCE.get((modality, size), ("-", None))
            print(f"| {modality}-{size} | {enc / 1e6:.2f}M | {dec / 1e6:.2f}M | {ref} | "
                  f"{'-' if ref_n is None else f'{ref_n}M'} |")

    print(f"\n## Tiny presets on CPU ({torch.get_num_threads()} threads), batch {args.batch}, "
          f"median of {args.repeats}\n")
    print("| preset | input | forward ms | samples/s | pretrain step ms (M copies) |")
    print("|---|---|---:|---:|---:|")
    for modality in ("image", "audio", "text"):
        fwd, train, m = time_tiny(modality, args.batch, args.repeats)
        x, _ = inputs(modality, preset(modality, "tiny"), args.batch)
        print(f"| {modality}-tiny | {tuple(x.shape)} | {fwd:.1f} | {args.batch / fwd * 1e3:.0f} | {train:.1f} (M={m}) |")

if __name__ == "__main__":
    main()
