"""Connections a hostile or broken client holds open, against a real `d2v serve` over real sockets:
idle (half-open) connections past the usual open-files limit, headers and bodies sent a byte at a time,
oversized headers, clients that disconnect mid-body, more connections than the cap. Normal requests
keep being answered, the slow connections are cut, and the log holds one line per cut, no traceback."""

import select
import socket
import time
from pathlib import Path

import httpx
import pytest
from harness import Server

GUARD = 60.0  # seconds: a hang guard only; every wait below ends on an event long before


def hold(port: int, n: int) -> list[socket.socket]:
    """`n` connections that send nothing."""
    return [socket.create_connection(("127.0.0.1", port), timeout=GUARD) for _ in range(n)]


def closed_by_server(sock: socket.socket) -> bool:
    """Blocks until the server closes `sock` (True), or the guard runs out (False)."""
    sock.settimeout(GUARD)
    try:
        while True:
            if sock.recv(65536) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def dribble(sock: socket.socket, chunk: bytes, pause: float = 0.2) -> bool:
    """Send `chunk` again and again until the server closes the connection (True) or the guard ends."""
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return True
        readable, _, _ = select.select([sock], [], [], pause)
        if readable:
            try:
                if sock.recv(65536) == b"":
                    return True
            except ConnectionResetError:
                return True
    return False


def soft_open_files(pid: int) -> int:
    line = next(ln for ln in Path(f"/proc/{pid}/limits").read_text().splitlines() if ln.startswith("Max open files"))
    return int(line.split()[3])


def wait_for_log(server: Server, text: str) -> str:
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        out = server.output()
        if text in out:
            return out
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in the log:\n{server.output()}")


def embed(url: str) -> httpx.Response:
    return httpx.post(url + "/embed", json={"inputs": ["a small domesticated cat"]}, timeout=GUARD)


@pytest.fixture(scope="module")
def guarded(model_dirs):
    """A server started with a soft limit of 256 open files, a cap of 400 connections, 5 s for headers,
    2 s for bodies, logging at INFO."""
    s = Server(["--model", f"text={model_dirs['text']}", "--limit-concurrency", "400", "--header-timeout-s", "5",
                "--body-timeout-s", "2", "--log-level", "info"], open_files=256)
    yield s
    s.stop()


def test_idle_connections_past_the_file_limit_leave_normal_requests_answered(guarded):
    """Before: with the soft limit at 256, 300 idle connections made every new connection reset."""
    assert soft_open_files(guarded.proc.pid) > 256 + 400  # raised at start, to fit the connection cap
    held = hold(guarded.port, 300)
    try:
        for _ in range(3):
            r = embed(guarded.url)
            assert r.status_code == 200, r.text
        assert all(closed_by_server(s) for s in held)  # and the idle ones are cut
    finally:
        for s in held:
            s.close()
    assert embed(guarded.url).status_code == 200


def test_headers_sent_a_byte_at_a_time_are_cut(guarded):
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=GUARD) as s:
        s.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert dribble(s, b"X")
    assert embed(guarded.url).status_code == 200


def test_a_body_sent_a_byte_at_a_time_is_cut_with_one_log_line(guarded):
    head = (b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{\"inputs\": [\"")
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=GUARD) as s:
        s.sendall(head)
        assert embed(guarded.url).status_code == 200  # others are served meanwhile
        assert dribble(s, b"a")
    out = wait_for_log(guarded, "its body did not arrive within 2 s")
    assert "Traceback" not in out and " ERROR " not in out
    lines = [ln for ln in out.splitlines() if "its body did not arrive" in ln]
    assert len(lines) == 1 and " INFO d2v.serve: POST /embed from 127.0.0.1:" in lines[0]


def test_a_client_that_disconnects_mid_body_is_one_info_line(guarded):
    """Before: a full traceback at ERROR for each."""
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=GUARD) as s:
        s.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"inputs\": [")
    out = wait_for_log(guarded, "ended before its body arrived: it disconnected")
    assert "Traceback" not in out and "Exception in ASGI application" not in out
    assert len([ln for ln in out.splitlines() if "it disconnected" in ln]) == 1


def test_oversized_headers_get_431(guarded):
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=GUARD) as s:
        s.sendall(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):  # the server closes the connection after its answer
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    assert b'"type": "headers_too_large"' in reply


def test_connections_beyond_the_cap_get_503_at_once(model_dirs):
    s = Server(["--model", f"text={model_dirs['text']}", "--limit-concurrency", "20", "--header-timeout-s", "600"])
    try:
        held = hold(s.port, 25)
        r = embed(s.url)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "too_many_connections"
        for c in held:
            c.close()
        deadline = time.monotonic() + GUARD  # the server sees the closes as they arrive
        while (r := embed(s.url)).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert r.status_code == 200, r.text
    finally:
        s.stop()
