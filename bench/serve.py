"""Drive a live `d2v serve` with concurrent clients and print embeddings/s and p50/p99 latency per
modality, for: d2v with PyTorch, d2v with onnxruntime, each with dynamic batching on and with batch
size 1, and a plain per-request PyTorch service (FastAPI, one forward pass per request, as people
write it without d2v) on the same weights and inputs.

    python bench/serve.py                                   # tiny-preset models built in --workdir
    python bench/serve.py --models models --concurrency 1 4 16 64 --seconds 4
    python bench/serve.py --models models --forward-only    # the most batching can gain here
    python bench/serve.py --modalities text --external http://127.0.0.1:7997 --external-model NAME
                                                            # d2v against any OpenAI-compatible server
    python bench/serve.py --modalities audio --scenarios idle busy --abba   # and with one core taken

Every request carries one input (a WordNet gloss, a spoken digit from espeak-ng as 16 kHz WAV, a
scikit-learn digit as PNG), so embeddings/s = requests/s. Models: the checkpoints under --models
(demo models) if given, else models built with random weights (throughput does not depend on the
weights; --size tiny|small), exported to ONNX once and cached in --workdir.

--external URL adds an OpenAI-compatible embeddings server (`POST URL/v1/embeddings`, e.g. Infinity or
TEI) to the table, driven with the same text inputs and sweep; every server is then driven through
/v1/embeddings (d2v and the plain service serve it too), so the comparison is like for like.
--scenarios idle busy measures everything twice: as is, and with a background process burning one
core (a machine where other work takes CPU). --abba runs the servers in order, then in reverse
order, and averages the two passes, so a drift of the shared machine's load cancels in the ratios
of the summary table, which divides every server's rate by --reference's in the same scenario.
"""

import argparse
import asyncio
import base64
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import numpy as np

if TYPE_CHECKING:
    from d2v.server.backends.base import Backend, Task

MODALITIES = ("image", "audio", "text")


# -- models and inputs ---------------------------------------------------------------------------------
def glosses(n: int = 2000) -> list[str]:
    lines = Path("/usr/share/wordnet/data.noun").read_text(errors="replace").splitlines()
    return [ln.split("|", 1)[1].strip() for ln in lines if not ln.startswith(" ") and "|" in ln][:n]


SIZES = {"tiny": None, "small": (384, 6, 6), "base": (768, 12, 12)}  # (embed_dim, heads, depth) over the tiny
# preset's input encoders


def build_models(workdir: Path, size: str = "small", corpus: list[str] | None = None) -> dict[str, Path]:
    """Checkpoints with heads: the tiny preset, or "small" (the tiny preset's input encoders and
    input sizes with a 384-wide, 6-block Transformer); text with a sentencepiece model trained on
    WordNet glosses."""
    import sentencepiece as spm
    import torch

    from d2v.model import HeadConfig, build_encoder, preset
    from d2v.model.checkpoint import CheckpointConfig, save_checkpoint

    out = {}
    tok = workdir / "spm.model"
    if not tok.is_file():
        (workdir / "glosses.txt").write_text("\n".join(corpus or glosses(20000)) + "\n")
        spm.SentencePieceTrainer.train(input=str(workdir / "glosses.txt"), model_prefix=str(workdir / "spm"),
                                       vocab_size=2000, pad_id=1, bos_id=0, eos_id=2, unk_id=3, minloglevel=2)
    for m in MODALITIES:
        path = workdir / f"bench-{size}-{m}"
        if not (path / "config.json").is_file():
            torch.manual_seed(0)
            cfg = preset(m, "tiny").encoder
            if SIZES[size]:
                cfg.embed_dim, cfg.num_heads, cfg.depth = SIZES[size]
            if m == "text":
                cfg.text.vocab_size = spm.SentencePieceProcessor(model_file=str(tok)).get_piece_size()
            head = HeadConfig("first_token" if m == "text" else "mean_pool", [str(i) for i in range(10)],
                              "cls" if m == "text" else "mean")
            save_checkpoint(path, build_encoder(cfg, head).eval(), CheckpointConfig(f"bench-{m}", cfg, head),
                            tokenizer=tok if m == "text" else None)
        out[m] = path
    return out


