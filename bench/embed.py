"""`d2v embed` against `d2v serve` on the same collections, the same model and the same backend: items/s
for embedding a whole collection offline, per modality and backend.

    d2v data                                      # the demo collections in ./data, once
    python bench/embed.py                         # "small" models with random weights, in --workdir
    python bench/embed.py --limit 400 --backends torch --threads 2

Collections (real files from `d2v data`): every digit PNG under data/digits (1,797), the first
--limit spoken-digit FLAC clips (a JSONL manifest of paths), the first --limit WordNet glosses (a
text file). For each, three ways to embed it all:

- `d2v embed` as a user runs it (a fresh process; items/s over its embedding phase, and the process's
  whole wall-clock including start-up);
- a live `d2v serve` with the same engine settings, fed by a client that reads each file and posts it
  alone (16 requests in flight), as people script it against an HTTP service;
- the same server fed 16 inputs per request (4 requests in flight): a client that batches for it.

The server's numbers start after it is ready (model loaded, warmed up): start-up is not counted.
"""

import argparse
import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the serving benchmark's models, servers and load generator
from serve import Connection, build_models, d2v_server, export_models

MODALITIES = ("image", "audio", "text")


def collections(data: Path, workdir: Path, limit: int) -> dict[str, Path]:
    """The `--input` of each modality's job."""
    if not (data / "digits").is_dir():
        sys.exit(f"{data}/digits is missing: run `d2v data` first (or pass --data)")
    clips = [json.loads(line) for split in ("train", "validation", "test")
             for line in (data / "spoken-digits" / f"{split}.jsonl").read_text().splitlines()][:limit]
    manifest = workdir / "clips.jsonl"
    manifest.write_text("".join(json.dumps({"id": c["path"], "path": str((data / "spoken-digits" / c["path"]).resolve())})
                                + "\n" for c in clips))
    glosses = [json.loads(line)["text"] for line in (data / "wordnet" / "train.jsonl").read_text().splitlines()][:limit]
    text = workdir / "glosses.txt"
    text.write_text("\n".join(glosses) + "\n")
    return {"image": data / "digits", "audio": manifest, "text": text}


def inputs_of(modality: str, collection: Path) -> list[str]:
    """What a client sends for each input: the text, or the file as base64."""
    from d2v.server.batch.sources import list_sources

    out = []
    for s in list_sources(collection, modality):
        out.append(s.text if s.text is not None else base64.b64encode(s.path.read_bytes()).decode())
    return out


def run_job(model: Path, collection: Path, out: Path, threads: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "d2v.cli", "embed", "--model", str(model), "--input", str(collection), "--output",
           str(out), "--threads", str(threads), "--no-progress"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    m = re.search(r"(\d+) of (\d+) inputs done in ([\d.]+) s", done.stderr)
    return {"items": int(m.group(1)), "rate": int(m.group(1)) / float(m.group(3)), "wall_rate": int(m.group(1)) / wall,
            "wall": wall}


async def post_all(url: str, model: str, inputs: list[str], per_request: int, in_flight: int) -> float:
    """Every input once, `per_request` per request, `in_flight` requests at a time -> inputs/s.
    The client is the serving benchmark's lean keep-alive one, so it leaves the CPU to the server."""
    requests = iter([Connection.request("/embed", {"model": model, "inputs": inputs[i:i + per_request]})
                     for i in range(0, len(inputs), per_request)])

    async def worker() -> None:
        conn = Connection(url)
        for request in requests:
            status, body = await conn.send(request)
            if status != 200:
                raise RuntimeError(f"the server answered {status}: {body[:200]!r}")
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return len(inputs) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "d2v-bench-serve")
    p.add_argument("--size", choices=["tiny", "small"], default="small")
    p.add_argument("--limit", type=int, default=1000, help="spoken clips and glosses per collection")
    p.add_argument("--backends", nargs="+", default=["torch", "onnx"])
    p.add_argument("--modalities", nargs="+", default=list(MODALITIES))
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the job and of the server")
    args = p.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    ckpts = {m: path for m, path in build_models(args.workdir, args.size).items() if m in args.modalities}
    models = {"torch": ckpts, "onnx": export_models(ckpts, args.workdir) if "onnx" in args.backends else {}}
    inputs = collections(args.data, args.workdir, args.limit)
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start, {args.size} models, "
          f"{args.threads} intra-op thread(s)", flush=True)
    print(f"{'modality':<9}{'backend':<8}{'inputs':>7}{'embed/s':>9}{'(wall)':>8}{'http 1x16/s':>13}"
          f"{'http 16x4/s':>13}{'embed/http':>11}", flush=True)
    for backend in args.backends:
        for m in args.modalities:
            with tempfile.TemporaryDirectory(dir=args.workdir) as out:
                job = run_job(models[backend][m], inputs[m], Path(out) / "job", args.threads)
            requests = inputs_of(m, inputs[m])
            server = d2v_server({m: models[backend][m]}, [], args.threads)
            try:
                single = asyncio.run(post_all(server.url, m, requests, 1, 16))
                batched = asyncio.run(post_all(server.url, m, requests, 16, 4))
            finally:
                server.stop()
            print(f"{m:<9}{backend:<8}{job['items']:>7}{job['rate']:>9.1f}{job['wall_rate']:>8.1f}{single:>13.1f}"
                  f"{batched:>13.1f}{job['rate'] / single:>10.1f}x", flush=True)
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
