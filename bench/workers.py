"""Scaling of `d2v serve --workers N`: requests/s of one real server process against N on one port.

Each configuration is a real `d2v serve` (the demo image and text models, `--threads 1` per worker
so that N workers use N cores) driven by --concurrency client threads, each posting one real input
per request on a kept-alive connection of its own, for --seconds. Configurations are measured in
ABBA order (1, N, N, 1, ...) and the table gives each one's requests/s and its ratio to 1 worker,
from this one run.

    python bench/workers.py --workers 2 --seconds 10 --rounds 2
"""

import argparse
import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "d2v.cli", "serve", "--port", str(port), "--threads", "1", "--workers", str(workers),
           "--log-level", "warning", "--model", str(ROOT / "models/digits-image"),
           "--model", str(ROOT / "models/wordnet-text")]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # every worker loaded and answering
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                drive(url, 4 * workers, 0.5)  # concurrent connections reach every worker
                if len(drive.workers) >= workers:
                    break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return proc, url


def bodies() -> list[tuple[str, dict]]:
    from PIL import Image
    from sklearn.datasets import load_digits

    out = []
    for x in load_digits().images[:16]:
        buf = io.BytesIO()
        Image.fromarray((x * 255 / 16).astype("uint8")).resize((32, 32)).save(buf, "PNG")
        out.append(("/embed", {"model": "digits-image", "inputs": [base64.b64encode(buf.getvalue()).decode()]}))
    lines = Path("/usr/share/wordnet/data.noun").read_text(errors="replace").splitlines()
    glosses = [ln.split("|", 1)[1].strip() for ln in lines if not ln.startswith(" ") and "|" in ln][:16]
    out += [("/embed", {"model": "wordnet-text", "inputs": [g]}) for g in glosses]
    return out


BODIES: list[tuple[str, dict]] = []


def drive(url: str, concurrency: int, seconds: float) -> float:
    """Requests/s answered 200 by `concurrency` threads over `seconds` (answering workers in drive.workers)."""
    done, workers, stop = [0], set(), time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            i = k
            while time.monotonic() < stop:
                path, body = BODIES[i % len(BODIES)]
                r = c.post(path, json=body)
                if r.status_code == 200:
                    done[0] += 1
                    workers.add(r.headers.get("x-d2v-worker", "1"))
                i += concurrency

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    drive.workers = workers
    return done[0] / (time.monotonic() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    BODIES.extend(bodies())
    servers = {n: start(n) for n in (1, args.workers)}
    rates: dict[int, list[float]] = {1: [], args.workers: []}
    try:
        for _ in range(args.rounds):
            for n in (1, args.workers, args.workers, 1):  # ABBA
                rates[n].append(drive(servers[n][1], args.concurrency, args.seconds))
                print(f"workers={n}: {rates[n][-1]:.1f} requests/s (answered by {len(drive.workers)} processes)",
                      file=sys.stderr)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(60)
    base = sum(rates[1]) / len(rates[1])
    print(f"\n{os.cpu_count()} CPUs, concurrency {args.concurrency}, {args.seconds:g} s x {2 * args.rounds} per "
          "configuration, ABBA\n")
    print("| workers | requests/s | x 1 worker |")
    print("|---:|---:|---:|")
    for n, r in rates.items():
        mean = sum(r) / len(r)
        print(f"| {n} | {mean:.1f} | {mean / base:.2f} |")


if __name__ == "__main__":
    main()