def export_models(ckpts: dict[str, Path], workdir: Path) -> dict[str, Path]:
    from d2v.export import export_checkpoint

    out = {}
    for m, path in ckpts.items():
        dest = workdir / f"{path.name}-onnx"
        if not (dest / "config.json").is_file():
            print(f"exporting {path} -> {dest}", file=sys.stderr)
            export_checkpoint(path, dest)
        out[m] = dest
    return out


def make_inputs(n: int = 64, modalities: tuple[str, ...] = MODALITIES, sentences: bool = False) -> dict[str, list[str]]:
    """Real inputs of each modality asked for, as request strings (base64 for media); `sentences`:
    audio is 40 spoken glosses of 1-6 s instead of 20 spoken digits (0.4-0.9 s)."""
    out: dict[str, list[str]] = {"text": glosses(n)} if "text" in modalities else {}
    if "image" in modalities:
        out["image"] = digit_images(n)
    if "audio" in modalities:
        if sentences:
            texts = [g.split(";")[0] for g in glosses(400)]
            out["audio"] = spoken([t for t in texts if 2 <= len(t.split()) <= 14][:40])
        else:
            words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
            out["audio"] = spoken([words[i % 10] for i in range(min(n, 20))])
    return out


def digit_images(n: int) -> list[str]:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    images = []
    for x in d.images[:n]:
        buf = io.BytesIO()
        Image.fromarray((x * 255 / 16).astype(np.uint8)).resize((32, 32)).save(buf, "PNG")
        images.append(base64.b64encode(buf.getvalue()).decode())
    return images


def spoken(texts: list[str]) -> list[str]:
    """espeak-ng's 22.05 kHz WAV of each text (speed varied), base64."""
    import soundfile as sf

    audio = []
    for i, text in enumerate(texts):
        wav = subprocess.run(["espeak-ng", "-v", "en", "-s", str(120 + 10 * (i % 8)), "--stdout", text],
                             check=True, capture_output=True).stdout
        data, rate = sf.read(io.BytesIO(wav), dtype="float32")
        buf = io.BytesIO()
        sf.write(buf, data, rate, format="WAV")  # espeak's 22.05 kHz: the server resamples to 16 kHz
        audio.append(base64.b64encode(buf.getvalue()).decode())
    return audio


def load_inputs(path: Path | None, modalities: tuple[str, ...] = MODALITIES,
                sentences: bool = False) -> tuple[dict[str, list[str]], list[str] | None]:
    """The request inputs, and the corpus the text models' tokenizer is trained on: from a file written
    by --save-inputs (for machines without espeak-ng and WordNet, e.g. a lent GPU), else made here."""
    if path is None:
        return make_inputs(modalities=modalities, sentences=sentences), None
    data = json.loads(path.read_text())
    return {m: data[m] for m in MODALITIES}, data["corpus"]


