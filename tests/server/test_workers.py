"""`d2v serve --workers 2`: two real serving processes on one port under a supervisor. Both answer
(each names itself in `x-d2v-worker`), `/metrics` from either counts the requests of both, a killed
worker is replaced, SIGTERM stops every process, and a model that cannot load stops the server."""

import base64
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from harness import Server
from media import digit, image_bytes

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads worker processes from /proc")


def children(pid: int) -> set[int]:
    kids = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids |= {int(k) for k in f.read().split()}
    return kids


def workers_of(pid: int) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    out = set()
    for k in children(pid):
        try:
            with open(f"/proc/{k}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    out.add(k)
        except FileNotFoundError:
            pass
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(check, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def two_workers(model_dirs):
    s = Server(["--workers", "2", "--model", f"digits={model_dirs['image']}", "--max-wait-ms", "1",
                "--drain-seconds", "5"])
    wait_until(lambda: len(workers_of(s.proc.pid)) == 2)
    yield s
    s.stop()


def embed_from_fresh_connections(url: str, n: int) -> list[str]:
    """`n` /embed requests, 8 at a time, each on a new connection; the worker that answered each."""
    body = {"model": "digits", "inputs": [base64.b64encode(image_bytes(digit(3))).decode()]}

    def one(_: int) -> str:
        r = httpx.post(url + "/embed", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.headers["x-d2v-worker"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def embeds_counted(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith('d2v_requests_total{route="/embed",status="200"}'))


def test_two_workers_answer_on_one_port_and_metrics_count_both(two_workers):
    pids = workers_of(two_workers.proc.pid)
    before = embeds_counted(two_workers.url)
    seen: list[str] = []
    for _ in range(20):  # concurrent connections spread over both workers; stop once both answered
        seen += embed_from_fresh_connections(two_workers.url, 16)
        if len(set(seen)) == 2:
            break
    assert {int(w) for w in seen} == pids
    # whichever worker renders /metrics counts both (a request is counted just after its answer is sent)
    wait_until(lambda: embeds_counted(two_workers.url) - before == len(seen), timeout=30)


def test_a_killed_worker_is_replaced(two_workers):
    supervisor = two_workers.proc.pid
    victim, survivor = sorted(workers_of(supervisor))
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(workers_of(supervisor) - {victim}) == 2)
    assert survivor in workers_of(supervisor) and two_workers.proc.poll() is None
    assert httpx.get(two_workers.url + "/ready", timeout=30).status_code == 200
    assert "worker 1" in two_workers.output() or "worker 0" in two_workers.output()
    assert "exited with status -9: restarting it" in two_workers.output()


def test_sigterm_stops_every_worker(two_workers):
    wait_until(lambda: len(workers_of(two_workers.proc.pid)) == 2)
    pids = workers_of(two_workers.proc.pid)
    assert two_workers.stop(signal.SIGTERM) == 0
    assert not any(alive(p) for p in pids)


def test_a_model_that_cannot_load_stops_the_server(tmp_path):
    with pytest.raises(RuntimeError, match=r"exited with 2:[\s\S]*cannot load the models"):
        Server(["--workers", "2", "--model", str(tmp_path)], timeout=120)
