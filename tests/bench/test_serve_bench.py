"""bench/serve.py --external: the benchmark drives an OpenAI-compatible embeddings server given by its
base URL (here a real `d2v serve` of the demo text model, through /v1/embeddings) and prints it in its
table and summary."""

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def test_external_mode_drives_an_openai_compatible_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen([sys.executable, "-m", "d2v.cli", "serve", "--model", f"words={ROOT / 'models' / 'wordnet-text'}",
                               "--port", str(port), "--threads", "1", "--log-level", "warning"],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        done = subprocess.run([sys.executable, "bench/serve.py", "--models", "models", "--modalities", "text",
                               "--configs", "--external", f"http://127.0.0.1:{port}/v1", "--concurrency", "2",
                               "--seconds", "0.5", "--workdir", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    finally:
        server.terminate()
        server.wait(30)
    assert done.returncode == 0, done.stderr + done.stdout
    row = re.search(r"^idle +1 external +text +2 +(\S+) +\S+ +\S+ +(\d+)$", done.stdout, re.MULTILINE)
    assert row, done.stdout
    assert float(row.group(1)) > 0 and row.group(2) == "0"  # answered, every answer with an embedding
    assert "| idle | text | 2 | external |" in done.stdout  # the summary table