# -- servers -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, cmd: list[str], port: int, env: dict[str, str] | None = None):
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"{cmd} exited:\n{self.log.read()}")
            try:
                if httpx.get(self.url + "/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError(f"{cmd} did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class External:
    """An OpenAI-compatible embeddings server already running: `base` is what an OpenAI client takes as
    its base URL (requests go to BASE/embeddings: `http://HOST:8000/v1` for d2v, the root for
    Infinity), `model` the name sent (default: the first that BASE/models lists)."""

    def __init__(self, base: str, model: str | None = None):
        base = base.rstrip("/")
        self.url, self.prefix = base, urlsplit(base).path
        if model is None:
            listed = httpx.get(base + "/models", timeout=30).json()["data"]
            model = listed[0]["id"]
        self.model = model

    def stop(self) -> None:
        pass


class Burner:
    """A background process burning one core for as long as it lives (the "busy" scenario)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def d2v_server(models: dict[str, Path], extra: list[str], threads: int) -> Proc:
    """`d2v serve` on the models; `threads` 0: its own default. `extra`: more flags, and NAME=VALUE
    environment variables (e.g. OMP_WAIT_POLICY=PASSIVE)."""
    env = dict(x.split("=", 1) for x in extra if re.match(r"^[A-Z][A-Z0-9_]*=", x))
    extra = [x for x in extra if not re.match(r"^[A-Z][A-Z0-9_]*=", x)]
    port = free_port()
    cmd = [sys.executable, "-m", "d2v.cli", "serve", "--port", str(port), "--log-level", "warning",
           "--max-queue", "4096"] + (["--threads", str(threads)] if threads else [])
    for m, path in models.items():
        cmd += ["--model", f"{m}={path}"]
    return Proc(cmd + extra, port, env)


def plain_server(models: dict[str, Path], threads: int) -> Proc:
    port = free_port()
    spec = json.dumps({m: str(p) for m, p in models.items()})
    return Proc([sys.executable, __file__, "--plain-server", spec, "--port", str(port)], port,
                env={"OMP_NUM_THREADS": str(threads)} if threads else {})


def run_plain_server(spec: str, port: int) -> None:
    """The baseline: a FastAPI route that decodes and runs its request's input alone, under
    torch.no_grad(), in FastAPI's thread pool (a plain `def` route). Same weights, same decoding."""
    import torch
    import uvicorn
    from fastapi import FastAPI

    from d2v.model.checkpoint import load_checkpoint
    from d2v.server.config import ServeConfig
    from d2v.server.decode import make_input_decoder

    if os.environ.get("OMP_NUM_THREADS"):  # else PyTorch's default, as a service written without care has
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    # the device and dtype d2v serve picks by default: CUDA in bf16 where there is one, else CPU fp32
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    app = FastAPI()
    loaded = {}
    for m, path in json.loads(spec).items():
        model, _ = load_checkpoint(path, device=device, dtype=dtype)
        config = json.loads((Path(path) / "config.json").read_text())
        limits = ServeConfig()  # the decoding limits d2v serve applies by default
        loaded[m] = (model, make_input_decoder(config, Path(path), limits.max_pixels, limits.max_audio_seconds,
                                               limits.max_tokens))

    @app.get("/models")
    def models() -> dict:
        return {"data": list(loaded)}

    def run(name: str, value: str) -> list[float]:
        model, decoder = loaded[name]
        x = decoder(value, 0).data
        with torch.no_grad():
            t = torch.from_numpy(x)[None].to(device)
            t = t.to(dtype) if t.is_floating_point() else t
            tokens, pad = model.forward_features(t)
            e = torch.nn.functional.normalize(model.pool(tokens, pad, "mean"), dim=-1)
        return e[0].tolist()

    @app.post("/embed")
    def embed(body: dict) -> dict:
        return {"data": [{"index": 0, "embedding": run(body["model"], body["inputs"][0])}]}

    @app.post("/v1/embeddings")
    def openai_embeddings(body: dict) -> dict:
        value = body["input"][0] if isinstance(body["input"], list) else body["input"]
        return {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": run(body["model"], value)}]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- load generation -----------------------------------------------------------------------------------
class Connection:
    """One keep-alive HTTP/1.1 connection sending prebuilt requests: a load generator that costs
    a few hundred microseconds of CPU per request (httpx costs ~5 ms here, on the cores the server
    needs), like wrk or hey, so that the numbers measure the server."""

    def __init__(self, url: str):
        parsed = urlsplit(url)  # http://HOST:PORT[/PREFIX]
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @staticmethod
    def request(path: str, body: dict) -> bytes:
        data = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n")
        return head.encode() + data

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """The response's status and body; reconnects when the server closed the connection."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, length, close = int(head[9:12]), 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def drive(url: str, model: str, inputs: list[str], concurrency: int, seconds: float, path: str = "/embed",
                marker: bytes = b'"embedding"', weights: list[float] | None = None) -> dict[str, float]:
    """Closed loop: `concurrency` connections, each sending its next request when the last one is
    answered, for `seconds` after one warm-up request each. A 200 must carry `marker` (an embedding;
    `/transcribe`: b'"text"'). `weights` (per input, e.g. seconds of audio) add "weighted_rate": their
    sum over the answered requests per second. A `path` ending in "/embeddings" gets OpenAI's body
    (`{"model", "input": [x]}`), any other d2v's (`{"model", "inputs": [x]}`)."""
    key = "input" if path.endswith("/embeddings") else "inputs"
    requests = [Connection.request(path, {"model": model, key: [x]}) for x in inputs]
    conns = [Connection(url) for _ in range(concurrency)]
    latencies: list[float] = []
    errors, weight = 0, 0.0

    async def worker(k: int, stop_at: float, record: bool) -> None:
        nonlocal errors, weight
        i = k
        while True:
            t0 = time.perf_counter()
            try:
                status, body = await conns[k].send(requests[i % len(requests)])
                ok = status == 200 and marker in body
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conns[k].close()
                ok = False
            if record:
                if ok:
                    latencies.append(time.perf_counter() - t0)
                    weight += weights[i % len(requests)] if weights else 0.0
                else:
                    errors += 1
            i += concurrency
            if time.perf_counter() >= stop_at:
                return

    await asyncio.gather(*(worker(k, 0.0, False) for k in range(concurrency)))  # warm-up: one request each
    for c in conns:  # a connection idle while slower warm-ups finished may be past the server's keep-alive
        c.close()
    start = time.perf_counter()
    await asyncio.gather(*(worker(k, start + seconds, True) for k in range(concurrency)))
    elapsed = time.perf_counter() - start
    for c in conns:
        c.close()
    lat = sorted(latencies) or [float("nan")]
    return {"rate": len(latencies) / elapsed, "p50": 1e3 * statistics.median(lat),
            "p99": 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], "errors": errors,
            "weighted_rate": weight / elapsed}


async def drive_engine(path: Path, inputs: list[str], concurrency: int, seconds: float, threads: int,
                       extra: dict) -> dict[str, float]:
    """The engine alone, in this process (no HTTP, no JSON): what batching does to the forward passes."""
    from d2v.server.config import ServeConfig
    from d2v.server.engine import Engine

    engine = Engine(ServeConfig(models=[str(path)], threads=threads, **extra))
    await engine.start()
    w = next(iter(engine.workers.values()))
    done, stop_at = 0, time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < stop_at:
            decoded, _ = await engine.decode(w, [inputs[i % len(inputs)]])
            await engine.embed(w, decoded)
            done, i = done + 1, i + concurrency

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - start
    text = engine.metrics.render().decode()
    await engine.stop()
    batches = float(re.search(r"d2v_batch_size_count\{[^}]*\} (\S+)", text).group(1))
    return {"rate": done / elapsed, "mean_batch": done / max(batches, 1)}


def engine_only(args: argparse.Namespace, ckpts: dict[str, Path], exports: dict[str, Path],
                inputs: dict[str, list[str]]) -> None:
    print(f"{'engine':<10}{'modality':<9}{'conc':>5}{'emb/s':>9}{'batch':>7}", flush=True)
    for name in args.configs:
        if name == "plain":
            continue
        paths = exports if name.startswith("onnx") else ckpts
        extra = {"max_batch_size": 1} if name.endswith("bs1") else {}
        for m in args.modalities:
            for c in args.concurrency:
                r = asyncio.run(drive_engine(paths[m], inputs[m], c, args.seconds, args.threads, extra))
                print(f"{name:<10}{m:<9}{c:>5}{r['rate']:>9.1f}{r['mean_batch']:>7.1f}", flush=True)


def _per_input(backend: "Backend", task: "Task", groups: list[list[np.ndarray]]) -> float:
    """Seconds per input to run `groups` one forward pass each (best of 3, after a warm-up)."""
    for g in groups[:2]:
        backend.run(g, [task] * len(g))
    n, best = sum(len(g) for g in groups), float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for g in groups:
            backend.run(g, [task] * len(g))
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def forward_ceiling(args: argparse.Namespace, ckpts: dict[str, Path], exports: dict[str, Path],
                    inputs: dict[str, list[str]], batch: int = 16) -> None:
    """The backends alone, no server and no queue: every input run one at a time against the same
    inputs sorted by length and run `batch` at a time (what the batcher does with a full queue).
    The ratio is the most any batching server can gain over batch size 1 on this machine."""
    from d2v.server.backends.base import Task, load_backend
    from d2v.server.config import ServeConfig
    from d2v.server.decode import make_input_decoder

    print(f"{'backend':<8}{'modality':<9}{'bs1 ms/input':>13}{f'bs{batch} ms/input':>14}{'ratio':>7}", flush=True)
    for backend in ("torch", "onnx"):
        for m in args.modalities:
            path = (exports if backend == "onnx" else ckpts)[m]
            b = load_backend(str(path), m, backend, "cpu", "auto", args.threads)
            limits = ServeConfig()  # the decoding limits d2v serve applies by default
            decode = make_input_decoder(b.config, Path(path), limits.max_pixels, limits.max_audio_seconds,
                                        limits.max_tokens)
            xs = sorted((decode(x, i).data for i, x in enumerate(inputs[m])), key=np.size)
            task = Task("embed", b.default_pooling)
            chunks = [xs[i:i + batch] for i in range(0, len(xs), batch)]
            one, batched = _per_input(b, task, [[x] for x in xs]), _per_input(b, task, chunks)
            print(f"{backend:<8}{m:<9}{1e3 * one:>13.2f}{1e3 * batched:>14.2f}{one / batched:>7.2f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, help="a directory of checkpoint dirs named *image*, *audio*, *text*")
    p.add_argument("--size", choices=list(SIZES), default="small", help="model size when --models is not given")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "d2v-bench-serve")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--baseline-concurrency", type=int, nargs="+", default=[16],
                   help="the sweep for the batch-size-1 and plain servers")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of every server")
    p.add_argument("--modalities", nargs="+", default=list(MODALITIES))
    p.add_argument("--configs", nargs="*", default=["torch", "onnx", "torch-bs1", "onnx-bs1", "plain"])
    p.add_argument("--engine-only", action="store_true",
                   help="drive the engine in this process instead of a live server (no HTTP)")
    p.add_argument("--forward-only", action="store_true",
                   help="time the backends alone, batch size 1 against sorted batches of 16 (no server)")
    p.add_argument("--d2v-config", action="append", default=[], metavar="NAME=ARGS",
                   help="also run d2v serve (PyTorch) with these extra flags under NAME, e.g. "
                   "'t2=--threads 2 --decode-workers 1' (repeatable)")
    p.add_argument("--external", metavar="BASE_URL",
                   help="also drive this OpenAI-compatible embeddings server (requests go to BASE_URL/embeddings, "
                   "as an OpenAI client's base_url: http://HOST:PORT/v1 for d2v), text only")
    p.add_argument("--external-model", help="the model name sent to --external (default: the first it lists)")
    p.add_argument("--api", choices=["d2v", "openai"], default="d2v",
                   help="the route driving d2v and the plain service: /embed, or /v1/embeddings (default with "
                   "--external)")
    p.add_argument("--scenarios", nargs="+", choices=["idle", "busy"], default=["idle"],
                   help="busy: with a background process burning one core during the measurements")
    p.add_argument("--abba", action="store_true",
                   help="run the servers in order then in reverse order, and print a summary of mean rates and ratios")
    p.add_argument("--reference", default="plain", help="the server the summary divides by")
    p.add_argument("--spoken-sentences", action="store_true",
                   help="audio inputs: 40 spoken WordNet glosses of 1-6 s instead of 20 spoken digits")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--inputs", type=Path, help="read the inputs from a file written by --save-inputs (for a machine "
                   "without espeak-ng and WordNet)")
    p.add_argument("--save-inputs", type=Path, help="write the inputs and the tokenizer corpus to this file and exit")
    p.add_argument("--plain-server", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop servers, burner
    if args.plain_server:
        return run_plain_server(args.plain_server, args.port)

    if args.save_inputs:
        args.save_inputs.write_text(json.dumps({**make_inputs(), "corpus": glosses(20000)}))
        print(f"wrote {args.save_inputs}")
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    inputs, corpus = load_inputs(args.inputs, tuple(args.modalities), args.spoken_sentences)
    if args.models:
        ckpts = {m: next(d for d in sorted(args.models.iterdir()) if m in d.name and (d / "config.json").is_file())
                 for m in args.modalities}
    else:
        ckpts = build_models(args.workdir, args.size, corpus)
    ckpts = {m: ckpts[m] for m in args.modalities}
    exports = export_models(ckpts, args.workdir) if any(c.startswith("onnx") for c in args.configs) else {}
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; models: "
          + ", ".join(f"{m}={p}" for m, p in ckpts.items()), flush=True)

    if args.engine_only:
        return engine_only(args, ckpts, exports, inputs)
    if args.forward_only:
        return forward_ceiling(args, ckpts, exports, inputs)
    servers = {
        "torch": lambda: d2v_server(ckpts, [], args.threads),
        "onnx": lambda: d2v_server(exports, [], args.threads),
        "torch-bs1": lambda: d2v_server(ckpts, ["--max-batch-size", "1"], args.threads),
        "onnx-bs1": lambda: d2v_server(exports, ["--max-batch-size", "1"], args.threads),
        "plain": lambda: plain_server(ckpts, args.threads),
    }
    for spec in args.d2v_config:  # NAME=ARGS: d2v serve (PyTorch) with extra flags
        name, _, extra = spec.partition("=")
        servers[name] = lambda extra=extra: d2v_server(ckpts, extra.split(), args.threads)
    configs = list(args.configs) + [spec.partition("=")[0] for spec in args.d2v_config]
    if args.external:
        servers["external"] = lambda: External(args.external, args.external_model)
        configs.append("external")
    unknown = [c for c in configs if c not in servers]
    if unknown:
        p.error(f"unknown --configs {unknown}; known: {', '.join(servers)}")
    results = run_servers(args, servers, configs, inputs)
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")
    if args.abba or len(args.scenarios) > 1 or args.external:
        summarize(results, args.reference if args.reference in configs else configs[0])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def run_servers(args: argparse.Namespace, servers: dict, configs: list[str], inputs: dict[str, list[str]]) -> list[dict]:
    """Every server (twice with --abba: in order, then reversed) over the modalities and the sweep, in
    each scenario; one row per measurement."""
    openai = args.api == "openai" or bool(args.external)
    results = []
    print(f"{'scenario':<9}{'pass':>5} {'server':<12}{'modality':<9}{'conc':>5}{'emb/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'errors':>7}", flush=True)
    for scenario in args.scenarios:
        burner = Burner() if scenario == "busy" else None
        try:
            order = configs + configs[::-1] if args.abba else configs
            for k, name in enumerate(order):
                server = servers[name]()
                try:
                    for m in args.modalities:
                        if name == "external" and m != "text":
                            continue
                        baseline = name in ("torch-bs1", "onnx-bs1", "plain") and not (args.abba or openai)
                        sweep = args.baseline_concurrency if baseline else args.concurrency
                        model = server.model if name == "external" else m
                        path = getattr(server, "prefix", "") + "/embeddings" if name == "external" else \
                            ("/v1/embeddings" if openai else "/embed")
                        for c in sweep:
                            r = asyncio.run(drive(server.url, model, inputs[m], c, args.seconds, path=path))
                            run = 1 + k // len(configs)
                            results.append({"scenario": scenario, "pass": run, "server": name, "modality": m,
                                            "concurrency": c, **r})
                            print(f"{scenario:<9}{run:>5} {name:<12}{m:<9}{c:>5}{r['rate']:>9.1f}{r['p50']:>9.1f}"
                                  f"{r['p99']:>9.1f}{r['errors']:>7}", flush=True)
                finally:
                    server.stop()
        finally:
            if burner is not None:
                burner.stop()
    return results


def summarize(results: list[dict], reference: str) -> None:
    """Per scenario, modality and concurrency: each server's embeddings/s (mean over the passes), its
    p99 (the worst pass), and its rate over the reference server's, as a markdown table."""
    print(f"\n| scenario | modality | concurrency | server | embeddings/s | p99 ms | over {reference} |")
    print("|---|---|---|---|---|---|---|")
    keys = sorted({(r["scenario"], r["modality"], r["concurrency"]) for r in results},
                  key=lambda k: (k[0] != "idle", k[1], k[2]))
    for scenario, m, c in keys:
        rows = [r for r in results if (r["scenario"], r["modality"], r["concurrency"]) == (scenario, m, c)]
        names = list(dict.fromkeys(r["server"] for r in rows))
        rate = {n: statistics.mean(r["rate"] for r in rows if r["server"] == n) for n in names}
        p99 = {n: max(r["p99"] for r in rows if r["server"] == n) for n in names}
        for n in names:
            ratio = f"{rate[n] / rate[reference]:.2f}x" if rate.get(reference) else "-"
            print(f"| {scenario} | {m} | {c} | {n} | {rate[n]:.1f} | {p99[n]:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
