"""Speech recognition throughput, in seconds of audio transcribed per second of wall-clock: a live
`d2v serve` on `/transcribe` (dynamic batching against `--max-batch-size 1`, PyTorch and
onnxruntime), and the batch job `d2v embed --task transcribe` over a folder of the same clips.

    python bench/transcribe.py                                  # a "small" CTC model, random weights
    python bench/transcribe.py --size tiny --seconds 3
    python bench/transcribe.py --model checkpoints/asr          # any CTC checkpoint (e.g. `d2v convert`ed)

Model: unless --model is given, a d2v CTC model with random weights built in --workdir (throughput
does not depend on the weights): the tiny audio preset's convolutional feature extractor and
positional convolutions with a 384-wide, 6-block Transformer ("small", as in bench/serve.py) or the
tiny preset's own ("tiny"), and a CTC head over 29 symbols (blank, `|`, A-Z, apostrophe); exported
to ONNX once. Inputs: real speech, espeak-ng phrases of 0.5 to 3 s as 22.05 kHz WAV (the server
resamples to 16 kHz), one clip per request from the serving benchmark's lean keep-alive load
generator (`serve.Connection`, ~0.2 ms of CPU per request), so that the numbers measure the server.
The job reads the same clips from a folder (each written --copies times).
"""

import argparse
import asyncio
import base64
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the serving benchmark's servers, exports and load generator
from serve import SIZES, d2v_server, drive, export_models

PHRASES = ["turn left", "stop", "three one four one five", "go forward two steps and then turn right", "nine",
           "seven eight", "open the door", "the quick brown fox jumps over the lazy dog", "zero", "play the next song",
           "set a timer for ten minutes", "yes", "no thank you", "what is the weather like tomorrow morning",
           "call home", "move back"]
LETTERS = ["<blank>", "|", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "'"]


def build_model(workdir: Path, size: str) -> Path:
    """A random-weight d2v CTC model (the tiny audio preset, widened to `size`)."""
    import torch

    from d2v.model import HeadConfig, build_encoder, preset
    from d2v.model.checkpoint import CheckpointConfig, save_checkpoint

    path = workdir / f"bench-{size}-ctc"
    if not (path / "config.json").is_file():
        torch.manual_seed(0)
        cfg = preset("audio", "tiny").encoder
        if SIZES[size]:
            cfg.embed_dim, cfg.num_heads, cfg.depth = SIZES[size]
        head = HeadConfig("ctc", LETTERS, "mean", blank_id=0, word_delimiter="|")
        save_checkpoint(path, build_encoder(cfg, head).eval(), CheckpointConfig(f"bench-{size}-ctc", cfg, head))
    return path


def make_clips(n: int = 48) -> tuple[list[bytes], list[float]]:
    """Real speech: espeak-ng phrases at several speeds, as 22.05 kHz WAV files, and their durations."""
    import soundfile as sf

    files, seconds = [], []
    for i in range(n):
        wav = subprocess.run(["espeak-ng", "-v", "en", "-s", str(130 + 10 * (i % 6)), "--stdout",
                              PHRASES[i % len(PHRASES)]], check=True, capture_output=True).stdout
        files.append(wav)
        seconds.append(sf.info(io.BytesIO(wav)).duration)
    return files, seconds


def run_job(model: Path, folder: Path, out: Path, threads: int, extra: list[str]) -> dict[str, float]:
    cmd = [sys.executable, "-m", "d2v.cli", "embed", "--task", "transcribe", "--model", str(model), "--input",
           str(folder), "--output", str(out), "--threads", str(threads), "--no-progress", *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    m = re.search(r"(\d+) of (\d+) inputs done in ([\d.]+) s", done.stderr)
    return {"items": int(m.group(1)), "seconds": float(m.group(3)), "wall": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="a CTC checkpoint directory (default: one built with random weights)")
    p.add_argument("--size", choices=list(SIZES), default="small", help="model size when --model is not given")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "d2v-bench-serve")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the servers and the job")
    p.add_argument("--configs", nargs="+", default=["torch", "torch-bs1", "onnx", "onnx-bs1"])
    p.add_argument("--copies", type=int, default=4, help="the job's folder holds each clip this many times")
    p.add_argument("--no-job", action="store_true", help="the server only")
    args = p.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    ckpt = args.model or build_model(args.workdir, args.size)
    models = {"torch": ckpt}
    if any(c.startswith("onnx") for c in args.configs):
        models["onnx"] = export_models({"asr": ckpt}, args.workdir)["asr"]
    files, seconds = make_clips()
    inputs = [base64.b64encode(f).decode() for f in files]
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; model {ckpt}; {len(files)} clips, "
          f"{min(seconds):.2f}-{max(seconds):.2f} s (mean {sum(seconds) / len(seconds):.2f} s); "
          f"{args.threads} intra-op thread(s)", flush=True)
    print("| server | concurrency | requests/s | audio s/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|---|",
          flush=True)
    for name in args.configs:
        server = d2v_server({"asr": models[name.split("-")[0]]},
                            ["--max-batch-size", "1"] if name.endswith("bs1") else [], args.threads)
        try:
            for c in args.concurrency:
                r = asyncio.run(drive(server.url, "asr", inputs, c, args.seconds, path="/transcribe", marker=b'"text"',
                                      weights=seconds))
                print(f"| {name} | {c} | {r['rate']:.1f} | {r['weighted_rate']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} "
                      f"| {r['errors']} |", flush=True)
        finally:
            server.stop()
    if args.no_job:
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        for k in range(args.copies):
            for i, f in enumerate(files):
                (folder / f"{k:02d}-{i:03d}.wav").write_bytes(f)
        total = args.copies * sum(seconds)
        print(f"\nd2v embed --task transcribe over {args.copies * len(files)} files ({total:.0f} s of audio):\n"
              "| job | backend | files | audio s/s | (with start-up) | files/s |\n|---|---|---|---|---|---|", flush=True)
        for name in args.configs:
            extra = ["--max-batch-size", "1"] if name.endswith("bs1") else []
            r = run_job(models[name.split("-")[0]], folder, Path(tmp) / name, args.threads, extra)
            print(f"| {'batch size 1' if extra else 'batched'} | {name.split('-')[0]} | {r['items']} | "
                  f"{total / r['seconds']:.1f} | {total / r['wall']:.1f} | {r['items'] / r['seconds']:.1f} |", flush=True)
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
